"""Do the faster precisions train the same model? npo's loss curve in fp32, bf16 autocast and bf16 weights.

    python benchmarks/precision_curves.py [--steps 22] [--out benchmarks/results/precision_curves.json]

The embedded model unlearns 24 fictitious-author QA pairs with `npo` at its defaults (lr 3e-5,
retain term on 40 other pairs) three times from the same start, same seed and same batches:
fp32, bf16 autocast (the engine's default) and bf16 weights with stochastically rounded AdamW
(`--bf16-weights`). Per step it keeps the loss; at the end it scores, in fp32, the mean NLL
of the forget answers and of the retain answers, which is what the unlearning is for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from obliviate.engine.trainer import TrainConfig, train  # noqa: E402
from obliviate.io import read_jsonl, write_json  # noqa: E402
from obliviate.methods import get_method  # noqa: E402
from obliviate.models.loading import load_model  # noqa: E402
from obliviate.models.logprobs import nll  # noqa: E402
from obliviate.models.prompts import encode  # noqa: E402
from training_speed import records  # noqa: E402

RUNS = {"fp32": {"bf16": False}, "bf16_autocast": {}, "bf16_weights": {"bf16_weights": True}}


@torch.no_grad()
def mean_nll(model, tokenizer, rows) -> float:
    return nll(model.float().eval(), encode(tokenizer, rows, 256)).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=22)
    ap.add_argument("--out", default="benchmarks/results/precision_curves.json")
    args = ap.parse_args()
    rows = records()
    forget, retain = rows[:24], rows[24:]
    res: dict = {"command": f"python benchmarks/precision_curves.py --steps {args.steps}", "runs": {}}
    for label, opts in RUNS.items():
        lm = load_model(None)
        start = {
            "forget_nll": mean_nll(lm.model, lm.tokenizer, forget),
            "retain_nll": mean_nll(lm.model, lm.tokenizer, retain),
        }
        method = get_method("npo")
        cfg = TrainConfig(**{**method.train_defaults, "steps": args.steps, "checkpoint_every": 0, **opts})
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "log.jsonl"
            t = time.perf_counter()
            out = train(lm.model, lm.tokenizer, method, {"forget": forget, "retain": retain}, cfg, log, progress=False)
            seconds = time.perf_counter() - t
            curve = [round(r["loss"], 4) for r in read_jsonl(log)]
        res["runs"][label] = {
            "start": start,
            "loss": curve,
            "seconds": round(seconds, 1),
            "forget_nll": mean_nll(out.model, lm.tokenizer, forget),
            "retain_nll": mean_nll(out.model, lm.tokenizer, retain),
        }
        print(label, {k: v for k, v in res["runs"][label].items() if k != "loss"}, curve[::5], flush=True)
    base = res["runs"]["fp32"]["loss"]
    res["max_abs_loss_gap_vs_fp32"] = {
        k: max(abs(a - b) for a, b in zip(r["loss"], base)) for k, r in res["runs"].items()
    }
    print(res["max_abs_loss_gap_vs_fp32"])
    write_json(args.out, res)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
