"""`obliviate forget`: data -> base evaluation -> unlearning -> evaluation -> model + report.

Each stage writes its files into the run directory atomically, so an
interrupted run can be resumed (`resume=True`) from the last finished stage,
and the base model is only ever read.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from obliviate.data.builder import DataConfig, build_data
from obliviate.data.targets import TargetSpec, resolve_target
from obliviate.engine.trainer import TrainConfig, train
from obliviate.errors import UserError
from obliviate.evaluation.evaluate import METRICS, evaluate_model
from obliviate.io import atomic_dir, read_json, read_jsonl, write_json, write_text
from obliviate.methods import get_method
from obliviate.models.loading import load_model
from obliviate.report.markdown import write_report

# Defaults per method, tuned on the embedded model (see README for the measured run).
METHOD_TRAIN_DEFAULTS: dict[str, dict] = {
    "ga": {"lr": 1e-5, "steps": 8},
    "gd": {"lr": 2e-5, "steps": 15},
    "npo": {"lr": 3e-5, "steps": 15},
}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def _prepare_run_dir(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory; pass a directory for --out.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "config.yaml").is_file():
        raise UserError(f"{out} already exists and is not an obliviate run; choose another --out or empty it.")
    if resume:
        return
    if not overwrite:
        raise UserError(f"{out} already holds a run; pass --overwrite to replace it or --resume to continue it.")
    shutil.rmtree(out)


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
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory; pass a directory for --out.")
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise UserError(f"{out} already exists and is not an obliviate data directory; choose another --out or empty it.")
        if not overwrite:
            raise UserError(f"{out} already holds data; pass --overwrite to rebuild it.")
    log(f"Loading model {model or 'embedded SmolLM2-135M-Instruct'} ...")
    lm = load_model(model)
    log(f"Building forget / retain / probe data for {spec.name} from the model ...")
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        manifest = build_data(lm, spec, tmp, config, log=log)
    log(f"Data built in {time.perf_counter() - t0:.0f} s.")
    return manifest


def forget(
    target: str | TargetSpec | None,
    model: str | None = None,
    method: str = "npo",
    out: str | Path | None = None,
    *,
    data: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    steps: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    keywords: list[str] | None = None,
    data_config: DataConfig | None = None,
    train_config: TrainConfig | None = None,
    method_options: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Make `model` forget `target` and write a run directory; returns metrics.json's content.

    Raises UserError for bad input (empty target, unknown method, a run
    directory that already holds a run without overwrite/resume, ...).
    """
    if data is not None:
        data = Path(data)
        if not (data / "manifest.json").is_file():
            raise UserError(f"{data} is not a data directory (no manifest.json); build one with `obliviate data`.")
        spec = TargetSpec(**read_json(data / "manifest.json")["target"])
    else:
        spec = target if isinstance(target, TargetSpec) else resolve_target(target, keywords)
    unlearner = get_method(method, **(method_options or {}))
    tcfg = train_config or TrainConfig(**METHOD_TRAIN_DEFAULTS.get(method, {}))
    overrides = {k: v for k, v in {"steps": steps, "lr": lr, "seed": seed}.items() if v is not None}
    tcfg = dataclasses.replace(tcfg, **overrides)
    dcfg = data_config or DataConfig()
    if seed is not None:
        dcfg = dataclasses.replace(dcfg, seed=seed)
    out = Path(out or Path("runs") / slug(spec.builtin or spec.name))
    _prepare_run_dir(out, overwrite, resume)

    t0 = time.perf_counter()
    clock = [time.perf_counter()]

    def done(what: str) -> None:
        now = time.perf_counter()
        log(f"{what} in {now - clock[0]:.0f} s.")
        clock[0] = now

    log(f"Loading model {model or 'embedded SmolLM2-135M-Instruct'} ...")
    lm = load_model(model)
    if data is not None:
        built_from = read_json(data / "manifest.json").get("model")
        if built_from and str(built_from) != str(lm.path):
            raise UserError(f"{data} was built from the model at {built_from}; pass that model with --model, "
                            "since its probes' 'known' flags come from that model's answers.")
    config = {
        "target": spec.name,
        "model": model or "embedded",
        "model_path": lm.path,
        "method": method,
        "method_config": dataclasses.asdict(unlearner.config),
        "train": dataclasses.asdict(tcfg),
        "data": dataclasses.asdict(dcfg),
    }
    if resume and (out / "config.yaml").is_file():
        old = yaml.safe_load((out / "config.yaml").read_text())
        if (old.get("target"), old.get("model"), old.get("method")) != (config["target"], config["model"], method):
            raise UserError(
                f"{out} holds a run of {old.get('method')!r} for {old.get('target')!r} on {old.get('model')!r}; "
                "resume it with the same target, --model and --method, or use another --out."
            )
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    data_dir = out / "data"
    if data is not None and not (data_dir / "manifest.json").is_file():
        with atomic_dir(data_dir) as tmp:
            shutil.copytree(data, tmp, dirs_exist_ok=True)
        log(f"Using the data in {data} (copied into the run directory).")
    if (data_dir / "manifest.json").is_file():
        log("Reusing data from the interrupted run." if data is None else "Data ready.")
    else:
        log(f"Building forget / retain / probe data for {spec.name} from the model ...")
        with atomic_dir(data_dir) as tmp:
            build_data(lm, spec, tmp, dcfg, log=log)
        done("Data built")
    data = {name: read_jsonl(data_dir / f"{name}.jsonl") for name in ("forget", "retain", "alt", "retain_eval", "probes")}
    keywords = spec.terms
    behaviour = spec.kind == "behaviour"

    if (out / "eval_base.json").is_file():
        base = read_json(out / "eval_base.json")
    else:
        log(f"Evaluating the base model on {len(data['probes'])} held-out probes (answers from the data stage) ...")
        base = evaluate_model(lm.model, lm.tokenizer, data["probes"], data["retain_eval"], keywords,
                              behaviour=behaviour, answers=[p["base_answer"] for p in data["probes"]])
        write_json(out / "eval_base.json", base)
        done("Base model evaluated")

    model_dir = out / "model"
    if (model_dir / "config.json").is_file() and (out / "train_summary.json").is_file():
        log("Reusing the unlearned model from the interrupted run.")
        lm = load_model(str(model_dir))
        summary = read_json(out / "train_summary.json")
    else:
        log(f"Unlearning with {method} for {tcfg.steps} steps ...")
        (out / "train_log.jsonl").unlink(missing_ok=True)
        result = train(lm.model, lm.tokenizer, unlearner, data, tcfg, out / "train_log.jsonl", progress=progress)
        summary = dataclasses.asdict(result)
        if result.diverged_at:
            log(f"The loss diverged at step {result.diverged_at}; restored the weights from step {result.restored_step} and stopped. Lower --lr to go further.")
        with atomic_dir(model_dir) as tmp:
            lm.model.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
        write_json(out / "train_summary.json", summary)
        done("Unlearned and saved")

    log("Evaluating the unlearned model ...")
    after = evaluate_model(lm.model, lm.tokenizer, data["probes"], data["retain_eval"], keywords,
                           known=[it["known"] for it in base["items"]], behaviour=behaviour)
    done("Unlearned model evaluated")
    metrics = {
        "target": spec.name,
        "method": method,
        "run_dir": str(out),
        "base": base["metrics"],
        "unlearned": after["metrics"],
        "higher_is_better": {name: info.higher_is_better for name, info in METRICS.items()},
        "train": summary,
        "data_sha256": read_json(data_dir / "manifest.json")["sha256"],
        "seconds": round(time.perf_counter() - t0, 1),
        "items": [
            {**a, "base_answer": b["answer"], "base_hit": b["hit"]} for b, a in zip(base["items"], after["items"])
        ],
    }
    write_json(out / "metrics.json", metrics)
    write_report(out / "report.md", config, base, after, summary)
    return metrics
