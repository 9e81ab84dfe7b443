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

import torch
import yaml

from obliviate.data.builder import DataConfig, build_data
from obliviate.data.targets import TargetSpec, resolve_target
from obliviate.engine.trainer import TrainConfig, train
from obliviate.errors import UserError
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.document import document
from obliviate.evaluation.evaluate import evaluate_model
from obliviate.io import atomic_dir, read_json, read_jsonl, write_json, write_text
from obliviate.methods import get_method
from obliviate.models.hooks import hooks_of
from obliviate.models.loading import load_model
from obliviate.report.markdown import write_report

def _unlearn(lm, unlearner, data, spec, tcfg: TrainConfig, out: Path, resume: bool, progress: bool, log):
    """Train (or edit) the model; returns it and the summary for train_summary.json."""
    if not unlearner.trains:
        log(f"Editing the model with {unlearner.name} (no training) ...")
        t = time.perf_counter()
        hooks = unlearner.edit(lm.model, lm.tokenizer, data, spec)
        return lm.model, {"steps_done": 0, "seconds": round(time.perf_counter() - t, 2), "edit": dataclasses.asdict(hooks) if hooks else None}
    resuming = resume and (out / "checkpoint" / "checkpoint.pt").is_file()
    log(f"Unlearning with {unlearner.name} for {tcfg.steps} steps{' (LoRA)' if tcfg.lora else ''}"
        f"{', resuming from the last checkpoint' if resuming else ''} ...")
    result = train(lm.model, lm.tokenizer, unlearner, data, tcfg, out / "train_log.jsonl", progress=progress,
                   checkpoint_dir=out / "checkpoint", resume=resume)
    if result.diverged_at:
        log(f"The loss diverged at step {result.diverged_at}; restored the weights from step {result.restored_step} "
            "and stopped. Lower --lr to go further.")
    if result.stopped_early_at:
        log(f"Stopped early at step {result.stopped_early_at}: the validation forget loss reached its target.")
    return result.model, result.to_dict()


def _data_target(data: Path) -> TargetSpec:
    """The target a data directory was built for; UserError if `data` is not one."""
    if not (data / "manifest.json").is_file():
        raise UserError(f"{data} is not a data directory (no manifest.json); build one with `obliviate data`.")
    return TargetSpec(**read_json(data / "manifest.json")["target"])


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
    train_options: dict | None = None,
    method_options: dict | None = None,
    eval_config: EvalConfig | None = None,
    base_eval: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Make `model` forget `target` and write a run directory; returns metrics.json's content.

    The evaluation (`eval_config`, default: the full suite) runs on the base model, reusing
    the data stage's answers, and on the unlearned model; `base_eval` is a base evaluation
    already made on the same data and model (compare shares one across methods).

    Engine settings come from `train_config`, else the method's tuned defaults, then
    `train_options` (any TrainConfig field, e.g. {"lora": True}) and `steps`/`lr`/`seed`.
    Raises UserError for bad input (empty target, unknown method, a run
    directory that already holds a run without overwrite/resume, ...).
    """
    if data is not None:
        data = Path(data)
        spec = _data_target(data)
    else:
        spec = target if isinstance(target, TargetSpec) else resolve_target(target, keywords)
    unlearner = get_method(method, **(method_options or {}))
    tcfg = train_config or TrainConfig(**unlearner.train_defaults)
    overrides = {**(train_options or {}), **{k: v for k, v in {"steps": steps, "lr": lr, "seed": seed}.items() if v is not None}}
    known_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(overrides) - known_fields:
        raise UserError(f"Unknown training setting {sorted(set(overrides) - known_fields)[0]!r}; the settings are: {', '.join(sorted(known_fields))}.")
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
    # --bf16-weights: loaded, trained and saved in bf16, so no fp32 copy is ever resident.
    lm = load_model(model, dtype=torch.bfloat16 if tcfg.bf16_weights else torch.float32)
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
    edata = EvalData.from_dir(data_dir)
    ecfg = eval_config or EvalConfig()

    if (out / "eval_base.json").is_file():
        base = read_json(out / "eval_base.json")
    elif base_eval is not None:
        base = base_eval
        write_json(out / "eval_base.json", base)
    else:
        log(f"Evaluating the base model on {len(data['probes'])} held-out probes (answers from the data stage) and attacks ...")
        result = evaluate_model(lm.model, lm.tokenizer, edata, ecfg, is_base=True, log=lambda m: None,
                                answers=[p["base_answer"] for p in data["probes"]])
        base = document(result, lm.path, edata, ecfg)
        write_json(out / "eval_base.json", base)
        done("Base model evaluated")

    model_dir = out / "model"
    if model_dir.is_dir() and (out / "train_summary.json").is_file():
        log("Reusing the unlearned model from the interrupted run.")
        lm = load_model(str(model_dir))
        summary = read_json(out / "train_summary.json")
    else:
        model, summary = _unlearn(lm, unlearner, data, spec, tcfg, out, resume, progress, log)
        with atomic_dir(model_dir) as tmp:
            model.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
            if hooks_of(model) is not None:
                hooks_of(model).save(tmp)
        write_json(out / "train_summary.json", summary)
        shutil.rmtree(out / "checkpoint", ignore_errors=True)
        lm = dataclasses.replace(lm, model=model)
        done("Unlearned and saved")

    log("Evaluating the unlearned model (probes, likelihoods, attacks) ...")
    after = evaluate_model(lm.model, lm.tokenizer, edata, ecfg, base=base, log=lambda m: None)
    done("Unlearned model evaluated")
    metrics = {
        "target": spec.name,
        "method": method,
        "run_dir": str(out),
        **document(after, model_dir, edata, ecfg, against=base),
        "train": summary,
        "run_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(out / "metrics.json", metrics)
    write_report(out / "report.md", config, metrics)
    return metrics


# The bar issue 4 sets for a method to count as working on a target.
BAR = {"leak_cut": 0.8, "general_qa_drop": 0.03, "ppl_rise": 0.10}
COMPARE_COLUMNS = ("method", "leak rate", "leak cut", "general QA", "neighbour QA", "retain ppl", "worst attack leak",
                   "MIA AUC (loss)", "unlearning time", "run time", "meets bar")


def compare(
    target: str | TargetSpec | None,
    methods: list[str] | None = None,
    *,
    data: str | Path | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **forget_kwargs,
) -> dict:
    """`obliviate compare`: every method (or `methods`) at its defaults on the same data and probes.

    Writes OUT/<method>/ (a full run each), OUT/compare.json and OUT/compare.md. A method whose
    run already finished is reused unless `overwrite`.
    """
    from obliviate.methods import METHODS

    names = methods or sorted(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        get_method(unknown[0])  # raises the "did you mean" error
    if data is None and target is None:
        raise UserError("Name a target to forget, or pass a data directory built by `obliviate data`.")
    spec = _data_target(Path(data)) if data is not None else (
        target if isinstance(target, TargetSpec) else resolve_target(target))
    out = Path(out or Path("runs") / f"compare-{slug(spec.builtin or spec.name)}")
    if data is None:
        data = out / "data"
        if not (data / "manifest.json").is_file():
            build_data_dir(spec, data, model=model, log=log)
    base_path = out / "eval_base.json"
    if base_path.is_file() and not overwrite:
        base_eval = read_json(base_path)
    else:
        log("Evaluating the base model once for every method (probes, likelihoods, attacks) ...")
        lm = load_model(model)
        edata = EvalData.from_dir(data)
        ecfg = forget_kwargs.get("eval_config") or EvalConfig()
        result = evaluate_model(lm.model, lm.tokenizer, edata, ecfg, is_base=True, log=lambda m: None,
                                answers=[p["base_answer"] for p in edata.probes])
        base_eval = document(result, lm.path, edata, ecfg)
        write_json(base_path, base_eval)
        del lm
    results = {}
    for name in names:
        run = out / name
        if (run / "metrics.json").is_file() and not overwrite:
            log(f"{name}: reusing the finished run in {run}.")
            results[name] = read_json(run / "metrics.json")
            continue
        log(f"{name}: running ...")
        results[name] = forget(None, data=data, model=model, method=name, out=run, overwrite=True, base_eval=base_eval,
                               progress=progress, log=lambda msg: None, **forget_kwargs)
        m = results[name]["metrics"]
        log(f"{name}: leak {m['leak_rate']:.3f}, general QA {m['general_qa_accuracy']:.3f}, "
            f"retain ppl {m['retain_perplexity']:.2f}, worst attack leak {_num(m.get('attack_worst_leak_rate'))} "
            f"({results[name]['run_seconds']:.0f} s).")
    table = compare_table(results)
    write_json(out / "compare.json", {"target": spec.name, "bar": BAR, "data": str(data), **table,
                                      "runs": {n: {"metrics": r["metrics"], "train": r["train"], "run_seconds": r["run_seconds"]}
                                               for n, r in results.items()},
                                      "base": base_eval["metrics"]})
    write_text(out / "compare.md", _markdown_table(table["columns"], table["rows"]))
    return {"target": spec.name, "out": str(out), **table}


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def compare_table(results: dict[str, dict]) -> dict:
    """Rows of the comparison: the base model, then one per method, with whether each meets BAR."""
    first = next(iter(results.values()))
    base = first["against"]["metrics"]
    rows = [["base model", _num(base["leak_rate"]), "-", _num(base["general_qa_accuracy"]),
             _num(base["neighbour_qa_accuracy"]), _num(base["retain_perplexity"], 2),
             _num(base.get("attack_worst_leak_rate")), _num(base.get("mia_auc_loss")), "-", "-", "-"]]
    passing = []
    for name, r in results.items():
        u = r["metrics"]
        cut = 1 - u["leak_rate"] / base["leak_rate"] if base["leak_rate"] else 0.0
        ok = (cut >= BAR["leak_cut"] and u["general_qa_accuracy"] >= base["general_qa_accuracy"] - BAR["general_qa_drop"] - 1e-9
              and u["retain_perplexity"] <= base["retain_perplexity"] * (1 + BAR["ppl_rise"]))
        if ok:
            passing.append(name)
        rows.append([name, _num(u["leak_rate"]), f"{cut:.0%}", _num(u["general_qa_accuracy"]),
                     _num(u["neighbour_qa_accuracy"]), _num(u["retain_perplexity"], 2),
                     _num(u.get("attack_worst_leak_rate")), _num(u.get("mia_auc_loss")),
                     f"{r['train']['seconds']:.0f} s", f"{r['run_seconds']:.0f} s", "yes" if ok else "no"])
    return {"columns": list(COMPARE_COLUMNS), "rows": rows, "passing": passing,
            "n_known": base.get("n_known_target_probes")}


def _markdown_table(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
