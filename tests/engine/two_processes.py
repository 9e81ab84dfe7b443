"""Run by tests/engine/test_processes.py in each of 2 processes (torchrun): training on a tiny model.

argv: model directory, output directory, steps, mode.
- "fresh" or "resume": NPO with a checkpoint every 2 steps (resumed from it with "resume"). Each process writes
  OUT/rank<k>.json with the records it drew and the keys of its reference log-probs; the main process saves the
  model to OUT/model.
- "same-batch": ga, then npo, with the records and TrainConfig fields of OUT/job.json ({"data": {"forget": [...],
  "retain": [...]}, "config": {...}}) and a checkpoint halfway. Each process writes OUT/<method>/norms<k>.json, the
  norm of the gradient of every optimizer step (`GradientNorms`); the main process saves the model to
  OUT/<method>/model, beside the log and the checkpoint.
"""

import json
import sys
from pathlib import Path

import torch

from obliviate.engine import TrainConfig, train
from obliviate.engine.processes import processes
from obliviate.methods import get_method
from obliviate.models.loading import load_model

NORMS: list[float] = []


class GradientNorms(torch.optim.AdamW):
    """AdamW that appends to NORMS the norm of the gradient it steps with: under several processes the
    gradient averaged over them, under accumulation the sum of the micro-batches' shares."""

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        NORMS.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return super().step(closure)


def npo_with_checkpoints(model_dir: str, out: Path, steps: int, resume: bool) -> None:
    procs = processes()
    lm = load_model(model_dir)
    forget = [{"question": f"Who is person number {i}?", "answer": f"Person {i} is a drummer."} for i in range(8)]
    retain = [{"question": f"What is {i} plus {i}?", "answer": f"{2 * i}."} for i in range(8)]
    method = get_method("npo")
    drawn: list[str] = []
    collate = method.collate

    def logged(tokenizer, name, records, max_length):
        drawn.extend(f"{name}:{r['question']}" for r in records)
        return collate(tokenizer, name, records, max_length)

    method.collate = logged
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, checkpoint_every=2, max_length=48, bf16=False)
    result = train(
        lm.model,
        lm.tokenizer,
        method,
        {"forget": forget, "retain": retain},
        cfg,
        out / "train_log.jsonl",
        progress=False,
        checkpoint_dir=out / "checkpoint",
        resume=resume,
    )
    mine = {"drawn": drawn, "resumed_from": result.resumed_from, "world": procs.num_processes}
    (out / f"rank{procs.process_index}.json").write_text(json.dumps(mine))
    if procs.is_main_process:
        result.model.save_pretrained(out / "model")


def same_batch(model_dir: str, out: Path, steps: int) -> None:
    procs = processes()
    job = json.loads((out / "job.json").read_text())
    torch.optim.AdamW = GradientNorms  # the engine builds its optimizer from torch.optim.AdamW
    for name in ("ga", "npo"):
        NORMS.clear()
        lm = load_model(model_dir)
        method = get_method(name)
        folder = out / name
        folder.mkdir(exist_ok=True)
        result = train(
            lm.model,
            lm.tokenizer,
            method,
            {k: job["data"][k] for k in method.batches},
            TrainConfig(steps=steps, **job["config"]),
            folder / "train_log.jsonl",
            progress=False,
            checkpoint_dir=folder / "checkpoint",
        )
        (folder / f"norms{procs.process_index}.json").write_text(json.dumps(NORMS))
        if procs.is_main_process:
            result.model.save_pretrained(folder / "model")


if __name__ == "__main__":
    model_dir, out, steps, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "same-batch":
        same_batch(model_dir, out, steps)
    else:
        npo_with_checkpoints(model_dir, out, steps, resume=mode == "resume")
    processes().wait_for_everyone()
