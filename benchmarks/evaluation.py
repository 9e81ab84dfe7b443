"""Full-evaluation time on the embedded model (the goal: within 60 s on a 2-core CPU).

    python benchmarks/evaluation.py [--run runs/beatles] [--out benchmarks/results/evaluation.json]
    python benchmarks/evaluation.py --repeat 3   # the embedded model's evaluation only, 3 times: the spread
                                                 # -> benchmarks/results/evaluation_repeat.json

Uses a run directory written by `obliviate forget` (`make demo` writes runs/beatles) and
times, in one process, end to end (loading, hashing, evaluating, writing metrics.json):
1. the embedded model itself on the run's data, answering every probe afresh (no answers
   reused from the data stage), every attack group that applies to a base model;
2. the run's unlearned model against that base evaluation, every attack group (relearning
   included), as `obliviate eval RUN/model --data RUN/data --against embedded` does after
   the base is evaluated;
3. the embedded model again with each lever off: the attacks in a second process
   (EvalConfig.fork, evaluation/worker.py), and, through InferenceOptions (models/inference.py),
   the greedy loop that drops finished rows (greedy_loop), the shared prefix and unpadded
   prompt passes (share_prefix) and the grouped attention products for CPU inference
   (cpu_attention); and freed memory kept in the process
   (obliviate/malloc.py: glibc's own settings instead); and again with generation batches of 128 prompts
   instead of 256, which is no lever: it shows how much the bf16 greedy answers move with the
   batch composition alone, the yardstick for how much the levers change them.
Per-stage seconds come from metrics.json, so the cost of each part is visible; with the second
process, the attack stages' seconds are the child's, spent alongside the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from unittest import mock

import obliviate.malloc as malloc
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.evaluate import evaluate
from obliviate.io import write_json
from obliviate.models.inference import InferenceOptions
from obliviate.report.metrics import write_metrics


def timed(label: str, out: Path, **kwargs) -> tuple[dict, dict]:
    """Evaluate and write OUT/metrics.json and metrics.md, as `obliviate eval` does; the row of timings."""
    t0 = time.perf_counter()
    doc = evaluate(**kwargs, log=lambda msg: None)
    write_metrics(out, doc)
    seconds = time.perf_counter() - t0
    row = {
        "seconds": round(seconds, 1),
        "within_120_s": seconds <= 120,
        "within_60_s": seconds <= 60,
        "stages": doc["seconds"],
        "leak_rate": doc["metrics"]["leak_rate"],
        "n_known": doc["metrics"]["n_known_target_probes"],
        "attack_worst_leak_rate": doc["metrics"].get("attack_worst_leak_rate"),
    }
    print(f"{label}: {seconds:.1f} s {row['stages']}", flush=True)
    return doc, row


def answers_moved(a: dict, b: dict) -> dict:
    """How many probe answers and probe hits differ between two evaluations of the same model."""
    pairs = [(x, y) for x, y in zip(a["items"]["probes"], b["items"]["probes"]) if x["answer"] is not None]
    return {
        "probes": len(pairs),
        "answers": sum(x["answer"] != y["answer"] for x, y in pairs),
        "hits": sum(x["hit"] != y["hit"] for x, y in pairs),
        "leak_rate": [a["metrics"]["leak_rate"], b["metrics"]["leak_rate"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--run", default="runs/beatles", help="a run directory from `obliviate forget` (default: runs/beatles)"
    )
    ap.add_argument("--out", default="benchmarks/results/evaluation.json")
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        metavar="N",
        help="only time the embedded model's evaluation, N times in this process "
        "(written to evaluation_repeat.json beside --out)",
    )
    args = ap.parse_args()
    if args.repeat < 0:
        ap.error(f"--repeat takes how many times to run, 0 or more; got {args.repeat}.")
    run = Path(args.run)
    data = EvalData.from_dir(run / "data")
    if args.repeat:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [
                timed(f"embedded model, run {i + 1}", model="embedded", data=data, out=Path(tmp) / str(i))[1]
                for i in range(args.repeat)
            ]
        out = Path(args.out).with_name("evaluation_repeat.json")
        write_json(
            out,
            {
                "command": f"python benchmarks/evaluation.py --run {args.run} --repeat {args.repeat}",
                "data_sha256": data.sha256,
                "seconds": [r["seconds"] for r in rows],
                "rows": rows,
            },
        )
        print(f"Written to {out}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base, base_row = timed("embedded model", model="embedded", data=data, out=Path(tmp) / "base")
        _, model_row = timed(
            "unlearned model", model=str(run / "model"), data=data, against=base, out=Path(tmp) / "model"
        )
        one, one_row = timed(
            "embedded model, one process",
            model="embedded",
            data=data,
            out=Path(tmp) / "one",
            config=EvalConfig(fork=False),
        )
        _, model_one_row = timed(
            "unlearned model, one process",
            model=str(run / "model"),
            data=data,
            against=base,
            out=Path(tmp) / "model-one",
            config=EvalConfig(fork=False),
        )
        hf_loop, hf_loop_row = timed(
            "embedded model, model.generate's loop",
            model="embedded",
            data=data,
            out=Path(tmp) / "hf",
            inference=InferenceOptions(greedy_loop=False),
        )
        no_prefix, no_prefix_row = timed(
            "embedded model, no shared prefix",
            model="embedded",
            data=data,
            out=Path(tmp) / "np",
            inference=InferenceOptions(share_prefix=False),
        )
        sdpa, sdpa_row = timed(
            "embedded model, SDPA attention",
            model="embedded",
            data=data,
            out=Path(tmp) / "sdpa",
            inference=InferenceOptions(cpu_attention=False),
        )
        with mock.patch.object(malloc, "_libc", lambda: None):
            glibc, glibc_row = timed(
                "embedded model, glibc's allocator defaults", model="embedded", data=data, out=Path(tmp) / "glibc"
            )
        batch128, batch128_row = timed(
            "embedded model, batches of 128",
            model="embedded",
            data=data,
            out=Path(tmp) / "b128",
            config=dataclasses.replace(EvalConfig(), batch_size=128),
        )
    moved = {
        "one_process": answers_moved(base, one),
        "greedy_loop_off": answers_moved(base, hf_loop),
        "shared_prefix_off": answers_moved(base, no_prefix),
        "cpu_attention_off": answers_moved(base, sdpa),
        "allocator_kept_off": answers_moved(base, glibc),
        "batches_of_128": answers_moved(base, batch128),
    }
    print("answers moved", moved)
    result = {
        "command": f"python benchmarks/evaluation.py --run {args.run}",
        "run": str(run),
        "data_sha256": data.sha256,
        "embedded_model": base_row,
        "unlearned_model": model_row,
        "embedded_model_one_process": one_row,
        "unlearned_model_one_process": model_one_row,
        "embedded_model_generate_loop": hf_loop_row,
        "embedded_model_no_shared_prefix": no_prefix_row,
        "embedded_model_sdpa_attention": sdpa_row,
        "embedded_model_glibc_allocator": glibc_row,
        "embedded_model_batches_of_128": batch128_row,
        "lever_second_process": one_row["seconds"] / base_row["seconds"],
        "lever_second_process_unlearned": model_one_row["seconds"] / model_row["seconds"],
        "lever_greedy_loop": hf_loop_row["seconds"] / base_row["seconds"],
        "lever_shared_prefix": no_prefix_row["seconds"] / base_row["seconds"],
        "lever_cpu_attention": sdpa_row["seconds"] / base_row["seconds"],
        "lever_allocator_keeps_freed_memory": glibc_row["seconds"] / base_row["seconds"],
        "answers_moved_against_the_embedded_model_row": moved,
    }
    write_json(args.out, result)
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
