"""`obliviate forget`: data -> base evaluation -> unlearning -> evaluation -> model + report.

Each stage writes its files into the run directory atomically, so an
interrupted run can be resumed (`resume=True`) from the last finished stage,
and the base model is only ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError

from obliviate.data.builder import DataConfig, build_data
from obliviate.data.cache import cached_data_dir
from obliviate.data.documents import read_passages, read_qa
from obliviate.data.targets import TargetSpec, resolve_target
from obliviate.engine.fanout import ray_map
from obliviate.engine.processes import processes
from obliviate.engine.trainer import TrainConfig, check_train_config, has_checkpoint, train
from obliviate.errors import Stopped, UserError
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.document import document
from obliviate.evaluation.evaluate import evaluate_base, evaluate_model
from obliviate.io import (
    LOCK_NAME,
    atomic_dir,
    check_out_dir,
    read_json,
    read_jsonl,
    restore_replaced,
    run_lock,
    write_json,
    write_text,
)
from obliviate.methods import get_method
from obliviate.methods.base import Method
from obliviate.models.hooks import hooks_of
from obliviate.models.loading import LoadedModel, load_model, weights_hash
from obliviate.report.format import markdown_table, num
from obliviate.report.html import write_compare_html, write_report_html
from obliviate.report.markdown import write_report

AUTO = "auto"  # the method name that lets the pipeline choose (pipeline/auto.py)
# Seconds the automatic choice may spend training and validating candidates by default: two or three
# candidates on the embedded model on a laptop CPU.
DEFAULT_BUDGET = 240.0

# The data files the methods read, by stream name.
RECORD_STREAMS = ("forget", "retain", "alt", "retain_eval")  # never the probes: nothing trains on them


@dataclass(frozen=True)
class RunPlan:
    """One `forget` run resolved from its arguments: what is forgotten, each stage's settings, where it writes."""

    spec: TargetSpec
    model: str | None  # as given (hub id, directory, .gguf); None: the embedded model
    method: str  # a registered method, or "auto"
    unlearner: Method | None  # None for "auto": the search picks the method
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    out: Path
    given_data_dir: Path | None  # an existing data directory, copied into the run instead of building data
    train_overrides: dict = dataclasses.field(default_factory=dict)  # the user's TrainConfig fields (auto applies them)
    budget: float = DEFAULT_BUDGET  # seconds for the auto search

    @property
    def auto(self) -> bool:
        return self.method == AUTO

    @property
    def data_dir(self) -> Path:
        return self.out / "data"


class _Clock:
    """The run's wall time, and each stage's, logged as the stage finishes."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.start = self.last = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        self.log(f"{what} in {now - self.last:.0f} s.")
        self.last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


SLUG_CHARS = 64  # a default folder name stays well under file systems' 255-byte limit


def slug(text: str) -> str:
    """A folder name for `text`: lowercase words joined by dashes; a long one cut, with a hash of the whole."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"
    if len(name) <= SLUG_CHARS:
        return name
    return name[: SLUG_CHARS - 9].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _target_of(target: str | TargetSpec | None, data_dir: Path | None) -> TargetSpec:
    """What to forget: the target `data_dir` (a data directory) was built for, else `target` resolved.

    Raises UserError if `data_dir` is not a data directory, or as resolve_target does.
    """
    if data_dir is None:
        return target if isinstance(target, TargetSpec) else resolve_target(target)
    if not (data_dir / "manifest.json").is_file():
        raise UserError(f"{data_dir} is not a data directory (no manifest.json); build one with `obliviate data`.")
    return TargetSpec(**read_json(data_dir / "manifest.json")["target"])


def _unfinished_start(out: Path) -> bool:
    """Whether `out` holds nothing but the config.yaml of a run that stopped before its data stage finished:
    not a run that blocks a new one, since nothing of it would be reused."""
    return out.is_dir() and set(os.listdir(out)) - {LOCK_NAME} == {"config.yaml"}


def _check_run_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse an `out` that is not a run, or holds one (unless `overwrite`/`resume`), or holds none to `resume`.
    Reads only: an old run is replaced later (_clear_run_dir), once every input has been checked."""
    if resume:
        if not check_out_dir(out, "config.yaml", "an obliviate run"):
            raise UserError(f"{out} holds no run to resume; check the --out path, or drop --resume to start a run.")
    elif not _unfinished_start(out):
        held = "a run; pass --overwrite to replace it or --resume to continue it"
        check_out_dir(out, "config.yaml", "an obliviate run", held, overwrite=overwrite)


def _clear_run_dir(out: Path) -> None:
    """Empty `out` (checked by _check_run_dir, and locked) for a new run; its lock stays."""
    for entry in out.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _drop_temporaries(out: Path) -> None:
    """Remove the temporary files and folders (.NAME.*.tmp, .NAME.old) a killed process left while writing
    atomically, after putting back a .NAME.old whose NAME a kill left absent (io.restore_replaced): under
    the run's lock no other process is writing them."""
    for folder in (out, out / "checkpoint"):
        for entry in list(folder.glob(".*")) if folder.is_dir() else ():
            if entry.name.endswith(".old") and restore_replaced(folder / entry.name[1 : -len(".old")]):
                continue
            if not entry.name.endswith((".tmp", ".old")):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _drop_unfinished_start(out: Path) -> None:
    """After a failure: a config.yaml with nothing else is not a run, so it is not left behind."""
    if _unfinished_start(out):
        (out / "config.yaml").unlink()


def _check_inputs(plan: RunPlan, resume: bool) -> None:
    """What the data stage will read, checked before anything is written: the target's documents and QA
    file (unless the data comes from a data directory or from the run being resumed). Raises UserError."""
    if plan.given_data_dir is None and not (resume and (plan.data_dir / "manifest.json").is_file()):
        _check_sources(plan.spec, plan.data)


def _check_sources(spec: TargetSpec, data: DataConfig) -> None:
    """Read the target's documents and QA file as the data stage will, so a bad one fails before the model
    loads or anything is written. Raises UserError as read_passages and read_qa do."""
    if spec.documents:
        read_passages(spec.documents, max_passages=data.max_doc_passages)
    if spec.qa:
        read_qa(spec.qa)


def build_data_dir(
    target: str | TargetSpec,
    out: str | Path,
    model: str | None = None,
    config: DataConfig | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """`obliviate data`: build the data stage alone into `out` (atomically); returns the manifest."""
    spec = target if isinstance(target, TargetSpec) else resolve_target(target)
    out = Path(out)
    check_out_dir(
        out, "manifest.json", "an obliviate data directory", "data; pass --overwrite to rebuild it", overwrite=overwrite
    )
    _check_sources(spec, config or DataConfig())
    log(f"Loading model {model or 'embedded SmolLM2-135M-Instruct'} ...")
    lm = load_model(model)
    log(f"Building forget / retain / probe data for {spec.name} from the model ...")
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        manifest = build_data(lm, spec, tmp, config, log=log)
    log(f"Data built in {time.perf_counter() - t0:.0f} s.")
    return manifest


def evaluate(
    model,
    data: str | Path,
    *,
    against=None,
    oracle=None,
    config: EvalConfig | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """`obliviate eval`: the evaluation alone (evaluation.evaluate.evaluate), and with `out` its
    OUT/metrics.json and OUT/metrics.md, each written atomically. Returns the metrics.json document."""
    from obliviate.evaluation.evaluate import evaluate as evaluate_on
    from obliviate.report.metrics import write_metrics

    doc = evaluate_on(model, data, against=against, oracle=oracle, config=config, log=log)
    if out is not None:
        write_metrics(out, doc)
    return doc


# ---------------------------------------------------------------- forget


def forget(
    target: str | TargetSpec | None = None,
    *,
    model: str | None = None,
    method: str = AUTO,
    method_options: dict | None = None,
    budget: float | None = None,
    data: DataConfig | None = None,
    data_dir: str | Path | None = None,
    train: dict | None = None,
    eval: EvalConfig | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    base_eval: dict | None = None,
    on_step: Callable[[dict], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict:
    """Make `model` (None: the embedded model) forget `target` and write a run directory; returns metrics.json.

    One argument per stage: `data` builds the data (or `data_dir`, an existing data directory
    written by `obliviate data`, is copied in and names the target); `method` with its
    `method_options` (the method's config fields), or "auto" (the default): a few candidate methods are
    trained and compared on the validation probes within `budget` seconds and the best is kept
    (pipeline/auto.py); `train`, TrainConfig fields that override the method's tuned
    `train_defaults` (e.g. {"steps": 2, "lora": True}); `eval` (default: the full
    suite), run on the base model, reusing the data stage's answers, and on the unlearned model.
    `seed`, when given, seeds both the data and the training. `base_eval`: a base evaluation
    already made on the same data and model (compare shares one across methods).
    `on_step`: called with each training step's log row (engine.train's). `stop`: asked between
    stages and training steps; when it returns True the run raises `Stopped`, keeping what it
    finished (and a training checkpoint), and `resume=True` continues it.

    Launched as several processes (`accelerate launch --num_processes N -m obliviate forget ...`), the
    main process builds the data and runs both evaluations while the others wait, every process
    trains on its shard, and only the main process writes files; all return the same metrics.

    Raises UserError for bad input (empty target, unknown method or training setting, a run
    directory that already holds a run without overwrite/resume, or that another process is
    working in, ...), every one checked before anything is written, and for a training run that
    kept no step (it diverged at once), which saves no model. A failure before the data stage
    finished leaves nothing behind (docs/RELIABILITY.md).
    """
    given = Path(data_dir) if data_dir is not None else None
    spec = _target_of(target, given)
    if method == AUTO:
        if method_options:
            raise UserError("--method auto chooses each candidate's settings itself; drop --set or name a method.")
        unlearner, defaults = None, TrainConfig()
    else:
        unlearner = get_method(method, **(method_options or {}))
        defaults = TrainConfig(**unlearner.train_defaults)
    if budget is not None and not 0 < budget < float("inf"):
        raise UserError(f"--budget takes a positive finite number of seconds, got {budget}.")
    tcfg = _train_config(defaults, train, seed)
    plan = RunPlan(
        spec=spec,
        model=model,
        method=method,
        unlearner=unlearner,
        train=tcfg,
        data=dataclasses.replace(data or DataConfig(), **({"seed": seed} if seed is not None else {})),
        eval=eval or EvalConfig(),
        out=Path(out or Path("runs") / slug(spec.builtin or spec.name)),
        given_data_dir=given,
        # Checked by _train_config above: only TrainConfig fields.
        train_overrides={**(train or {}), **({"seed": seed} if seed is not None else {})},
        budget=budget if budget is not None else DEFAULT_BUDGET,
    )
    _check_inputs(plan, resume)
    procs = processes()
    main = procs.is_main_process
    if procs.num_processes > 1 and plan.auto:
        raise UserError("--method auto runs in one process; name a method to train with several processes.")
    log = log if main else (lambda m: None)
    if main:
        _check_run_dir(plan.out, overwrite, resume)
    # The main process holds the run's lock; the others work under it.
    with run_lock(plan.out) if main else contextlib.nullcontext():
        if main:
            _check_run_dir(plan.out, overwrite, resume)  # again, now that no other process can write in it
        procs.wait_for_everyone()
        try:
            clock = _Clock(log)
            watch = _Watch(on_step, stop)
            with procs.main_process_first():  # the others reuse what the main process wrote
                lm, config = _start_run(plan, resume, log, write=main)
                watch.between_stages()
                records = _data_stage(plan, lm, log, clock)
            watch.between_stages()
            edata = EvalData.from_dir(plan.data_dir)
            base = _base_stage(plan, lm, edata, base_eval, log, clock) if main else None
            watch.between_stages()
            lm, summary = _unlearn_stage(plan, lm, records, resume, progress and main, log, clock, watch, write=main)
            watch.between_stages()
            metrics = _final_stage(plan, lm, edata, base, summary, config, log, clock) if main else None
            procs.wait_for_everyone()
            return metrics if main else read_json(plan.out / "metrics.json")
        except Stopped:
            raise  # a stop the caller asked for keeps config.yaml, so the run resumes
        except BaseException:
            if main:
                _drop_unfinished_start(plan.out)
            raise


@dataclass(frozen=True)
class _Watch:
    """What a caller watching a run passes in: a callback for each training step, and a stop request."""

    on_step: Callable[[dict], None] | None = None
    stop: Callable[[], bool] | None = None

    def between_stages(self) -> None:
        """Raise Stopped if a stop was requested (the stages before are on disk)."""
        if self.stop is not None and self.stop():
            raise Stopped("Stopped between stages.")


def _train_config(defaults: TrainConfig, overrides: dict | None, seed: int | None) -> TrainConfig:
    """`defaults` with the `overrides` (TrainConfig fields) and `seed` applied; UserError for an unknown field."""
    overrides = {**(overrides or {}), **({"seed": seed} if seed is not None else {})}
    known_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(overrides) - known_fields:
        raise UserError(
            f"Unknown training setting {sorted(set(overrides) - known_fields)[0]!r}; "
            f"the settings are: {', '.join(sorted(known_fields))}."
        )
    cfg = dataclasses.replace(defaults, **overrides)
    check_train_config(cfg)
    return cfg


def _start_run(plan: RunPlan, resume: bool, log: Callable[[str], None], write: bool = True) -> tuple[LoadedModel, dict]:
    """Load the base model and write config.yaml (unless not `write`); returns the model and the config.

    Raises UserError if the given data directory was built from another model, or if `resume`
    finds a run of another target, model or method.
    """
    log(f"Loading model {plan.model or 'embedded SmolLM2-135M-Instruct'} ...")
    # --bf16-weights: loaded, trained and saved in bf16, so no fp32 copy is ever resident.
    lm = load_model(plan.model, dtype=torch.bfloat16 if plan.train.bf16_weights else torch.float32)
    if plan.given_data_dir is not None:
        manifest = read_json(plan.given_data_dir / "manifest.json")
        built_from = manifest.get("model")
        moved = manifest.get("model_sha256") and manifest["model_sha256"] == weights_hash(lm.model)
        if built_from and str(built_from) != str(lm.path) and not moved:
            raise UserError(
                f"{plan.given_data_dir} was built from the model at {built_from}; pass that model with "
                "--model, since its probes' 'known' flags come from that model's answers."
            )
    config = {
        "target": plan.spec.name,
        "model": plan.model or "embedded",
        "model_path": lm.path,
        "method": plan.method,
        "method_config": dataclasses.asdict(plan.unlearner.config) if plan.unlearner else None,
        **({"budget": plan.budget} if plan.auto else {}),
        "train": dataclasses.asdict(plan.train),
        "data": dataclasses.asdict(plan.data),
    }
    config_path = plan.out / "config.yaml"
    if resume and config_path.is_file():
        try:
            old = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            raise UserError(f"{config_path} is damaged (not a YAML mapping); pass --overwrite to start the run again.")
        if (old.get("target"), old.get("model"), old.get("method")) != (config["target"], config["model"], plan.method):
            raise UserError(
                f"{plan.out} holds a run of {old.get('method')!r} for {old.get('target')!r} on {old.get('model')!r}; "
                "resume it with the same target, --model and --method, or use another --out."
            )
    if write:
        if not resume:
            _clear_run_dir(plan.out)  # an old run replaced (--overwrite), now that the model has loaded
        _drop_temporaries(plan.out)
        write_text(config_path, yaml.safe_dump(config, sort_keys=False))
    return lm, config


def _data_stage(plan: RunPlan, lm: LoadedModel, log: Callable[[str], None], clock: _Clock) -> dict[str, list[dict]]:
    """RUN/data: copied from the given data directory, kept from an interrupted run, reused from the data cache
    (data/cache.py), or built from the model and then kept in the cache.

    Returns the records the methods read, by stream (RECORD_STREAMS).
    """
    data_dir, given = plan.data_dir, plan.given_data_dir
    cache = cached_data_dir(lm.path, plan.spec, plan.data) if given is None else None
    if not (data_dir / "manifest.json").is_file():
        source = given if given is not None else cache if (cache / "manifest.json").is_file() else None
        if source is not None:
            _copy_dir(source, data_dir)
            log(
                f"Using the data in {given} (copied into the run directory)."
                if given is not None
                else f"Reusing the data built earlier for the same model, target and settings ({cache}; delete it "
                "to rebuild)."
            )
    elif given is None:
        log("Reusing data from the interrupted run.")
    if not (data_dir / "manifest.json").is_file():
        log(f"Building forget / retain / probe data for {plan.spec.name} from the model ...")
        with atomic_dir(data_dir) as tmp:
            build_data(lm, plan.spec, tmp, plan.data, log=log)
        clock.lap("Data built")
        try:
            _copy_dir(data_dir, cache)
        except OSError as e:
            log(f"Could not keep the data in {cache} for later runs ({e.strerror}); this run goes on.")
    return {name: read_jsonl(data_dir / f"{name}.jsonl") for name in RECORD_STREAMS}


def _copy_dir(source: Path, dest: Path) -> None:
    """Copy the folder `source` to `dest`, atomically; the copies are new files (modification time: now)."""
    with atomic_dir(dest) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, copy_function=shutil.copy)


def _base_stage(
    plan: RunPlan, lm: LoadedModel, edata: EvalData, base_eval: dict | None, log: Callable[[str], None], clock: _Clock
) -> dict:
    """RUN/eval_base.json: kept from an interrupted run, else `base_eval`, else the base model evaluated now."""
    path = plan.out / "eval_base.json"
    if path.is_file():
        return read_json(path)
    kept = _base_eval_cache(plan, lm)
    if base_eval is None and kept is not None and kept.is_file():
        base_eval = read_json(kept)
        log(f"Reusing the base model's evaluation made earlier on the same data and settings ({kept}).")
    if base_eval is not None:
        write_json(path, base_eval)
        return base_eval
    log(
        f"Evaluating the base model on {len(edata.probes)} held-out probes (answers from the data stage) "
        "and attacks ..."
    )
    base = evaluate_base(lm.model, lm.tokenizer, lm.path, edata, plan.eval, log=lambda m: None)
    write_json(path, base)
    if kept is not None:
        try:
            write_json(kept, base)
        except OSError as e:
            log(f"Could not keep the base evaluation in {kept} for later runs ({e.strerror}); this run goes on.")
    clock.lap("Base model evaluated")
    return base


def _base_eval_cache(plan: RunPlan, lm: LoadedModel) -> Path | None:
    """Where the base evaluation of this run's cached data is kept, keyed by the evaluation settings and code;
    None when the data was given rather than built (data/cache.py)."""
    if plan.given_data_dir is not None:
        return None
    h = hashlib.sha256(json.dumps(dataclasses.asdict(plan.eval), sort_keys=True, default=str).encode())
    for source in sorted(Path(evaluate_base.__code__.co_filename).parent.glob("*.py")):
        h.update(source.read_bytes())
    data = cached_data_dir(lm.path, plan.spec, plan.data)
    return data.parent.parent / "base_eval" / f"{data.name}-{h.hexdigest()[:24]}.json"


def _unlearn_stage(
    plan: RunPlan,
    lm: LoadedModel,
    records: dict[str, list[dict]],
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    clock: _Clock,
    watch: _Watch = _Watch(),
    write: bool = True,
) -> tuple[LoadedModel, dict]:
    """RUN/model and RUN/train_summary.json: kept from an interrupted run, or the model unlearned and saved
    (unless not `write`: a training process other than the main one).

    Returns the unlearned model and the training summary.
    """
    out, model_dir = plan.out, plan.out / "model"
    if model_dir.is_dir() and (out / "train_summary.json").is_file():
        log("Reusing the unlearned model from the interrupted run.")
        return load_model(str(model_dir)), read_json(out / "train_summary.json")
    full_state = None  # the state dict gathered under FSDP or ZeRO-3; auto runs in one process
    if plan.auto:
        model, summary = _choose(plan, lm, records, progress, log)
    else:
        model, summary, full_state = _unlearn(
            lm, plan.unlearner, records, plan.spec, plan.train, out, resume, progress, log, watch
        )
    if not write:
        return dataclasses.replace(lm, model=model), summary
    try:
        with atomic_dir(model_dir) as tmp:
            # Under FSDP or ZeRO-3 the weights are sharded: the state dict gathered at the end of training.
            model.save_pretrained(tmp, state_dict=full_state)
            lm.tokenizer.save_pretrained(tmp)
            if hooks_of(model) is not None:
                hooks_of(model).save(tmp)
    except (RuntimeError, SafetensorError) as e:  # how torch and safetensors report a full disk
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"Could not save the unlearned model into {model_dir} ({reason}); free some disk space and rerun "
            "with --resume."
        ) from None
    write_json(out / "train_summary.json", summary)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    clock.lap("Unlearned and saved")
    return dataclasses.replace(lm, model=model), summary


def _unlearn(
    lm: LoadedModel,
    unlearner: Method,
    records: dict[str, list[dict]],
    spec: TargetSpec,
    tcfg: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    log: Callable[[str], None],
    watch: _Watch = _Watch(),
):
    """Train (or edit) the model; returns it, the summary for train_summary.json, and the full state dict to
    save in place of the model's own (gathered under FSDP or ZeRO-3, else None)."""
    if not unlearner.trains:
        log(f"Editing the model with {unlearner.name} (no training) ...")
        t = time.perf_counter()
        hooks = unlearner.edit(lm.model, lm.tokenizer, records, spec)
        summary = {
            "steps_done": 0,
            "seconds": round(time.perf_counter() - t, 2),
            "edit": dataclasses.asdict(hooks) if hooks else None,
        }
        return lm.model, summary, None
    resuming = resume and has_checkpoint(out / "checkpoint")
    log(
        f"Unlearning with {unlearner.name} for {tcfg.steps} steps{' (LoRA)' if tcfg.lora else ''}"
        f"{', resuming from the last checkpoint' if resuming else ''} ..."
    )
    result = train(
        lm.model,
        lm.tokenizer,
        unlearner,
        records,
        tcfg,
        out / "train_log.jsonl",
        progress=progress,
        checkpoint_dir=out / "checkpoint",
        resume=resume,
        on_step=watch.on_step,
        stop=watch.stop,
    )
    if result.steps_done == 0:
        raise UserError(
            f"Training diverged at step {result.diverged_at} (the loss was not finite) before any step could be "
            f"kept, so nothing was unlearned and no model was saved; lower --lr (it was {tcfg.lr:g}) and rerun "
            "with --resume to reuse the data."
        )
    if result.diverged_at:
        log(
            f"The loss diverged at step {result.diverged_at}; restored the weights from step {result.restored_step} "
            "and stopped. Lower --lr to go further."
        )
    if result.stopped_early_at:
        log(f"Stopped early at step {result.stopped_early_at}: the validation forget loss reached its target.")
    return result.model, result.to_dict(), result.full_state


def _choose(plan: RunPlan, lm: LoadedModel, records: dict[str, list[dict]], progress: bool, log: Callable[[str], None]):
    """`--method auto`: the search on the validation probes (pipeline/auto.py); returns the chosen model and the
    summary for train_summary.json, whose "auto" holds the candidates table."""
    from obliviate.pipeline.auto import search

    log(f"Choosing the method on the validation probes (budget {plan.budget:.0f} s) ...")
    found = search(
        lm,
        records,
        plan.data_dir,
        plan.eval,
        budget=plan.budget,
        train_overrides=plan.train_overrides,
        log_dir=plan.out / "auto",
        progress=progress,
        log=log,
    )
    chosen = next(row for row in found.rows if row["chosen"])
    if chosen.get("steps_kept") == 0:
        raise UserError(
            f"Every candidate's training diverged before any step could be kept ({chosen['candidate']} was the "
            "best), so nothing was unlearned and no model was saved; pass a lower --lr, or name a method."
        )
    log(f"Chose {found.chosen.label}" + ("." if found.met_bar else ": no candidate met the bar; it missed it least."))
    auto = found.summary()
    return found.model, {"steps_done": auto["steps_done"], "seconds": auto["seconds"], "auto": auto}


def _final_stage(
    plan: RunPlan,
    lm: LoadedModel,
    edata: EvalData,
    base: dict,
    summary: dict,
    config: dict,
    log: Callable[[str], None],
    clock: _Clock,
) -> dict:
    """Evaluate the unlearned model against `base`; writes RUN/metrics.json and RUN/report.md, returns the former."""
    log("Evaluating the unlearned model (probes, likelihoods, attacks) ...")
    after = evaluate_model(lm.model, lm.tokenizer, edata, plan.eval, base=base, log=lambda m: None)
    clock.lap("Unlearned model evaluated")
    metrics = {
        "target": plan.spec.name,
        "method": plan.method,
        **({"chosen_method": summary["auto"]["method"]} if summary.get("auto") else {}),
        "run_dir": str(plan.out),
        **document(after, plan.out / "model", edata, plan.eval, against=base),
        "train": summary,
        "run_seconds": clock.total(),
    }
    write_json(plan.out / "metrics.json", metrics)
    write_report(plan.out / "report.md", config, metrics)
    write_report_html(plan.out, config, metrics)
    return metrics


# ---------------------------------------------------------------- compare

# What a method must reach on a target to count as working: cut the leak rate by at least 80 %,
# lose at most 0.03 general-QA accuracy and raise retain perplexity by at most 10 %.
BAR = {"leak_cut": 0.8, "general_qa_drop": 0.03, "ppl_rise": 0.10}
COMPARE_COLUMNS = (
    "method",
    "leak rate",
    "leak cut",
    "general QA",
    "neighbour QA",
    "retain ppl",
    "worst attack leak",
    "MIA AUC (loss)",
    "unlearning time",
    "run time",
    "meets bar",
)


def compare(
    target: str | TargetSpec | None = None,
    methods: list[str] | None = None,
    *,
    model: str | None = None,
    data: DataConfig | None = None,
    data_dir: str | Path | None = None,
    train: dict | None = None,
    eval: EvalConfig | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    ray: str | None = None,
) -> dict:
    """`obliviate compare`: every method (or `methods`) at its defaults on the same data and probes.

    The data is built once into OUT/data with `data` (or `data_dir` is used), the base model is
    evaluated once, and each method runs as `forget` with the same `train`, `eval` and `seed`.
    Writes OUT/<method>/ (a full run each), OUT/compare.json and OUT/compare.md. A method whose
    run already finished is reused unless `overwrite`.

    `ray` ("local", or a Ray cluster's address) runs the methods that have not finished as Ray tasks
    (engine.fanout) instead of one after another; the files are the same. OUT must be on a filesystem
    every Ray node sees.
    """
    from obliviate.methods import METHODS

    names = methods or sorted(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        get_method(unknown[0])  # raises the "did you mean" error
    if data_dir is None and target is None:
        raise UserError("Name a target to forget, or pass a data directory built by `obliviate data`.")
    data_dir = Path(data_dir) if data_dir is not None else None
    spec = _target_of(target, data_dir)
    out = Path(out or Path("runs") / f"compare-{slug(spec.builtin or spec.name)}")
    if data_dir is None:
        data_dir = out / "data"
        if not (data_dir / "manifest.json").is_file():
            build_data_dir(spec, data_dir, model=model, config=data, log=log)
    base_eval = _compare_base(out / "eval_base.json", model, data_dir, eval or EvalConfig(), overwrite, log)
    shared = dict(model=model, data=data, data_dir=data_dir, train=train, eval=eval, seed=seed, base_eval=base_eval)
    runs = {name: (out / name, {**shared, "method": name}) for name in names}
    results = {}
    for name, (run, args) in runs.items():
        if (run / "metrics.json").is_file() and not overwrite:
            log(f"{name}: reusing the finished run in {run}.")
            results[name] = read_json(run / "metrics.json")
        elif ray is None:
            log(f"{name}: running ...")
            results[name] = _compare_run(run, progress=progress, **args)
            log(_run_line(name, results[name]))
    if ray is not None:
        todo = {name: runs[name] for name in names if name not in results}
        log(f"Running {', '.join(todo) or 'nothing'} as Ray tasks ...")
        for name, metrics in ray_map(_compare_in_task, todo, ray).items():
            results[name] = metrics
            log(_run_line(name, metrics))
    results = {name: results[name] for name in names}
    table = compare_table(results)
    doc = {
        "target": spec.name,
        "bar": BAR,
        "data": str(data_dir),
        **table,
        "runs": {
            n: {"metrics": r["metrics"], "train": r["train"], "run_seconds": r["run_seconds"]}
            for n, r in results.items()
        },
        "base": base_eval["metrics"],
    }
    write_json(out / "compare.json", doc)
    write_text(out / "compare.md", markdown_table(table["columns"], table["rows"]))
    write_compare_html(out, doc)
    return {"target": spec.name, "out": str(out), **table}


def _compare_base(
    path: Path, model: str | None, data_dir: Path, ecfg: EvalConfig, overwrite: bool, log: Callable[[str], None]
) -> dict:
    """The base evaluation every method of a comparison shares: kept in `path` unless `overwrite`."""
    if path.is_file() and not overwrite:
        return read_json(path)
    log("Evaluating the base model once for every method (probes, likelihoods, attacks) ...")
    lm = load_model(model)
    base_eval = evaluate_base(lm.model, lm.tokenizer, lm.path, EvalData.from_dir(data_dir), ecfg, log=lambda m: None)
    write_json(path, base_eval)
    return base_eval


def _compare_run(run: Path, progress: bool = False, **forget_args) -> dict:
    """One method's run of a comparison, in `run` (replaced): its metrics.json."""
    return forget(None, out=run, overwrite=True, log=lambda msg: None, progress=progress, **forget_args)


def _run_line(name: str, metrics: dict) -> str:
    m = metrics["metrics"]
    return (
        f"{name}: leak {num(m['leak_rate'])}, general QA {num(m['general_qa_accuracy'])}, "
        f"retain ppl {num(m['retain_perplexity'], 2)}, worst attack leak {num(m.get('attack_worst_leak_rate'))} "
        f"({metrics['run_seconds']:.0f} s)."
    )


def _compare_in_task(run: Path, args: dict) -> dict:
    return _compare_run(run, **args)


def compare_table(results: dict[str, dict]) -> dict:
    """Rows of the comparison: the base model, then one per method, with whether each meets BAR."""
    first = next(iter(results.values()))
    base = first["against"]["metrics"]
    rows = [
        [
            "base model",
            num(base["leak_rate"]),
            "-",
            num(base["general_qa_accuracy"]),
            num(base["neighbour_qa_accuracy"]),
            num(base["retain_perplexity"], 2),
            num(base.get("attack_worst_leak_rate")),
            num(base.get("mia_auc_loss")),
            "-",
            "-",
            "-",
        ]
    ]
    passing = []
    for name, r in results.items():
        u = r["metrics"]
        cut = 1 - u["leak_rate"] / base["leak_rate"] if base["leak_rate"] else 0.0
        ok = (
            cut >= BAR["leak_cut"]
            and u["general_qa_accuracy"] >= base["general_qa_accuracy"] - BAR["general_qa_drop"] - 1e-9
            and u["retain_perplexity"] <= base["retain_perplexity"] * (1 + BAR["ppl_rise"])
        )
        if ok:
            passing.append(name)
        rows.append(
            [
                name,
                num(u["leak_rate"]),
                f"{cut:.0%}",
                num(u["general_qa_accuracy"]),
                num(u["neighbour_qa_accuracy"]),
                num(u["retain_perplexity"], 2),
                num(u.get("attack_worst_leak_rate")),
                num(u.get("mia_auc_loss")),
                f"{r['train']['seconds']:.0f} s",
                f"{r['run_seconds']:.0f} s",
                "yes" if ok else "no",
            ]
        )
    return {
        "columns": list(COMPARE_COLUMNS),
        "rows": rows,
        "passing": passing,
        "n_known": base.get("n_known_target_probes"),
    }
