"""Does training in two processes train the model one process would? ga and npo with the same global batch.

    python benchmarks/processes.py [--steps 20] [--lr 1e-4] [--out benchmarks/results/processes.json]

A random Llama (4 layers, hidden 128, untied head, the embedded SmolLM2 tokenizer) unlearns 24
fictitious-author QA pairs (npo's retain term: 40 others) from the same start, in fp32, with a global batch
of 8 records per stream, four ways: one process with batch 8 (the run the others are compared with), the same
with seed 1 (how far two runs differ by the order of their batches alone), one process with batch 4
accumulated twice (the same records in every step, only each half's token average weighted equally), and two
gloo processes (torchrun) with batch 4 each, every process on its own shard. The two processes draw other
records in each step than the one process does, so their weights differ by sampling, like the seed-1 run's.

Per run: the mean logged loss of the last 5 steps (under two processes the mean over both), the largest
weight difference from the one-process batch-8 run, the L2 norm of that difference over the L2 norm of the
one-process run's change from the start, and the seconds of training (`train` alone: not the imports,
loading, nor torchrun starting its processes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from obliviate.engine.processes import processes  # noqa: E402
from obliviate.engine.trainer import TrainConfig, train  # noqa: E402
from obliviate.io import read_jsonl, write_json  # noqa: E402
from obliviate.methods import get_method  # noqa: E402
from obliviate.models.loading import convert_gguf, embedded_gguf_path, load_model  # noqa: E402
from obliviate.report.format import markdown_table, num  # noqa: E402
from training_speed import records  # noqa: E402

METHODS = ("ga", "npo")
GLOBAL_BATCH = 8
# label: (processes, TrainConfig fields); the first is the one every run is compared with.
RUNS = {
    "one": (1, {"batch_size": 8}),
    "one_seed1": (1, {"batch_size": 8, "seed": 1}),
    "one_accum2": (1, {"batch_size": 4, "grad_accum": 2}),
    "two": (2, {"batch_size": 4}),
}


def random_model(folder: Path) -> None:
    """A random 4-layer Llama with the embedded model's tokenizer, saved to `folder`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(convert_gguf(embedded_gguf_path()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def run(folder: Path, method_name: str, label: str, steps: int, lr: float) -> None:
    """Train one run into folder/method/label: its log, and (main process) its weights and seconds."""
    lm = load_model(str(folder / "start"))
    method = get_method(method_name)
    rows = records()
    data = {"forget": rows[:24], "retain": rows[24:64]}
    cfg = TrainConfig(steps=steps, lr=lr, bf16=False, checkpoint_every=0, max_length=128, **RUNS[label][1])
    out = folder / method_name / label
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    result = train(lm.model, lm.tokenizer, method, {k: data[k] for k in method.batches}, cfg, out / "log.jsonl", False)
    seconds = time.perf_counter() - t
    if processes().is_main_process:
        result.model.save_pretrained(out / "model")
        write_json(out / "seconds.json", seconds)


def two_processes(folder: Path, steps: int, lr: float) -> None:
    """Every method's "two" run, in two gloo processes started by torchrun (this file with --worker)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__]
    subprocess.run([*command, "--worker", str(folder), "--steps", str(steps), "--lr", str(lr)], env=env, check=True)


def gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The L2 norm of a - b over every weight."""
    return sum(((a[k] - b[k]).double() ** 2).sum().item() for k in b) ** 0.5


def measure(folder: Path, method_name: str, steps: int) -> list[dict]:
    """One row per run of `method_name`: its settings, final-5-step mean loss, weight gaps and seconds."""
    weights = {label: load_file(folder / method_name / label / "model" / "model.safetensors") for label in RUNS}
    start, base = load_file(folder / "start" / "model.safetensors"), weights["one"]
    rows = []
    for label, (procs, options) in RUNS.items():
        log = read_jsonl(folder / method_name / label / "log.jsonl")
        assert len(log) == steps, f"{method_name} {label} stopped at step {len(log)}"
        rows.append(
            {
                "method": method_name,
                "run": label,
                "processes": procs,
                "batch_size": options["batch_size"],
                "grad_accum": options.get("grad_accum", 1),
                "seed": options.get("seed", 0),
                "final5_loss": sum(r["loss"] for r in log[-5:]) / 5,
                "max_weight_gap": max((weights[label][k] - base[k]).abs().max().item() for k in base),
                "relative_weight_gap": gap(weights[label], base) / gap(base, start),
                "seconds": json.loads((folder / method_name / label / "seconds.json").read_text()),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    columns = [
        "method",
        "processes",
        "batch x accum",
        "global batch",
        "seed",
        "final-5-step mean loss",
        "max abs weight gap vs 1 process, batch 8",
        "weight gap / its change from start (L2)",
        "train s",
    ]
    cells = [
        [
            r["method"],
            r["processes"],
            f"{r['batch_size']} x {r['grad_accum']}",
            GLOBAL_BATCH,
            r["seed"],
            num(r["final5_loss"], 4),
            f"{r['max_weight_gap']:.1e}",
            num(r["relative_weight_gap"], 2),
            num(r["seconds"], 1),
        ]
        for r in rows
    ]
    return markdown_table(columns, cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of every run")
    ap.add_argument("--out", default="benchmarks/results/processes.json")
    ap.add_argument("--worker", help="(internal) run the two-process runs in this folder, under torchrun")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        for method_name in METHODS:
            run(Path(args.worker), method_name, "two", args.steps, args.lr)
        processes().wait_for_everyone()
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        random_model(folder / "start")
        two_processes(folder, args.steps, args.lr)
        for method_name in METHODS:
            for label, (procs, _) in RUNS.items():
                if procs == 1:
                    run(folder, method_name, label, args.steps, args.lr)
        rows = [row for method_name in METHODS for row in measure(folder, method_name, args.steps)]
    text = table(rows)
    print(text)
    command = f"python benchmarks/processes.py --steps {args.steps} --lr {args.lr}"
    write_json(args.out, {"command": command, "rows": rows, "table": text})
    print(f"Written to {args.out}")


if __name__ == "__main__":
    main()
