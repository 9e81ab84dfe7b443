"""Full-evaluation time on the embedded model (issue 5's target: within 120 s on a 2-core CPU).

    python benchmarks/evaluation.py [--run runs/beatles] [--out benchmarks/results/evaluation.json]

Uses a run directory written by `obliviate forget` (`make demo` writes runs/beatles) and
times, in one process, end to end (loading, hashing, evaluating, writing metrics.json):
1. the embedded model itself on the run's data, answering every probe afresh (no answers
   reused from the data stage), every attack group that applies to a base model;
2. the run's unlearned model against that base evaluation, every attack group (relearning
   included), as `obliviate eval RUN/model --data RUN/data --against embedded` does after
   the base is evaluated.
Per-stage seconds come from metrics.json, so the cost of each part is visible.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from obliviate.evaluation.evaluate import EvalData, evaluate
from obliviate.io import write_json


def timed(label: str, **kwargs) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    doc = evaluate(**kwargs, log=lambda msg: None)
    seconds = time.perf_counter() - t0
    row = {"seconds": round(seconds, 1), "within_120_s": seconds <= 120, "stages": doc["seconds"],
           "leak_rate": doc["metrics"]["leak_rate"], "n_known": doc["metrics"]["n_known_target_probes"],
           "attack_worst_leak_rate": doc["metrics"].get("attack_worst_leak_rate")}
    print(f"{label}: {seconds:.1f} s {row['stages']}", flush=True)
    return doc, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/beatles", help="a run directory from `obliviate forget` (default: runs/beatles)")
    ap.add_argument("--out", default="benchmarks/results/evaluation.json")
    args = ap.parse_args()
    run = Path(args.run)
    data = EvalData.from_dir(run / "data")
    with tempfile.TemporaryDirectory() as tmp:
        base, base_row = timed("embedded model", model="embedded", data=data, out=Path(tmp) / "base")
        _, model_row = timed("unlearned model", model=str(run / "model"), data=data, against=base, out=Path(tmp) / "model")
    result = {"command": f"python benchmarks/evaluation.py --run {args.run}", "run": str(run),
              "data_sha256": data.sha256, "embedded_model": base_row, "unlearned_model": model_row}
    write_json(args.out, result)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
