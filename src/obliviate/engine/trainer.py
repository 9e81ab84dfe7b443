"""The one training loop: feeds {"forget": ..., "retain": ...} batches to a method's loss.

Everything that is not the loss lives here: the optimizer, accelerate (devices,
bf16 autocast, gradient accumulation), LoRA through peft and the reference model,
the L2-to-base and dropout regularizers, checkpoints and resume, early stop on a
validation split of the forget data, logging, and the divergence guard.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType, gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from obliviate import malloc
from obliviate.engine.optim import BF16AdamW
from obliviate.engine.processes import processes, shard
from obliviate.errors import Stopped, UserError
from obliviate.io import atomic_dir, restore_replaced, write_text
from obliviate.methods.base import FineTune, Method
from obliviate.methods.retain_ft import RetainFT
from obliviate.models.attention import set_attention
from obliviate.models.families import find_family
from obliviate.models.logprobs import nll, sequence_logprob
from obliviate.models.prompts import encode
from obliviate.records import record_key


@dataclass
class TrainConfig:
    steps: int = field(default=40, metadata={"help": "optimizer steps"})
    lr: float = field(default=2e-5, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=4, metadata={"help": "examples per sub-batch (forget, retain, ...) per step"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches accumulated per optimizer step"})
    max_length: int = field(default=160, metadata={"help": "tokens per example; longer examples are cut"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    bf16: bool = field(
        default=True, metadata={"help": "bf16 autocast (faster on modern CPUs and GPUs; weights stay fp32)"}
    )
    bf16_weights: bool = field(
        default=False,
        metadata={
            "help": (
                "hold weights, gradients and AdamW moments in bf16 while training, with stochastically rounded "
                "updates (engine/optim.py): about half the memory of mixed precision; the model is returned in its "
                "own precision"
            )
        },
    )
    low_memory: bool = field(
        default=False,
        metadata={
            "help": (
                "trade speed for memory: activation (gradient) checkpointing keeps only each layer's input and runs "
                "the layer again in the backward pass (Chen et al. 2016), and freed blocks above 64 KB go back to the "
                "system at once instead of staying in glibc's heap"
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "seed for batch order, dropout and the validation split"})
    snapshot_every: int = field(
        default=10,
        metadata={
            "help": (
                "steps between snapshots of the trained weights used by the divergence guard (in memory; in a "
                "temporary file with bf16_weights)"
            )
        },
    )
    l2: float = field(
        default=0.0,
        metadata={
            "help": (
                "weight of the L2 penalty sum((theta - theta_start)^2) over trained parameters, pulling the "
                "model back toward where it started (the unlearning-project seed's regularization); 0 disables it"
            )
        },
    )
    dropout: float = field(
        default=0.0, metadata={"help": "dropout probability in attention (and LoRA) while training; 0 disables it"}
    )
    lora: bool = field(
        default=False,
        metadata={
            "help": (
                "train a LoRA adapter (peft) instead of all weights; the reference model is the adapter switched off"
            )
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = lora_alpha / lora_r)"})
    lora_targets: str = field(
        default="auto",
        metadata={
            "help": (
                "modules that get adapters: 'auto' (the attention and MLP projections of the model's family, "
                "models/families.py; every linear layer for a family obliviate does not know), 'all-linear', or "
                "comma-separated names (q_proj,v_proj)"
            )
        },
    )
    keep_adapter: bool = field(
        default=False, metadata={"help": "save the LoRA adapter alone instead of merging it into the weights"}
    )
    checkpoint_every: int | None = field(
        default=None,
        metadata={"help": "steps between checkpoints written for --resume (0: none; unset: one, halfway)"},
    )
    stop_forget_nll_gain: float | None = field(
        default=None,
        metadata={
            "help": (
                "early stop once the mean NLL of held-back forget answers (a validation split, never the "
                "held-out probes) has risen this many nats per token above its start; unset: run all steps"
            )
        },
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "share of forget questions held back for early stop (only when it is on)"}
    )
    eval_every: int = field(default=5, metadata={"help": "steps between validation measurements for early stop"})
    idk: float = field(
        default=0.0,
        metadata={
            "help": (
                "weight of an \"I don't know\" term added to any method's loss: the NLL of a plain answer that "
                "declines (the data's negation answers; refusals for a behaviour target) to the forget questions, "
                'so that forgotten facts give way to "I don\'t know" rather than an invention (the TOFU IDK '
                "target, Maini et al. 2024, arXiv:2401.06121); 0 disables it"
            )
        },
    )
    attention: str = field(
        default="auto",
        metadata={
            "help": (
                "attention implementation while training: 'auto' (eager on a CPU, where PyTorch's fused attention "
                "is slow in its backward pass for short sequences and gives the same values; the model's own "
                "elsewhere), 'model' (the model's own), or a transformers name such as 'eager' or 'sdpa'"
            )
        },
    )


# TrainConfig fields that must be above zero, and those that may also be zero.
_POSITIVE = ("steps", "lr", "batch_size", "grad_accum", "max_length", "max_grad_norm", "snapshot_every", "eval_every")
_NOT_NEGATIVE = ("l2", "idk", "checkpoint_every", "lora_r", "lora_alpha", "stop_forget_nll_gain")


def check_train_config(cfg: TrainConfig) -> None:
    """Raise UserError for a setting no run can use: a number that is not finite (nan, inf), not above zero
    where a zero or less means nothing (steps, lr, ...), negative where it must not be, or a probability
    outside [0, 1)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        flag = "--" + f.name.replace("_", "-")
        if not math.isfinite(value):
            raise UserError(f"The training setting {f.name} ({flag}) must be a finite number, got {value}.")
        if f.name in _POSITIVE and not value > 0:
            raise UserError(f"The training setting {f.name} ({flag}) must be positive, got {value}.")
        if f.name in _NOT_NEGATIVE and value < 0:
            raise UserError(f"The training setting {f.name} ({flag}) must be zero or more, got {value}.")
    for name in ("dropout", "val_fraction"):
        if not 0 <= getattr(cfg, name) < 1:
            raise UserError(f"The training setting {name} must be in [0, 1), got {getattr(cfg, name)}.")


@dataclass
class TrainResult:
    steps_done: int
    seconds: float
    last_logs: dict[str, float]
    diverged_at: int | None = None  # step whose loss was not finite; weights restored to the last snapshot
    restored_step: int | None = None
    stopped_early_at: int | None = None  # step at which the validation forget NLL reached its target
    resumed_from: int | None = None  # checkpoint step the run continued from
    ref_seconds: float = 0.0  # time spent computing the reference log-probs before the first step
    validation: list[dict] = field(default_factory=list)
    model: Any = field(default=None, repr=False)  # the trained model: the input, or a peft model with keep_adapter
    # Under FSDP or ZeRO-3 each process holds a shard of the weights: the full state dict, gathered by
    # every process and kept by the main one, is what must be saved (None otherwise: save the model).
    full_state: dict | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """Everything but the model and its state, for train_summary.json."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "full_state")}


class AdapterOff:
    """The reference model under LoRA: the same network with its adapter switched off."""

    def __init__(self, model):
        self.model = model

    def __call__(self, **kwargs):
        with self.model.disable_adapter():
            return self.model(**kwargs)

    def parameters(self):
        return (p for n, p in self.model.named_parameters() if "lora_" not in n)


# Alternative answers that decline, in order of preference, for TrainConfig.idk.
IDK_KINDS = ("negation", "refusal")


def idk_records(alt: list[dict]) -> list[dict]:
    """The alternative answers that decline (the first of IDK_KINDS the data has); UserError if none."""
    for kind in IDK_KINDS:
        rows = [r for r in alt if r.get("kind") == kind]
        if rows:
            return rows
    raise UserError(
        'The "I don\'t know" term needs negation or refusal answers in alt.jsonl, and this data has none; '
        "rebuild the data with those alternative kinds, or drop --idk."
    )


class _Stream:
    """Endless seeded shuffles of one record list; its position is saved in checkpoints.

    A record's optional integer `weight` (default 1) is how many times it appears in each pass:
    the data stage weights the neighbour retain records this way, so that every method's retain
    term sees them more often than generic prose.
    """

    def __init__(self, records: list[dict], seed: str):
        self.records, self.seed, self.epoch, self.pos = records, seed, 0, 0
        self._pass = [i for i, r in enumerate(records) for _ in range(max(1, int(r.get("weight", 1))))]
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(self._pass)
        random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[int]:
        """The indices of the next `n` records."""
        out = []
        for _ in range(n):
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state(self) -> list[int]:
        return [self.epoch, self.pos]

    def load(self, state: list[int]) -> None:
        self.epoch, self.pos = state
        self._order = self._shuffle()


def validation_split(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, val): whole questions (every sample of one question) go to one side."""
    keys = sorted({record_key(r) for r in records})
    random.Random(seed).shuffle(keys)
    n_val = min(max(2, round(len(keys) * fraction)), max(len(keys) - 1, 0))
    val_keys = set(keys[:n_val])
    return [r for r in records if record_key(r) not in val_keys], [r for r in records if record_key(r) in val_keys]


# A checkpoint is the folder CHECKPOINT_DIR/latest, replaced whole at each checkpoint (io.atomic_dir), of
# three files: the trained weights (safetensors), every plain value (JSON), and only what is neither, the
# optimizer state and RNG states (torch.save, read back with weights_only).
CHECKPOINT_NAME = "latest"
CHECKPOINT_FORMAT = 1  # state.json's "format": a checkpoint of another is not resumed
_WEIGHTS, _STATE, _TENSORS = "trainable.safetensors", "state.json", "tensors.pt"


def has_checkpoint(checkpoint_dir: str | Path) -> bool:
    """Whether `checkpoint_dir` (as passed to `train`) holds a checkpoint that `resume=True` continues from."""
    return (Path(checkpoint_dir) / CHECKPOINT_NAME / _STATE).is_file()


def train(
    model,
    tokenizer,
    method: Method,
    data: dict[str, list[dict]],
    cfg: TrainConfig,
    log_path: str | Path | None = None,
    progress: bool = True,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    on_step: Callable[[dict], None] | None = None,
    stop: Callable[[], bool] | None = None,
    alone: bool = False,
) -> TrainResult:
    """Train `model` with `method` on `data` (one record list per stream name).

    Full fine-tuning changes `model` in place. With `cfg.lora` the adapter is merged
    into `model` at the end, unless `cfg.keep_adapter`, in which case `result.model` is
    the peft model. With `checkpoint_dir`, a checkpoint is written every `cfg.checkpoint_every` steps
    into the folder `checkpoint_dir`/latest (`has_checkpoint`), and `resume=True` continues from it: the
    final weights equal those of an uninterrupted run. Raises ValueError for an edit method, a missing
    stream or no trainable parameter, UserError for a checkpoint of other settings or a damaged one.

    `on_step` gets each step's log row (as train_log.jsonl's, with "steps": the total) when the
    step is done. `stop` is asked after each step but the last; when it returns True a checkpoint
    is written (with `checkpoint_dir`) and `Stopped` is raised, so `resume=True` continues there.

    Launched as several processes (engine.processes), every process must call `train` alike: each
    trains on its own shard of every stream (its reference log-probs too), gradients are averaged,
    and the log and checkpoints are written by the main process alone. `alone=True` trains in this
    process only, unsharded, as the attacks of an evaluation that runs in the main process do.

    Freed memory stays in the process while it trains (`obliviate.malloc`), which spares every
    step the page faults of fresh mappings. Not with `cfg.bf16_weights`, whose point is memory:
    blocks kept for reuse would add to its peak (docs/PERFORMANCE.md), nor where CUDA trains. With
    `cfg.low_memory`, large blocks go back to the system as soon as they are freed.
    """
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    # glibc's policy concerns host memory, which a model trained on a GPU barely touches.
    on_gpu = torch.cuda.is_available()
    with malloc.policy("release" if cfg.low_memory else "default" if cfg.bf16_weights or on_gpu else "keep"):
        run = _Run(model, tokenizer, method, cfg, log_path, ckpt, alone)
        run.setup(data)
        run.resume(resume)
        run.baseline()
        run.loop(progress, on_step, stop)
        return run.teardown()


def fine_tune(model, tokenizer, spec: FineTune, cfg: TrainConfig):
    """A copy of `model` trained by `train` on `spec.records` with plain NLL (retain_ft's loss): `cfg`'s
    precision, sequence length, clipping, LoRA and dropout, but `spec`'s steps, learning rate, batch size
    and seed, and no accumulation, L2, early stop, checkpoints or log. Returned frozen, in eval mode, with
    any adapter merged; `model` is left as it was."""
    cfg = dataclasses.replace(
        cfg,
        steps=spec.steps,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=spec.seed,
        grad_accum=1,
        l2=0.0,
        keep_adapter=False,
        checkpoint_every=0,
        stop_forget_nll_gain=None,
    )
    result = train(copy.deepcopy(model), tokenizer, RetainFT(), {"retain": spec.records}, cfg, progress=False)
    return result.model.requires_grad_(False)


def training_attention(setting: str, device: torch.device) -> str | None:
    """The attention implementation to train with (None: the model's own), from `TrainConfig.attention`.

    "auto" picks eager attention on a CPU: for short sequences PyTorch's fused attention is slow in
    its backward pass there, and the plain one gives the same values. GPUs keep the model's own.
    """
    if setting == "auto":
        return "eager" if device.type == "cpu" else None
    return None if setting == "model" else setting


class _Run:
    """One training run, as its phases: `setup`, `resume`, `baseline`, then per step `step`, `guard`,
    `record` and `checkpoint` (in `loop`), and `teardown`. Holds what the phases share."""

    def __init__(self, model, tokenizer, method: Method, cfg: TrainConfig, log_path, ckpt: Path | None, alone: bool):
        self.model, self.tokenizer, self.method, self.cfg = model, tokenizer, method, cfg
        self.alone = alone
        self.log_path, self.ckpt = log_path, ckpt
        self.result = TrainResult(steps_done=0, seconds=0.0, last_logs={})
        self.val: list[dict] = []  # held-back forget records for early stop
        self.val_start: float | None = None  # their NLL under the starting weights
        self.ref = None
        self.ref_table: dict[str, dict[int, dict[str, float]]] = {}  # precomputed reference log-probs
        self.log_file = self.bar = self.snapshot = None
        self.idk_stream: _Stream | None = None  # declining answers, with TrainConfig.idk
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, once resumed or written

    # -- setup ---------------------------------------------------------------------------------------

    def setup(self, data: dict[str, list[dict]]) -> None:
        """Data, the models the method asks for, accelerate, the model in its training form with its
        reference, the method's own setup, the optimizer and the streams, in that order."""
        cfg, method = self.cfg, self.method
        declining = idk_records(data.get("alt", [])) if cfg.idk else []  # before the method narrows "alt"
        data = self._data(data)
        # Before accelerate is set up for this run: each fine-tune is a run of its own.
        tuned = {spec.name: fine_tune(self.model, self.tokenizer, spec, cfg) for spec in method.fine_tunes(data)}
        torch.manual_seed(cfg.seed)
        # accelerate keeps one process-wide state; reset it (not the distributed part) so that
        # successive runs in one process may use different precision or accumulation settings.
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
        processes()  # joins the process group of a multi-process launch before accelerate looks for one
        self.accelerator = Accelerator(
            mixed_precision="bf16" if cfg.bf16 and not cfg.bf16_weights else "no",
            gradient_accumulation_steps=cfg.grad_accum,
        )
        acc = self.accelerator
        if cfg.lora and not cfg.keep_adapter and not self.alone and sharded_weights(acc):
            raise UserError(
                "A LoRA adapter cannot be merged into weights sharded by FSDP or ZeRO-3; pass --keep-adapter to save "
                "the adapter alone, or train with DDP or ZeRO-2 (configs/accelerate/)."
            )
        self.rank, self.world = (0, 1) if self.alone else (acc.process_index, acc.num_processes)
        self.main = self.alone or acc.is_main_process
        self._training_form()
        method.setup(self.model, self.tokenizer, data, self.ref, tuned)
        self._optimizer()
        # Each process its own shard of every stream; the seeds are shared, the records are not.
        self.streams = {
            name: _Stream(shard(data[name], self.rank, self.world, name), f"{cfg.seed}-{name}")
            for name in method.batches
        }
        declining = shard(declining, self.rank, self.world, "declining") if declining else []
        self.idk_stream = _Stream(declining, f"{cfg.seed}-idk") if declining else None

    def _data(self, data: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """The streams the method trains on: the validation split held back, then the method's `prepare`."""
        method, cfg = self.method, self.cfg
        if not method.trains:
            raise ValueError(f"method {method.name!r} edits the model once and has no training loop; call its edit()")
        if cfg.stop_forget_nll_gain is not None and data.get("forget"):
            train_forget, self.val = validation_split(data["forget"], cfg.val_fraction, cfg.seed)
            data = {**data, "forget": train_forget}
        data = method.prepare(data)
        missing = [name for name in method.batches if not data.get(name)]
        if missing:
            raise ValueError(f"method {method.name!r} needs non-empty {missing} data")
        return data

    def _training_form(self) -> None:
        """Precision, dropout, attention, activation checkpointing and LoRA for training; the reference
        model (the adapter switched off, a frozen copy, or none when its log-probs are precomputed)."""
        cfg, method, model = self.cfg, self.method, self.model
        self.dtype = model.dtype
        # The method's choice of trained parameters and peft's freezing are undone at the end.
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        if cfg.bf16_weights:
            model.to(torch.bfloat16)
        self.restore_dropout = _set_dropout(model, cfg.dropout)
        self.restore_attention = set_attention(model, training_attention(cfg.attention, self.accelerator.device))
        self.base_model = model
        if cfg.low_memory:  # before LoRA wraps the model; non-reentrant, so frozen inputs are fine
            _checkpointing(model, True)
        # Reference log-probs computed once, before the first step, for the records the run will draw:
        # no reference copy in memory and no reference pass per step.
        self.precompute = method.needs_ref_model and bool(method.ref_logprob_subs)
        if cfg.lora:
            model = _add_lora(model, cfg)
            self.ref = AdapterOff(model) if method.needs_ref_model else None
        elif method.needs_ref_model and not self.precompute:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        model.to(self.accelerator.device)
        if isinstance(self.ref, torch.nn.Module):
            self.ref.to(self.accelerator.device)
        self.model = model

    def _optimizer(self) -> None:
        """The trained parameters (those the method selects) and their optimizer, prepared by accelerate."""
        cfg, method = self.cfg, self.method
        for name, p in self.model.named_parameters():
            if p.requires_grad and not method.trainable(name):
                p.requires_grad_(False)
        self.model.train()
        self.named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ValueError(f"method {method.name!r} left no parameter to train")
        self.params = [p for _, p in self.named]
        self.start_weights = [p.detach().clone() for p in self.params] if cfg.l2 else None
        if any(p.dtype == torch.bfloat16 for p in self.params):  # bf16_weights, or a model loaded in bf16
            optimizer = BF16AdamW(self.params, lr=cfg.lr, weight_decay=0.0, seed=cfg.seed)
        else:
            # The fused kernel updates all parameters in one pass instead of a loop of small ops per
            # tensor; it exists for floating-point tensors on CPUs and CUDA devices.
            fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in self.params)
            optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0, fused=fused or None)
        if self.alone:  # no process group: the model stays unwrapped
            self.optimizer = self.accelerator.prepare_optimizer(optimizer)
        else:
            self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)

    # -- resume and baseline -------------------------------------------------------------------------

    def resume(self, wanted: bool) -> None:
        """With `wanted` and a checkpoint: continue from it (trained weights, optimizer, stream positions,
        RNG, logs, reference log-probs; the log file cut back to its step). Otherwise start a fresh log."""
        ckpt, result = self.ckpt, self.result
        if wanted and ckpt is not None:
            if self.main:  # a kill between atomic_dir's two renames left the last checkpoint aside
                restore_replaced(ckpt)
            if self.world > 1:
                self.accelerator.wait_for_everyone()
        if not (wanted and ckpt is not None and has_checkpoint(ckpt.parent)):
            if self.log_path and self.main:
                Path(self.log_path).unlink(missing_ok=True)
            return
        state = _load_checkpoint(ckpt)
        written_by = len(state["ranks"])
        if written_by != self.world:
            raise UserError(
                f"The checkpoint in {ckpt.parent} was written by {written_by} training processes; resume "
                f"with as many (this run has {self.world}), or pass --overwrite to start again."
            )
        own = state["ranks"][self.rank]
        if set(state["trainable"]) != {n for n, _ in self.named}:
            raise UserError(
                f"The checkpoint in {ckpt.parent} was written with other training settings (LoRA, method "
                "or trained layers); resume with the same flags, or pass --overwrite to start again."
            )
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        for name, s in own["streams"].items():
            self.streams[name].load(s)
        if self.idk_stream is not None and own.get("idk_stream") is not None:
            self.idk_stream.load(own["idk_stream"])
        torch.set_rng_state(own["torch_rng"])
        result.steps_done, result.last_logs, result.validation = state["step"], state["last_logs"], state["validation"]
        result.resumed_from, self.val_start = state["step"], state["val_start"]
        self.checkpoint_step = state["step"]
        self.ref_table = own.get("ref_logprobs") or {}
        if self.precompute and not self.ref_table:
            raise UserError(
                f"The checkpoint in {ckpt.parent} holds no reference log-probs; pass --overwrite to start again."
            )
        if self.main:
            _truncate_log(self.log_path, state["step"])

    def baseline(self) -> None:
        """What later steps compare with, under the starting weights (unless resumed): the validation
        NLL at step 0 and the reference log-probs of every record the run will draw."""
        if self.val and self.val_start is None:
            self.val_start = self._measure_val(0)
        if self.precompute and not self.ref_table:
            t0 = time.perf_counter()
            self.ref_table = _reference_logprobs(
                self.model, self.tokenizer, self.method, self.streams, self.cfg, self.accelerator
            )
            self.result.ref_seconds = time.perf_counter() - t0

    def _measure_val(self, step: int) -> float:
        value = _validation_nll(self.model, self.tokenizer, self.val, self.cfg, self.accelerator)
        self.result.validation.append({"step": step, "forget_nll": round(value, 4)})
        return value

    # -- the loop ------------------------------------------------------------------------------------

    def loop(
        self, progress: bool, on_step: Callable[[dict], None] | None = None, stop: Callable[[], bool] | None = None
    ) -> None:
        """Steps up to `cfg.steps`, ending early at a divergence, an early stop or a `stop` request (which
        checkpoints and raises Stopped); the log file, progress bar and snapshot are closed however it ends."""
        cfg, result = self.cfg, self.result
        self.log_file = open(self.log_path, "a", encoding="utf-8") if self.log_path and self.main else None
        self.snapshot = _Snapshot(self.named, on_disk=cfg.bf16_weights and not cfg.lora)
        self.snapshot_step = result.steps_done
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=cfg.steps,
            initial=result.steps_done,
            desc=f"unlearning ({self.method.name})",
            disable=not (progress and self.main),
            leave=False,
        )
        try:
            for step in range(result.steps_done + 1, cfg.steps + 1):
                logs, finite = self.step()
                if self.guard(step, logs, finite):
                    break
                row = self.record(step, logs)
                self.checkpoint(step)
                if on_step is not None:
                    on_step({**row, "steps": cfg.steps})
                if result.stopped_early_at:
                    break
                if stop is not None and step < cfg.steps and stop():
                    self.checkpoint(step, force=True)
                    raise Stopped(f"Stopped at step {step} of {cfg.steps}.")
        finally:
            self.bar.close()
            self.snapshot.close()
            if self.log_file:
                self.log_file.close()

    def step(self) -> tuple[dict[str, float], bool]:
        """One optimizer step over `cfg.grad_accum` micro-batches. Stops at the first non-finite loss,
        before its backward pass. Returns the step's logs ("loss" and the method's terms) and whether every
        loss was finite: the logs are the mean over the micro-batches of every process, the loss whose gradient
        the step took (the stopping micro-batch's own, in this process, after a non-finite loss)."""
        cfg, accelerator = self.cfg, self.accelerator
        sums: dict[str, float] = {}
        for _ in range(cfg.grad_accum):
            batch = self._batch()
            with accelerator.accumulate(self.model):
                with accelerator.autocast():
                    out = self.method.loss(self.model, batch, self.ref)
                    loss = out.loss
                    if self.idk_stream is not None:
                        idk = nll(self.model, self._idk_batch())
                        out.logs["idk_nll"] = float(idk.detach())
                        loss = loss + cfg.idk * idk
                    if self.start_weights is not None:
                        l2 = sum(((p - p0) ** 2).sum() for p, p0 in zip(self.params, self.start_weights))
                        out.logs["l2"] = float(l2.detach())
                        loss = loss + cfg.l2 * l2
                logs = {"loss": loss.item(), **out.logs}
                if not self._everywhere(math.isfinite(logs["loss"])):  # all processes stop, or none
                    return logs, False
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value / cfg.grad_accum
                # Backward outside autocast: its casts were already made in the forward pass.
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
        return self._mean_everywhere(sums), True

    def _everywhere(self, flag: bool) -> bool:
        """Whether `flag` holds in every training process (a collective call when there are several)."""
        if self.world == 1:
            return flag
        return bool(
            self.accelerator.reduce(torch.tensor([float(flag)], device=self.accelerator.device), "sum") == self.world
        )

    def _mean_everywhere(self, values: dict[str, float]) -> dict[str, float]:
        """`values` averaged over the training processes (a collective call when there are several). Every
        process logs the same keys in the same order: the method's configuration decides them, not the data."""
        if self.world == 1:
            return values
        local = torch.tensor(list(values.values()), dtype=torch.float64, device=self.accelerator.device)
        return dict(zip(values, self.accelerator.reduce(local, "mean").tolist()))

    def _batch(self) -> dict[str, dict[str, torch.Tensor]]:
        """The next micro-batch: `cfg.batch_size` records of every stream, collated by the method, with
        their precomputed reference log-probs, on the device."""
        cfg, method, device = self.cfg, self.method, self.accelerator.device
        batch = {}
        for name, stream in self.streams.items():
            idx = stream.take(cfg.batch_size)
            for sub, enc in method.collate(
                self.tokenizer, name, [stream.records[i] for i in idx], cfg.max_length
            ).items():
                if sub in method.ref_logprob_subs and self.ref_table:
                    enc["ref_logprob"] = torch.tensor([self.ref_table[name][i][sub] for i in idx])
                batch[sub] = {k: v.to(device) for k, v in enc.items()}
        return batch

    def _idk_batch(self) -> dict[str, torch.Tensor]:
        """The next `cfg.batch_size` declining answers to forget questions, encoded, on the device."""
        stream = self.idk_stream
        enc = encode(self.tokenizer, [stream.records[i] for i in stream.take(self.cfg.batch_size)], self.cfg.max_length)
        return {k: v.to(self.accelerator.device) for k, v in enc.items()}

    def guard(self, step: int, logs: dict[str, float], finite: bool) -> bool:
        """The divergence guard. After a non-finite loss or logged term: restore the last snapshot and
        return True (the run ends with the snapshot's weights). Otherwise take a snapshot every
        `cfg.snapshot_every` steps and return False. Every process decides alike: `finite` was agreed on,
        and the logs of a finite step are the same in every process."""
        result = self.result
        if not (finite and all(math.isfinite(v) for v in logs.values())):
            self.snapshot.restore(self.named)
            self.optimizer.zero_grad()
            result.diverged_at, result.restored_step = step, self.snapshot_step
            result.steps_done = self.snapshot_step
            if self.main and self.ckpt is not None and (self.checkpoint_step or 0) > self.snapshot_step:
                shutil.rmtree(self.ckpt, ignore_errors=True)  # written on the way to the divergence: not resumed
            return True
        if step % self.cfg.snapshot_every == 0:
            self.snapshot.take(self.named)
            self.snapshot_step = step
        return False

    def record(self, step: int, logs: dict[str, float]) -> dict:
        """The step's logs into the result, the validation measurement when due (and the early stop it
        may call), a line of the log file and the progress bar; returns the step's row."""
        cfg, result = self.cfg, self.result
        result.steps_done, result.last_logs = step, logs
        row = {"step": step, **result.last_logs}
        if self.val and (step % cfg.eval_every == 0 or step == cfg.steps):
            gain = self._measure_val(step) - self.val_start
            row["val_forget_nll_gain"] = round(gain, 4)
            if gain >= cfg.stop_forget_nll_gain:
                result.stopped_early_at = step
        if self.log_file:
            self.log_file.write(json.dumps({**row, "seconds": round(time.perf_counter() - self.start, 2)}) + "\n")
            self.log_file.flush()
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"})
        self.bar.update(1)
        return row

    def checkpoint(self, step: int, force: bool = False) -> None:
        """Every `cfg.checkpoint_every` steps before the last (or now, with `force`), write what `resume` reads
        (`_save_checkpoint`): the shared weights and optimizer once, and each process's own part (its streams'
        positions, RNG and reference log-probs) under "ranks". Written by the main process alone."""
        cfg, ckpt = self.cfg, self.ckpt
        every = cfg.checkpoint_every if cfg.checkpoint_every is not None else max(1, cfg.steps // 2)
        due = every and not step % every and step < cfg.steps
        if ckpt is None or not (due or force):
            return
        own = {
            "ref_logprobs": self.ref_table,
            "streams": {name: s.state() for name, s in self.streams.items()},
            "idk_stream": self.idk_stream.state() if self.idk_stream is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        ranks = [own] if self.world == 1 else gather_object([own])
        if not self.main:
            return
        state = {
            "ranks": ranks,
            "step": step,
            "trainable": {n: p.detach() for n, p in self.named},
            "optimizer": self.optimizer.state_dict(),
            "last_logs": self.result.last_logs,
            "validation": self.result.validation,
            "val_start": self.val_start,
        }
        _save_checkpoint(ckpt, state)
        self.checkpoint_step = step

    # -- teardown ------------------------------------------------------------------------------------

    def teardown(self) -> TrainResult:
        """The model back in its own form: accelerate's wrapper off, dropout and attention restored,
        activation checkpointing off, the adapter merged (unless kept), its precision and which of its
        parameters require gradients, eval mode."""
        cfg = self.cfg
        if not self.alone and sharded_weights(self.accelerator):
            # A collective: every process takes part, the main one gets the whole state dict.
            self.result.full_state = self.accelerator.get_state_dict(self.model)
        model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        self.restore_dropout()
        self.restore_attention()
        if cfg.low_memory:
            _checkpointing(self.base_model, False)
        self.optimizer = None
        # Drop accelerate's references too, so the moments are freed before the cast back.
        self.accelerator.free_memory()
        if cfg.lora and not cfg.keep_adapter:
            model = model.merge_and_unload()
        if cfg.bf16_weights:
            model.to(self.dtype)
        if not (cfg.lora and cfg.keep_adapter):
            for name, p in model.named_parameters():
                p.requires_grad_(self.requires_grad.get(name, p.requires_grad))
        model.eval()
        self.result.model = model
        self.result.seconds = time.perf_counter() - self.start
        return self.result


def sharded_weights(accelerator) -> bool:
    """Whether each process holds only a shard of the weights (FSDP, DeepSpeed ZeRO-3), so that saving the model
    needs its state dict gathered first."""
    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return kind == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3


def lora_targets(model, setting: str) -> str | list[str]:
    """peft's `target_modules` for `TrainConfig.lora_targets`: 'auto' is the family's projections (every linear
    layer when the family is unknown), 'all-linear' passes through, anything else is a comma-separated list."""
    if setting == "auto":
        family = find_family(model)
        return list(family.lora_targets) if family else "all-linear"
    return setting if setting == "all-linear" else [t.strip() for t in setting.split(",")]


def _add_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, cfg.lora_targets)
    config = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    # peft widens adapters to fp32 by default; with bf16 weights they stay bf16 like the rest (their
    # updates are stochastically rounded too), so no layer's activations are kept in both precisions.
    return get_peft_model(model, config, autocast_adapter_dtype=not cfg.bf16_weights)


def _checkpointing(model, on: bool) -> None:
    """Switch activation checkpointing on (non-reentrant) or off; transformers 5 renamed it from gradient
    checkpointing."""
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def _set_dropout(model, p: float):
    """Set attention dropout (and any nn.Dropout) to `p`; returns a function that undoes it."""
    if not p:
        return lambda: None
    saved = []
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            saved.append((module, "p", module.p))
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            saved.append((module, "attention_dropout", module.attention_dropout))
            module.attention_dropout = p

    def restore():
        for module, attr, value in saved:
            setattr(module, attr, value)

    return restore


@torch.no_grad()
def _validation_nll(model, tokenizer, records: list[dict], cfg: TrainConfig, accelerator) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(records), 8):
            chunk = records[i : i + 8]
            enc = {k: v.to(accelerator.device) for k, v in encode(tokenizer, chunk, cfg.max_length).items()}
            with accelerator.autocast():
                value = nll(model, enc).item()
            n = int((enc["labels"][:, 1:] != -100).sum())
            total, count = total + value * n, count + n
    finally:
        model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def _reference_logprobs(
    model, tokenizer, method: Method, streams: dict[str, _Stream], cfg: TrainConfig, accelerator
) -> dict[str, dict[int, dict[str, float]]]:
    """{stream: {record index: {sub-batch: summed answer log-prob}}} under the starting weights, for
    every record the run will draw (the streams are replayed on copies), in length-sorted batches of
    the training batch size, since larger batches would raise the run's peak memory."""
    was_training = model.training
    model.eval()
    table: dict[str, dict[int, dict[str, float]]] = {}
    try:
        for name, stream in streams.items():
            replay = _Stream(stream.records, stream.seed)
            replay.load(stream.state())
            drawn = sorted(
                set(replay.take(cfg.batch_size * cfg.grad_accum * cfg.steps)),
                key=lambda i: len(json.dumps(stream.records[i], sort_keys=True)),
            )
            for start in range(0, len(drawn), cfg.batch_size):
                idx = drawn[start : start + cfg.batch_size]
                subs = method.collate(tokenizer, name, [stream.records[i] for i in idx], cfg.max_length)
                for sub, enc in subs.items():
                    if sub not in method.ref_logprob_subs:
                        continue
                    with accelerator.autocast():
                        logp, _ = sequence_logprob(model, {k: v.to(accelerator.device) for k, v in enc.items()})
                    for i, value in zip(idx, logp.tolist()):
                        table.setdefault(name, {}).setdefault(i, {})[sub] = value
    finally:
        model.train(was_training)
    return table


class _Snapshot:
    """The trained weights at one step, for the divergence guard: held in memory, or in a temporary
    file when memory is what the run saves (`bf16_weights`)."""

    def __init__(self, named, on_disk: bool):
        self.path = None
        if on_disk:
            fd, name = tempfile.mkstemp(prefix="obliviate-snapshot-", suffix=".pt")
            os.close(fd)
            self.path = Path(name)
        self.take(named)

    def take(self, named) -> None:
        if self.path is None:
            self.weights = [p.detach().clone() for _, p in named]
        else:
            torch.save({n: p.detach() for n, p in named}, self.path)

    @torch.no_grad()
    def restore(self, named) -> None:
        if self.path is None:
            saved = self.weights
        else:
            state = torch.load(self.path, weights_only=True)
            saved = [state[n] for n, _ in named]
        for (_, p), w in zip(named, saved):
            p.copy_(w)

    def close(self) -> None:
        self.weights = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _save_checkpoint(folder: Path, state: dict) -> None:
    """Write `state` (as `_Run.checkpoint` builds it) as the checkpoint `folder`, replaced whole (atomic_dir): a
    kill at any moment leaves the previous checkpoint or this one. The weights go to trainable.safetensors,
    every plain value to state.json, and only the optimizer state and each process's RNG state to tensors.pt.
    Raises UserError when the disk is full or the folder cannot be written, leaving no temporary."""
    plain = {
        "format": CHECKPOINT_FORMAT,
        **{key: state[key] for key in ("step", "last_logs", "validation", "val_start")},
        "trainable": list(state["trainable"]),
        "ranks": [{key: own[key] for key in ("streams", "idk_stream", "ref_logprobs")} for own in state["ranks"]],
    }
    # safetensors writes contiguous tensors that share no memory: copies on the CPU.
    weights = {name: t.to("cpu", copy=True).contiguous() for name, t in state["trainable"].items()}
    tensors = {"optimizer": state["optimizer"], "torch_rng": [own["torch_rng"] for own in state["ranks"]]}
    try:
        with atomic_dir(folder) as tmp:
            save_file(weights, tmp / _WEIGHTS)
            torch.save(tensors, tmp / _TENSORS)
            (tmp / _STATE).write_text(json.dumps(plain, ensure_ascii=False) + "\n", encoding="utf-8")
    except (OSError, RuntimeError, SafetensorError) as e:  # torch reports a full disk as a RuntimeError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"Could not write the checkpoint {folder} ({reason}); free some disk space, or pass "
            "--checkpoint-every 0 to train without checkpoints."
        ) from None


def _load_checkpoint(folder: Path) -> dict:
    """The state `_save_checkpoint` wrote, as `_Run.checkpoint` built it, read as plain data only: a file in
    a run folder may come from someone else, and unpickling anything more than tensors and plain values
    (torch.load's `weights_only`) could run code. Raises UserError for a folder that is not a whole
    checkpoint of this format: a file missing, damaged, or holding more than tensors and plain values."""
    again = f"delete {folder.parent} to train from the start, or pass --overwrite"
    missing = [name for name in (_STATE, _WEIGHTS, _TENSORS) if not (folder / name).is_file()]
    if missing:
        raise UserError(f"The checkpoint {folder} has no {' or '.join(missing)} and was not loaded; {again}.")
    try:
        plain = json.loads((folder / _STATE).read_text(encoding="utf-8"))
        if not isinstance(plain, dict) or plain.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"The checkpoint {folder} is not an obliviate checkpoint of this version; {again}.")
        weights = load_file(folder / _WEIGHTS)
        tensors = torch.load(folder / _TENSORS, weights_only=True)
        if set(weights) != set(plain["trainable"]) or len(tensors["torch_rng"]) != len(plain["ranks"]):
            raise ValueError("its files do not belong together")
        ranks = [
            {
                **own,
                "torch_rng": rng,
                # JSON keys are strings; the table is indexed by record number.
                "ref_logprobs": {
                    name: {int(i): subs for i, subs in table.items()} for name, table in own["ref_logprobs"].items()
                },
            }
            for own, rng in zip(plain["ranks"], tensors["torch_rng"])
        ]
    except UserError:
        raise
    except Exception as e:  # json, safetensors, pickle, zip and torch each raise their own types for a bad file
        raise UserError(
            f"The checkpoint {folder} is damaged or not a plain obliviate checkpoint ({type(e).__name__}) and "
            f"was not loaded; {again}."
        ) from None
    return {**plain, "trainable": weights, "optimizer": tensors["optimizer"], "ranks": ranks}


def _truncate_log(log_path, step: int) -> None:
    if not log_path or not Path(log_path).is_file():
        return
    rows = [
        line for line in Path(log_path).read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    write_text(log_path, "".join(r + "\n" for r in rows))
