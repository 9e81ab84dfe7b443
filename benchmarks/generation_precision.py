"""Does answering probes through the bf16 generation copy change the measured numbers?

    python benchmarks/generation_precision.py runs/beatles

Answers every probe of a finished run twice with its unlearned model, once with the
model's fp32 weights and once through `generation_copy` (bf16), and prints the leak
rate and QA accuracies both ways plus the share of identical answers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from obliviate.data.targets import TargetSpec
from obliviate.io import read_json, read_jsonl
from obliviate.leak import probe_hit
from obliviate.models.generate import answer_probes, generation_copy
from obliviate.models.loading import load_model


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/beatles")
    probes = read_jsonl(run / "data" / "probes.jsonl")
    spec = TargetSpec(**read_json(run / "data" / "manifest.json")["target"])
    lm = load_model(str(run / "model"))
    answers = {}
    for name, model in (("fp32", lm.model), ("bf16 copy", generation_copy(lm.model))):
        t0 = time.perf_counter()
        answers[name] = answer_probes(model, lm.tokenizer, probes, max_new_tokens=24)
        seconds = time.perf_counter() - t0
        hits = [probe_hit(p, a, spec.terms, spec.kind == "behaviour") for p, a in zip(probes, answers[name])]

        def rate(keep, hits=hits):
            sel = [h for p, h in zip(probes, hits) if keep(p)]
            return sum(sel) / len(sel)

        print(
            f"{name:9s}  leak {rate(lambda p: p.get('known')):.3f}  "
            f"general {rate(lambda p: p['kind'] == 'general'):.3f}  "
            f"neighbour {rate(lambda p: p['kind'] == 'neighbour'):.3f}  ({seconds:.0f} s)"
        )
    same = sum(a == b for a, b in zip(*answers.values())) / len(probes)
    print(f"identical answers: {same:.3f} of {len(probes)} probes")


if __name__ == "__main__":
    main()
