"""The one training loop: feeds {"forget": ..., "retain": ...} batches to a method's loss.

Everything that is not the loss lives here: the optimizer, accelerate (devices,
bf16 autocast, gradient accumulation), logging, and the divergence guard.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from tqdm.auto import tqdm

from obliviate.methods.base import Method
from obliviate.models.prompts import encode


@dataclass
class TrainConfig:
    steps: int = field(default=40, metadata={"help": "optimizer steps"})
    lr: float = field(default=2e-5, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=4, metadata={"help": "examples per sub-batch (forget, retain, ...) per step"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    max_length: int = field(default=160, metadata={"help": "tokens per example; longer examples are cut"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast (faster on modern CPUs and GPUs; weights stay fp32)"})
    seed: int = field(default=0, metadata={"help": "seed for batch order"})
    snapshot_every: int = field(default=10, metadata={"help": "steps between in-memory snapshots used by the divergence guard"})


@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    last_logs: dict[str, float]
    diverged_at: int | None = None  # step whose loss was not finite; weights restored to the last snapshot
    restored_step: int | None = None


def _cycle(records: list[dict], rng: random.Random):
    while True:
        order = list(records)
        rng.shuffle(order)
        yield from order


def train(
    model,
    tokenizer,
    method: Method,
    data: dict[str, list[dict]],
    cfg: TrainConfig,
    log_path: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` in place with `method` on `data` (one record list per sub-batch name)."""
    data = method.prepare(data)
    missing = [name for name in method.batches if not data.get(name)]
    if missing:
        raise ValueError(f"method {method.name!r} needs non-empty {missing} data")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    # accelerate keeps one process-wide state; reset it (not the distributed part) so that
    # successive runs in one process may use different precision or accumulation settings.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision="bf16" if cfg.bf16 else "no", gradient_accumulation_steps=cfg.grad_accum
    )
    ref = None
    if method.needs_ref_model:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ref is not None:
        ref = ref.to(accelerator.device)
    streams = {name: _cycle(data[name], rng) for name in method.batches}

    log_file = open(log_path, "a", encoding="utf-8") if log_path else None
    snapshot, snapshot_step = _snapshot(model), 0
    result = TrainResult(steps_done=0, seconds=0.0, last_logs={})
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"unlearning ({method.name})", disable=not progress, leave=False)
    try:
        for step in range(1, cfg.steps + 1):
            for _ in range(cfg.grad_accum):
                batch = {
                    name: {k: v.to(accelerator.device) for k, v in encode(
                        tokenizer, [next(stream) for _ in range(cfg.batch_size)], cfg.max_length).items()}
                    for name, stream in streams.items()
                }
                with accelerator.accumulate(model), accelerator.autocast():
                    out = method.loss(model, batch, ref)
                    if not torch.isfinite(out.loss):
                        break
                    accelerator.backward(out.loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
            if not torch.isfinite(out.loss) or not all(math.isfinite(v) for v in out.logs.values()):
                _restore(model, snapshot)
                result.diverged_at, result.restored_step = step, snapshot_step
                break
            result.steps_done, result.last_logs = step, {"loss": out.loss.item(), **out.logs}
            if step % cfg.snapshot_every == 0:
                snapshot, snapshot_step = _snapshot(model), step
            if log_file:
                log_file.write(json.dumps({"step": step, **result.last_logs, "seconds": round(time.perf_counter() - start, 2)}) + "\n")
                log_file.flush()
            bar.set_postfix({k: f"{v:.3g}" for k, v in result.last_logs.items()})
            bar.update(1)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _restore(model, snapshot: dict[str, torch.Tensor]) -> None:
    model.load_state_dict(snapshot)
