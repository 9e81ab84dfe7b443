"""Data-stage speed on the embedded model: batched vs one-at-a-time generation, and full builds.

    python benchmarks/data_build.py [--targets beatles harry_potter harmful] [--out benchmarks/results/data_build.json]

Measured in one run, so the ratios hold on a noisy machine:
1. generation tokens/s for the same prompts and settings, one prompt at a time
   (fp32, the Beatles-notebook way) vs batched (fp32, left-padded) vs batched on the
   builder's bf16 generation copy;
2. the wall time of each built-in target's full data build, with per-stage seconds
   and the probe counts from its manifest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from obliviate.data.builder import build_data
from obliviate.data.targets import resolve_target
from obliviate.io import write_json
from obliviate.models.generate import answer_probes, generation_copy
from obliviate.models.loading import load_model


def tokens_per_second(model, tokenizer, rows, batch_size: int, max_new_tokens: int) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    answers = answer_probes(model, tokenizer, rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    n = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)  # +1: the end token
    return n / seconds, n, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", nargs="+", default=["beatles", "harry_potter", "harmful"])
    ap.add_argument("--prompts", type=int, default=64, help="prompts for the batched runs")
    ap.add_argument(
        "--single", type=int, default=12, help="prompts for the one-at-a-time run (a rate, so fewer suffice)"
    )
    ap.add_argument("--out", default="benchmarks/results/data_build.json")
    args = ap.parse_args()
    torch.manual_seed(0)

    lm = load_model(None)
    spec = resolve_target("beatles")
    rows = [{"question": s.format(name=spec.name)} for s in spec.question_seeds]
    rows += [{"question": p.question} for p in spec.probes if p.question]
    rows = rows[: args.prompts]
    gen = {}
    single_rows = rows[: args.single]
    gen["one_at_a_time_fp32"] = tokens_per_second(lm.model, lm.tokenizer, single_rows, 1, 48)
    gen["batched_fp32_same_prompts"] = tokens_per_second(lm.model, lm.tokenizer, single_rows, 64, 48)
    gen["batched_fp32"] = tokens_per_second(lm.model, lm.tokenizer, rows, 64, 48)
    gm = generation_copy(lm.model)
    gen["batched_bf16_copy"] = tokens_per_second(gm, lm.tokenizer, rows, 64, 48)
    del gm
    base = gen["one_at_a_time_fp32"][0]
    generation = {
        k: {
            "tokens_per_s": round(v[0], 1),
            "tokens": v[1],
            "seconds": round(v[2], 1),
            "x_one_at_a_time": round(v[0] / base, 2),
        }
        for k, v in gen.items()
    }

    builds = {}
    for name in args.targets:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = build_data(load_model(None), resolve_target(name), tmp)
            seconds = time.perf_counter() - t0
        builds[name] = {
            "seconds": round(seconds, 1),
            "stages": m["seconds"],
            "counts": m["counts"],
            "held_out_check": m["held_out_check"],
        }
        print(f"{name}: {seconds:.1f} s", flush=True)

    result = {"torch_threads": torch.get_num_threads(), "generation": generation, "builds": builds}
    write_json(args.out, result)
    print("| generation | tokens/s | × one at a time |\n|---|---|---|")
    for k, v in generation.items():
        print(f"| {k} | {v['tokens_per_s']} | {v['x_one_at_a_time']} |")
    print(
        "\n| target | build s | known target probes | target | neighbour | general | forget | alt | retain |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, b in builds.items():
        c = b["counts"]
        print(
            f"| {name} | {b['seconds']} | {c['probes.target_known']} | {c['probes.target']} | "
            f"{c['probes.neighbour']} | "
            f"{c['probes.general']} | {c['forget.jsonl']} | {c['alt.jsonl']} | {c['retain.jsonl']} |"
        )
    print(f"\nWritten to {Path(args.out)}")


if __name__ == "__main__":
    main()
