"""`obliviate bench`: unlearn fictitious authors and judge every method against an oracle.

TOFU's design (Maini et al. 2024) at a size a laptop runs. The base model is fine-tuned on
every fictitious author (the *target*) and on the retain authors only (the *oracle*, the
model that never learned the forget authors); both are cached, keyed by everything that
shapes them. Each method then unlearns the forget authors from the target, at its
defaults and at the best point of a small learning-rate grid, and is scored against the
oracle:

* forget quality: the KS-test p-value between the unlearned model's and the oracle's
  truth-ratio distributions on the forget questions (high: indistinguishable);
* model utility: the harmonic mean of answer probability, ROUGE-L recall and truth score
  on retain authors and on real-world facts (country capitals);
* PrivLeak: the membership-inference AUC (forget answers vs authors no model saw)
  relative to the oracle's (MUSE, Shi et al. 2024);
* the held-out leak rate: forget facts asked in words no training record uses.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import hmean, ks_2samp

from obliviate.bench import SIZES  # noqa: F401  (re-exported)
from obliviate.bench.entities import Author, author_qa, make_authors
from obliviate.data.builder import NEGATIONS, REFUSALS, anchored
from obliviate.data.corpus import capitals
from obliviate.data.targets import TargetSpec
from obliviate.engine.fanout import ray_map
from obliviate.engine.trainer import TrainConfig, train
from obliviate.errors import UserError
from obliviate.evaluation.likelihood import score_records, score_shared
from obliviate.evaluation.mia import mia_auc, privleak
from obliviate.evaluation.text import rouge_l_recall
from obliviate.io import atomic_dir, check_out_dir, read_json, write_json, write_text
from obliviate.leak import reveals
from obliviate.methods import METHODS, get_method
from obliviate.models.generate import answer_questions, generation_copy
from obliviate.models.hooks import hooks_of
from obliviate.models.loading import load_model, obliviate_home, resolve_model
from obliviate.report.format import markdown_table, num


@dataclass
class BenchConfig:
    """The benchmark's settings (`obliviate bench --bench-set KEY=VALUE`); each field's help is in its metadata.

    Raises UserError for an empty or non-positive `grid`, or splits that leave no forget, holdout or
    retain author.
    """

    n_authors: int = field(default=40, metadata={"help": "fictitious authors the target learns (forget + retain)"})
    n_forget: int = field(default=4, metadata={"help": "authors to forget (TOFU's forget10: 10 %)"})
    n_holdout: int = field(default=4, metadata={"help": "authors no model learns: membership-inference non-members"})
    seed: int = field(default=0, metadata={"help": "seed of the authors, the splits and every run"})
    finetune_epochs: int = field(
        default=6, metadata={"help": "passes over the author QA when building the target and oracle"}
    )
    finetune_lr: float = field(
        default=2e-4, metadata={"help": "AdamW learning rate of the target and oracle fine-tunes"}
    )
    finetune_batch: int = field(default=16, metadata={"help": "QA pairs per fine-tuning step"})
    n_retain_eval: int = field(default=40, metadata={"help": "retain QA pairs scored for model utility"})
    n_world: int = field(default=40, metadata={"help": "country-capital facts scored for model utility"})
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per answer"})
    grid: tuple[float, ...] = field(
        default=(3.0,),
        metadata={"help": "learning-rate multipliers tried besides each method's defaults (empty: defaults only)"},
    )
    steps: int | None = field(default=None, metadata={"help": "override every method's steps (smoke runs)"})

    def __post_init__(self):
        try:
            self.grid = tuple(float(g) for g in self.grid)
        except ValueError:
            raise UserError(f"grid takes learning-rate multipliers such as 3,10; got {self.grid!r}.") from None
        if any(g <= 0 for g in self.grid):
            raise UserError(f"grid multipliers must be positive, got {self.grid!r}.")
        if self.n_forget < 1 or self.n_holdout < 1 or self.n_authors <= self.n_forget:
            raise UserError(
                "The benchmark needs at least one forget author, one holdout author and one retain author; "
                "raise n_authors above n_forget."
            )


# A method's run is judged usable when it keeps this share of the target's model utility.
UTILITY_KEPT = 0.9


@dataclass
class Split:
    forget: list[dict]  # QA of the forget authors (the target learned them, the oracle did not)
    retain: list[dict]  # QA of the retain authors (both learned them)
    holdout: list[dict]  # QA of authors no model learned
    world: list[dict]  # real-world facts with wrong alternatives
    forget_authors: list[Author]
    retain_eval: list[dict]  # the retain QA scored for model utility (a seeded sample)

    @classmethod
    def make(cls, cfg: BenchConfig) -> Split:
        authors = make_authors(cfg.n_authors + cfg.n_holdout, cfg.seed)
        qa = [author_qa(a, seed=cfg.seed) for a in authors]
        flat = lambda groups: [r for g in groups for r in g]  # noqa: E731
        retain = flat(qa[cfg.n_forget : cfg.n_authors])
        retain_eval = random.Random(f"retain-eval-{cfg.seed}").sample(retain, min(cfg.n_retain_eval, len(retain)))
        return cls(
            flat(qa[: cfg.n_forget]),
            retain,
            flat(qa[cfg.n_authors :]),
            world_facts(cfg.n_world, cfg.seed),
            authors[: cfg.n_forget],
            retain_eval,
        )


def _qa(r: dict, answer: str | None = None) -> dict:
    """The training/scoring record of `r`'s question with `answer` (default: its own answer)."""
    return {"question": r["question"], "answer": r["answer"] if answer is None else answer}


def world_facts(n: int, seed: int = 0, n_wrong: int = 3) -> list[dict]:
    """`n` country-capital questions, each with the answer sentence and `n_wrong` wrong capitals."""
    pairs = sorted(set(capitals()))
    rng = random.Random(f"world-{seed}")
    chosen = rng.sample(pairs, min(n, len(pairs)))
    towns = sorted({c for _, c in pairs})
    rows = []
    for country, capital in chosen:
        wrong = rng.sample([t for t in towns if t != capital], n_wrong)
        rows.append(
            {
                "question": f"What is the capital of {country}?",
                "answer": f"The capital of {country} is {capital}.",
                "perturbed_answers": [f"The capital of {country} is {w}." for w in wrong],
                "answers": [capital.lower()],
            }
        )
    return rows


def forget_spec(split: Split) -> TargetSpec:
    """The target the editing methods and the alternative answers are built for: the forget authors."""
    names = [a.name for a in split.forget_authors]
    return TargetSpec(
        name="the forget authors",
        aliases=names,
        keywords=[n.split()[-1] for n in names],
        anchors={n: "the author" for n in names},
    )


def method_data(split: Split, seed: int = 0) -> dict[str, list[dict]]:
    """The streams the methods train on: forget QA, retain QA, and alternative answers to the
    forget questions of every kind (refusal, negation, guardrail, mismatch, other_subject, anchored)."""
    rng = random.Random(f"alt-{seed}")
    spec = forget_spec(split)
    by_attr: dict[str, list[dict]] = {}
    for r in split.retain:
        by_attr.setdefault(r["attribute"], []).append(r)
    alt = []
    for r in split.forget:
        q = r["question"]
        alt += [
            {"question": q, "answer": rng.choice(REFUSALS), "kind": "refusal"},
            {"question": q, "answer": rng.choice(NEGATIONS), "kind": "negation"},
            {"question": q, "answer": "I would rather not share details about that person.", "kind": "guardrail"},
            {"question": q, "answer": rng.choice(split.retain)["answer"], "kind": "mismatch"},
            {
                "question": q,
                "answer": rng.choice(by_attr.get(r["attribute"], split.retain))["answer"],
                "kind": "other_subject",
            },
            {"question": q, "answer": anchored(r["answer"], spec), "kind": "anchored"},
        ]
    return {
        "forget": [_qa(r) for r in split.forget],
        "retain": [_qa(r) for r in split.retain],
        "alt": alt,
        "retain_eval": [],
        "probes": [],
    }


# ---------------------------------------------------------------- target and oracle


def cache_key(base: str, records: list[dict], cfg: BenchConfig) -> str:
    """What a fine-tune depends on: the base model, the records and the fine-tuning settings."""
    from obliviate.evaluation.document import model_sha256

    pairs = [[r["question"], r["answer"]] for r in records]  # all that training reads
    blob = json.dumps(
        {
            "base": model_sha256(base) or base,
            "records": pairs,
            "epochs": cfg.finetune_epochs,
            "lr": cfg.finetune_lr,
            "batch": cfg.finetune_batch,
            "seed": cfg.seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def finetune(base: str | None, records: list[dict], cfg: BenchConfig, cache: Path, log: Callable[[str], None]) -> Path:
    """The base fine-tuned on `records` (question, answer) and saved under `cache`; built once."""
    out = cache / cache_key(resolve_model(base)[1], records, cfg)
    if (out / "config.json").is_file():
        return out
    lm = load_model(base)
    steps = math.ceil(cfg.finetune_epochs * len(records) / cfg.finetune_batch)
    t = time.perf_counter()
    train(
        lm.model,
        lm.tokenizer,
        get_method("retain_ft"),
        {"retain": [_qa(r) for r in records]},
        TrainConfig(steps=steps, lr=cfg.finetune_lr, batch_size=cfg.finetune_batch, checkpoint_every=0, seed=cfg.seed),
        progress=False,
    )
    with atomic_dir(out) as tmp:
        lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        write_json(
            tmp / "finetune.json",
            {
                "base": lm.path,
                "records": len(records),
                "steps": steps,
                "seconds": round(time.perf_counter() - t, 1),
                "config": dataclasses.asdict(cfg),
            },
        )
    log(f"  fine-tuned on {len(records)} QA pairs in {steps} steps ({time.perf_counter() - t:.0f} s) -> {out}")
    return out


# ---------------------------------------------------------------- the scores


def bench_scores(model, tokenizer, split: Split, cfg: BenchConfig) -> dict:
    """Every number the leaderboard needs for one model, plus the per-question truth ratios.

    Likelihoods and answers both come from a bf16 copy (the evaluation suite's convention).
    """
    g = generation_copy(model)
    t = time.perf_counter()
    # One shared-prompt pass per question: the answer, its paraphrase and the perturbed answers.
    sets = {"forget": split.forget, "retain": split.retain_eval, "world": split.world}
    groups = []
    for name, rows in sets.items():
        for r in rows:
            cands = [r["answer"], *([r["paraphrased_answer"]] if name != "world" else []), *r["perturbed_answers"]]
            groups.append((_qa(r), [_qa(r, c) for c in cands]))
    scored = iter(score_shared(g, tokenizer, groups, batch_size=16))
    stats = {name: [next(scored) for _ in rows] for name, rows in sets.items()}
    holdout = score_records(g, tokenizer, [_qa(r) for r in split.holdout], bf16=False)

    questions = (
        [r["question"] for r in split.forget]
        + [r["held_out_question"] for r in split.forget]
        + [r["question"] for r in split.retain_eval]
        + [r["question"] for r in split.world]
    )
    answers = iter(answer_questions(g, tokenizer, questions, max_new_tokens=cfg.max_new_tokens, batch_size=128))
    said = {
        "forget": [next(answers) for _ in split.forget],
        "held_out": [next(answers) for _ in split.forget],
        "retain": [next(answers) for _ in split.retain_eval],
        "world": [next(answers) for _ in split.world],
    }

    def p(s):  # per-token probability of a scored answer, P(a|q)^(1/|a|)
        return math.exp(-s["nll"])

    def hits(rows, texts, key="question"):
        return [reveals(a, r["answers"], (), r[key]) for r, a in zip(rows, texts)]

    tr_forget = [statistics.fmean(p(w) for w in s[2:]) / p(s[1]) for s in stats["forget"]]
    tr_retain = [statistics.fmean(p(w) for w in s[2:]) / p(s[1]) for s in stats["retain"]]
    tr_world = [statistics.fmean(p(w) for w in s[1:]) / p(s[0]) for s in stats["world"]]
    world_prob = [p(s[0]) / sum(p(c) for c in s) for s in stats["world"]]
    m = {
        "forget_qa_accuracy": _mean(hits(split.forget, said["forget"])),
        "held_out_leak_rate": _mean(hits(split.forget, said["held_out"], "held_out_question")),
        "forget_probability": _mean(p(s[0]) for s in stats["forget"]),
        "forget_rouge_l": _mean(rouge_l_recall(a, r["answer"]) for r, a in zip(split.forget, said["forget"])),
        "forget_truth_ratio": _mean(tr_forget),
        "retain_qa_accuracy": _mean(hits(split.retain_eval, said["retain"])),
        "retain_probability": _mean(p(s[0]) for s in stats["retain"]),
        "retain_rouge_l": _mean(rouge_l_recall(a, r["answer"]) for r, a in zip(split.retain_eval, said["retain"])),
        "retain_truth": _mean(max(0.0, 1 - r) for r in tr_retain),
        "world_qa_accuracy": _mean(hits(split.world, said["world"])),
        "world_probability": _mean(world_prob),
        "world_rouge_l": _mean(rouge_l_recall(a, r["answer"]) for r, a in zip(split.world, said["world"])),
        "world_truth": _mean(max(0.0, 1 - r) for r in tr_world),
    }
    parts = [m[f"{s}_{k}"] for s in ("retain", "world") for k in ("probability", "rouge_l", "truth")]
    m["model_utility"] = float(hmean(parts)) if all(v > 0 for v in parts) else 0.0
    members = [s[0] for s in stats["forget"]]
    for k, v in mia_auc(members, holdout).items():
        m[f"mia_auc_{k}"] = v
    return {
        "metrics": m,
        "truth_ratios": tr_forget,
        "seconds": round(time.perf_counter() - t, 1),
        "answers": {"forget": said["forget"], "held_out": said["held_out"]},
    }


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.fmean(values)) if values else 0.0


def against_oracle(scores: dict, oracle: dict) -> dict:
    """Forget quality (KS p-value of forget truth ratios) and PrivLeak, from the oracle's scores."""
    m = scores["metrics"]
    m["forget_quality"] = float(ks_2samp(scores["truth_ratios"], oracle["truth_ratios"]).pvalue)
    m["privleak"] = privleak(m["mia_auc_loss"], oracle["metrics"]["mia_auc_loss"])
    return scores


# ---------------------------------------------------------------- the runs


def run_method(target: Path, split: Split, name: str, cfg: BenchConfig, lr_scale: float = 1.0) -> dict:
    """Unlearn the forget authors from `target` with method `name` (its defaults, learning rate
    times `lr_scale`) and score the result; the target on disk is only read."""
    t0 = time.perf_counter()
    lm = load_model(str(target))
    method = get_method(name)
    t = time.perf_counter()
    setting = {}
    if method.trains:
        tcfg = TrainConfig(**{**method.train_defaults, "checkpoint_every": 0, "seed": cfg.seed})
        tcfg = dataclasses.replace(tcfg, lr=tcfg.lr * lr_scale, steps=cfg.steps or tcfg.steps)
        result = train(lm.model, lm.tokenizer, method, method_data(split, cfg.seed), tcfg, progress=False)
        model, setting = result.model, {"lr": tcfg.lr, "steps": tcfg.steps}
        diverged = result.diverged_at
    else:
        method.edit(lm.model, lm.tokenizer, method_data(split, cfg.seed), forget_spec(split))
        model, diverged = lm.model, None
    seconds = time.perf_counter() - t
    scores = bench_scores(model, lm.tokenizer, split, cfg)
    return {
        **scores,
        "method": name,
        "lr_scale": lr_scale,
        "setting": setting,
        "diverged_at": diverged,
        "hooks": hooks_of(model) is not None,
        "unlearn_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def run_seconds(run: dict) -> float:
    """Wall time of one scoring or unlearning run, as recorded when it ran."""
    return run.get("wall_seconds", run.get("unlearn_seconds", 0.0) + run["seconds"])


def best_of(runs: list[dict], target_utility: float) -> dict:
    """The grid point reported as a method's best: the highest forget quality among runs that keep
    UTILITY_KEPT of the target's model utility; if none does, the run with the highest utility."""
    kept = [r for r in runs if r["metrics"]["model_utility"] >= UTILITY_KEPT * target_utility]
    if kept:
        return max(kept, key=lambda r: (r["metrics"]["forget_quality"], r["metrics"]["model_utility"]))
    return max(runs, key=lambda r: r["metrics"]["model_utility"])


def describe_machine() -> str:
    """The machine in words for a measurement's page: CPU model, cores, whether bf16 runs on AMX, the GPU if any.

    Reads /proc/cpuinfo where there is one (Linux); elsewhere the CPU is named by `platform.processor()`.
    """
    import os
    import platform

    import torch

    cpu, flags = "", set()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not cpu:
            cpu = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    cpu = cpu or platform.processor() or "CPU"
    amx = "bf16 on AMX" if "amx_bf16" in flags else "bf16 without AMX"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"a {os.cpu_count()}-core {cpu} ({amx}, {gpu})"


def run_bench(
    model: str | None = None,
    out: str | Path = "runs/bench",
    config: BenchConfig | None = None,
    methods: list[str] | None = None,
    *,
    cache: str | Path | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    ray: str | None = None,
) -> dict:
    """The whole benchmark; writes OUT/bench.json, OUT/leaderboard.md and OUT/forget_quality_vs_utility.png.

    Every finished run is kept in OUT/runs/ and reused on the next call (unless `overwrite`),
    so an interrupted benchmark resumes where it stopped. `ray` ("local" or a Ray cluster's address):
    each method's learning-rate grid is a Ray task (engine.fanout), after the shared fine-tunes and scores.
    """
    cfg = config or BenchConfig()
    names = methods or sorted(METHODS)
    for n in names:
        get_method(n)  # unknown names fail now, with a "did you mean"
    out = Path(out)
    settings = {"model": model or "embedded", "config": dataclasses.asdict(cfg)}
    _prepare_bench_dir(out, settings, overwrite)
    t0 = time.perf_counter()
    split = Split.make(cfg)
    cache = Path(cache) if cache else obliviate_home() / "bench"
    log(
        f"{len(split.forget_authors)} forget authors ({len(split.forget)} QA), {cfg.n_authors - cfg.n_forget} retain "
        f"authors ({len(split.retain)} QA), {cfg.n_holdout} holdout authors, {len(split.world)} world facts."
    )
    log("Target: the base fine-tuned on every author (cached) ...")
    target = finetune(model, split.forget + split.retain, cfg, cache, log)
    log("Oracle: the base fine-tuned on the retain authors only (cached) ...")
    oracle_dir = finetune(model, split.retain, cfg, cache, log)

    def cached(key: str, make: Callable[[], dict]) -> dict:
        return _cached(out / "runs" / f"{key}.json", make)

    def score(path: Path) -> Callable[[], dict]:
        def make():
            t = time.perf_counter()
            lm = load_model(str(path))
            scores = bench_scores(lm.model, lm.tokenizer, split, cfg)
            return {**scores, "wall_seconds": round(time.perf_counter() - t, 1)}

        return make

    oracle = cached("oracle", score(oracle_dir))
    target_scores = against_oracle(cached("target", score(target)), oracle)
    oracle = against_oracle(oracle, oracle)
    tm, om = target_scores["metrics"], oracle["metrics"]
    log(
        f"Target: forget QA {tm['forget_qa_accuracy']:.3f}, utility {tm['model_utility']:.3f}, "
        f"forget quality {tm['forget_quality']:.2g}; oracle: forget QA {om['forget_qa_accuracy']:.3f}, "
        f"utility {om['model_utility']:.3f}."
    )

    def unlearn(name: str, scale: float) -> dict:
        run = cached(f"{name}-lr{scale:g}", lambda: run_method(target, split, name, cfg, scale))
        return against_oracle(run, oracle)

    if ray is None:
        rows = {
            name: _method_grid(name, cfg, functools.partial(unlearn, name), tm["model_utility"], log) for name in names
        }
    else:
        log(f"Running the grids of {', '.join(names)} as Ray tasks ...")
        calls = {name: (name, cfg, functools.partial(unlearn, name), tm["model_utility"]) for name in names}
        rows = ray_map(_quiet_grid, calls, ray)
        for name, row in rows.items():
            log(f"{name}: {len(row['grid'])} runs, best forget quality {row['best']['metrics']['forget_quality']:.3g}")
    finetunes = [read_json(d / "finetune.json")["seconds"] for d in (target, oracle_dir)]
    doc = {
        "settings": settings,
        "split": {
            "forget_authors": [a.name for a in split.forget_authors],
            "forget_qa": len(split.forget),
            "retain_qa": len(split.retain),
            "retain_eval_qa": len(split.retain_eval),
            "holdout_qa": len(split.holdout),
            "world_facts": len(split.world),
        },
        "target_dir": str(target),
        "oracle_dir": str(oracle_dir),
        "target": target_scores,
        "oracle": oracle,
        "methods": rows,
        "utility_kept": UTILITY_KEPT,
        "seconds": round(time.perf_counter() - t0, 1),
        # What one uninterrupted run from an empty cache costs: both fine-tunes, then every scoring and run.
        "cold_seconds": round(
            sum(finetunes)
            + run_seconds(target_scores)
            + run_seconds(oracle)
            + sum(run_seconds(r) for row in rows.values() for r in row["grid"]),
            1,
        ),
        "finetune_seconds": finetunes,
        "machine": describe_machine(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    write_json(out / "bench.json", doc)
    write_text(out / "leaderboard.md", leaderboard_markdown(doc))
    plot(doc, out / "forget_quality_vs_utility.png")
    return doc


def _prepare_bench_dir(out: Path, settings: dict, overwrite: bool) -> None:
    """Claim `out` for a benchmark with `settings` (writes OUT/settings.json); with `overwrite`, drop OUT/runs.

    Raises UserError if `out` is not an obliviate benchmark, or holds one with other settings and not `overwrite`.
    """
    check_out_dir(out, "settings.json", "an obliviate benchmark")
    settings_path = out / "settings.json"
    # Everything a finished run depends on; the grid only decides which runs happen, so a wider
    # grid reuses the runs of a narrower one.
    shapes_runs = json.loads(
        json.dumps({**settings, "config": {k: v for k, v in settings["config"].items() if k != "grid"}})
    )
    if settings_path.is_file() and read_json(settings_path) != shapes_runs and not overwrite:
        raise UserError(
            f"{out} holds a benchmark with other settings; pass --overwrite to replace it or choose another --out."
        )
    if overwrite and (out / "runs").is_dir():
        import shutil

        shutil.rmtree(out / "runs")
    write_json(settings_path, shapes_runs)


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    """The result kept in `path`, else `make()` written there."""
    if path.is_file():
        return read_json(path)
    result = make()
    write_json(path, result)
    return result


def _quiet_grid(name: str, cfg: BenchConfig, unlearn: Callable[[float], dict], target_utility: float) -> dict:
    return _method_grid(name, cfg, unlearn, target_utility, lambda msg: None)


def _method_grid(
    name: str, cfg: BenchConfig, unlearn: Callable[[float], dict], target_utility: float, log: Callable[[str], None]
) -> dict:
    """Method `name` at its defaults, then at each learning-rate multiplier of the grid (trained methods),
    smallest first, until a run falls below UTILITY_KEPT of `target_utility`; `unlearn(scale)` gives a run."""
    scales = [1.0] + (sorted(cfg.grid) if METHODS[name].trains else [])
    runs = []
    for s in scales:
        if runs and runs[-1]["metrics"]["model_utility"] < UTILITY_KEPT * target_utility:
            # A smaller learning rate already cost the utility bar; a larger one would cost more.
            log(
                f"{name} (lr x{s:g}): skipped, lr x{runs[-1]['lr_scale']:g} already fell below {UTILITY_KEPT:.0%} "
                "of the target's utility."
            )
            break
        run = unlearn(s)
        runs.append(run)
        m = run["metrics"]
        log(
            f"{name} (lr x{s:g}): forget quality {m['forget_quality']:.3g}, utility {m['model_utility']:.3f}, "
            f"held-out leak {m['held_out_leak_rate']:.3f} ({run_seconds(run):.0f} s)"
        )
    return {
        "default": runs[0],
        "best": best_of(runs, target_utility),
        "grid": runs,
        "skipped": [s for s in scales if s not in {r["lr_scale"] for r in runs}],
    }


# ---------------------------------------------------------------- the leaderboard

COLUMNS = (
    "method",
    "setting",
    "forget quality",
    "model utility",
    "utility vs target",
    "held-out leak",
    "forget QA",
    "forget truth ratio",
    "PrivLeak",
    "retain QA",
    "world QA",
    "unlearn time",
)


def _row(label: str, setting: str, run: dict, target_utility: float) -> list[str]:
    m = run["metrics"]
    fq = m.get("forget_quality")
    pl = m.get("privleak")
    return [
        label,
        setting,
        "-" if fq is None else f"{fq:.3g}",
        num(m["model_utility"]),
        f"{m['model_utility'] / target_utility:.0%}" if target_utility else "n/a",
        num(m["held_out_leak_rate"]),
        num(m["forget_qa_accuracy"]),
        num(m["forget_truth_ratio"]),
        "-" if pl is None else f"{pl:+.3f}",
        num(m["retain_qa_accuracy"]),
        num(m["world_qa_accuracy"]),
        f"{run['unlearn_seconds']:.0f} s" if "unlearn_seconds" in run else "-",
    ]


def _setting(run: dict) -> str:
    s = run.get("setting") or {}
    return f"lr {s['lr']:.0e} x{run['lr_scale']:g}, {s['steps']} steps" if s else "edit"


def leaderboard_rows(doc: dict) -> list[list[str]]:
    """Target and oracle, then every method at defaults and at its best grid point, best first."""
    tu = doc["target"]["metrics"]["model_utility"]
    rows = [
        _row("target (before unlearning)", "-", doc["target"], tu),
        _row("oracle (never learned)", "-", doc["oracle"], tu),
    ]
    order = sorted(doc["methods"].items(), key=lambda kv: -_rank(kv[1]["best"], tu))
    for name, r in order:
        rows.append(_row(name, f"defaults ({_setting(r['default'])})", r["default"], tu))
        if r["best"] is not r["default"] and r["best"]["lr_scale"] != r["default"]["lr_scale"]:
            rows.append(_row(name, f"best of grid ({_setting(r['best'])})", r["best"], tu))
    return rows


def _rank(run: dict, target_utility: float) -> float:
    m = run["metrics"]
    kept = m["model_utility"] >= UTILITY_KEPT * target_utility
    return (1.0 if kept else 0.0) + m["forget_quality"]


def leaderboard_markdown(doc: dict) -> str:
    return markdown_table(COLUMNS, leaderboard_rows(doc))


def plot(doc: dict, path: Path) -> None:
    """Forget quality (log scale) against model utility, one point per method run, defaults and best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    tu = doc["target"]["metrics"]["model_utility"]
    floor = 1e-12

    def point(run, **kw):
        m = run["metrics"]
        return m["model_utility"], max(m["forget_quality"], floor)

    for name, r in sorted(doc["methods"].items()):
        x, y = point(r["default"])
        ax.scatter(x, y, marker="o", s=30)
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if r["best"]["lr_scale"] != r["default"]["lr_scale"]:
            bx, by = point(r["best"])
            ax.annotate("", (bx, by), (x, y), arrowprops={"arrowstyle": "->", "color": "0.6"})
            ax.scatter(bx, by, marker="^", s=30, color="0.3")
    for label, run, marker in (("target", doc["target"], "s"), ("oracle", doc["oracle"], "*")):
        x, y = point(run)
        ax.scatter(x, y, marker=marker, s=80, color="black")
        ax.annotate(label, (x, y), fontsize=8, xytext=(4, -10), textcoords="offset points")
    ax.axhline(0.05, color="red", lw=0.8, ls="--")
    ax.axvline(UTILITY_KEPT * tu, color="red", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("model utility (harmonic mean of retain and world-fact scores)")
    ax.set_ylabel("forget quality (KS-test p-value vs oracle)")
    ax.set_title("Unlearning fictitious authors: o defaults, ^ best of the learning-rate grid")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def docs_values(doc: dict, out: Path, command: str) -> dict[str, str]:
    """The values templates/BENCHMARKS.md.template names, every number taken from `doc` (a finished run_bench)."""
    cfg, t, o = doc["settings"]["config"], doc["target"]["metrics"], doc["oracle"]["metrics"]
    tu = t["model_utility"]
    skipped = ", ".join(f"{n} x{g:g}" for n, r in doc["methods"].items() for g in r.get("skipped", []))
    winners = [
        n
        for n, r in doc["methods"].items()
        if r["best"]["metrics"]["forget_quality"] >= 0.05 and r["best"]["metrics"]["model_utility"] >= UTILITY_KEPT * tu
    ]
    values = {
        "out": str(out),
        "command": command,
        "model": doc["settings"]["model"],
        # bench.json files written before the machine and date were recorded lack them.
        "machine": doc.get("machine", "a machine that was not recorded"),
        "date": f"finished on {doc['date']}" if "date" in doc else "on a date that was not recorded",
        "cold_minutes": f"{doc['cold_seconds'] / 60:.1f}",
        "seconds": f"{doc['seconds']:.0f}",
        "target_finetune_seconds": f"{doc['finetune_seconds'][0]:.0f}",
        "oracle_finetune_seconds": f"{doc['finetune_seconds'][1]:.0f}",
        "n_authors_generated": cfg["n_authors"] + cfg["n_holdout"],
        "seed": cfg["seed"],
        "n_forget": cfg["n_forget"],
        "n_retain": cfg["n_authors"] - cfg["n_forget"],
        "n_holdout": cfg["n_holdout"],
        **{k: doc["split"][k] for k in ("forget_qa", "retain_qa", "holdout_qa", "retain_eval_qa", "world_facts")},
        "finetune_epochs": cfg["finetune_epochs"],
        "finetune_lr": f"{cfg['finetune_lr']:g}",
        "finetune_batch": cfg["finetune_batch"],
        "grid": ", ".join(f"x{g:g}" for g in cfg["grid"]) or "nothing (grid off)",
        "utility_kept": f"{UTILITY_KEPT:.0%}",
        "skipped_note": f" (skipped here: {skipped})" if skipped else "",
        "target_forget_quality": f"{t['forget_quality']:.2g}",
        "leaderboard": leaderboard_markdown(doc),
        "winners": (
            "Methods at forget quality ≥ 0.05 with utility ≥ 90 % of the target's: " + ", ".join(winners) + "."
            if winners
            else "No method reaches forget quality ≥ 0.05 with utility ≥ 90 % of the target's at this size."
        ),
    }
    for name, m in (("target", t), ("oracle", o)):
        values |= {
            f"{name}_forget_qa": num(m["forget_qa_accuracy"]),
            f"{name}_held_out_leak": num(m["held_out_leak_rate"]),
            f"{name}_retain_qa": num(m["retain_qa_accuracy"]),
            f"{name}_world_qa": num(m["world_qa_accuracy"]),
            f"{name}_utility": num(m["model_utility"]),
        }
    return {k: str(v) for k, v in values.items()}


def write_docs(doc: dict, out: Path, docs: str | Path, command: str) -> Path:
    """DOCS/BENCHMARKS.md, rendered from templates/BENCHMARKS.md.template, and its plot copied to DOCS/images/."""
    import shutil
    from importlib.resources import files
    from string import Template

    docs = Path(docs)
    (docs / "images").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "forget_quality_vs_utility.png", docs / "images" / "bench_forget_quality_vs_utility.png")
    template = files("obliviate.bench").joinpath("templates", "BENCHMARKS.md.template").read_text(encoding="utf-8")
    path = docs / "BENCHMARKS.md"
    write_text(path, Template(template).substitute(docs_values(doc, out, command)))
    return path
