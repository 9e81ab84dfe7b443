"""Run by tests/engine/test_processes.py in each of 2 processes (accelerate launch): NPO on a tiny model.

argv: model directory, output directory, steps, "resume" or "fresh". Each process writes OUT/rank<k>.json with the
records it drew and the keys of its reference log-probs; the main process saves the model to OUT/model.
"""

import json
import sys
from pathlib import Path

import torch

from obliviate.engine import TrainConfig, train
from obliviate.engine.processes import processes
from obliviate.methods import get_method
from obliviate.models.loading import load_model

model_dir, out, steps, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
out.mkdir(parents=True, exist_ok=True)
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
    resume=mode == "resume",
)
mine = {"drawn": drawn, "resumed_from": result.resumed_from, "world": procs.num_processes}
(out / f"rank{procs.process_index}.json").write_text(json.dumps(mine))
if procs.is_main_process:
    result.model.save_pretrained(out / "model")
procs.wait_for_everyone()
