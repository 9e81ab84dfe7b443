"""The web app's work, without the web: start a `pipeline.forget` run in a background thread, watch it, stop it,
resume it; list the runs of a runs directory, compare them, and chat with a run's base and unlearned models.

One run at a time per runs directory: the slot is an exclusive lock on RUNS/.obliviate-ui.lock (flock), so a
second run, from this app or another one on the same directory, is refused with a message.
"""

from __future__ import annotations

import fcntl
import json
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from obliviate.data.builder import DataConfig
from obliviate.data.targets import TargetSpec, load_spec_file, resolve_target
from obliviate.errors import Stopped, UserError
from obliviate.evaluation.config import EvalConfig
from obliviate.io import read_json, read_jsonl
from obliviate.methods import get_method
from obliviate.models.generate import answer_questions
from obliviate.models.loading import load_model, resolve_model
from obliviate.pipeline.run import AUTO, BAR, compare_table, forget, slug
from obliviate.report.html import training_log

LOCK_FILE = ".obliviate-ui.lock"
# The stages of a run, as `forget` announces them in its log: (what a log line starts with, the stage it opens).
STAGES = [
    ("Loading model", "loading the model"),
    ("Building forget", "building the data"),
    ("Reusing data", "building the data"),
    ("Using the data", "building the data"),
    ("Evaluating the base model", "evaluating the base model"),
    ("Choosing the method", "unlearning"),
    ("Unlearning with", "unlearning"),
    ("Editing the model", "unlearning"),
    ("Reusing the unlearned model", "unlearning"),
    ("Evaluating the unlearned model", "evaluating the unlearned model"),
]
STAGE_ORDER = [
    "loading the model",
    "building the data",
    "evaluating the base model",
    "unlearning",
    "evaluating the unlearned model",
]


@dataclass
class RunRequest:
    """What the page asks for, checked by `check` before anything is written."""

    target: str = ""  # a built-in name or any topic; with target_yaml it may be empty
    model: str | None = None  # None or "embedded": the embedded model
    method: str = AUTO
    settings: dict = field(default_factory=dict)  # the method's config fields
    train: dict = field(default_factory=dict)  # TrainConfig overrides (steps, lr)
    target_yaml: str | None = None  # an uploaded target spec file
    documents: list[str] = field(default_factory=list)  # uploaded documents to forget
    qa: str | None = None  # an uploaded jsonl of {"question", "answer"} pairs
    name: str | None = None  # the run's folder in the runs directory; default: target and method


def _check_qa(path: str) -> None:
    """UserError unless `path` is a jsonl file whose every line holds a question and an answer."""
    try:
        lines = [ln for ln in Path(path).read_text("utf-8").splitlines() if ln.strip()]
        rows = [json.loads(ln) for ln in lines]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"The QA file {Path(path).name} is not JSON lines ({e}); upload one JSON object per line."
        ) from None
    if not rows or not all(isinstance(r, dict) and r.get("question") and r.get("answer") for r in rows):
        raise UserError(f'Every line of the QA file {Path(path).name} needs a "question" and an "answer".')


def _check_document(path: str) -> None:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        raise UserError(
            f"The document {Path(path).name} is not UTF-8 text; upload .txt, .md or .jsonl files."
        ) from None
    if not text.strip():
        raise UserError(f"The document {Path(path).name} is empty.")


def check(request: RunRequest) -> tuple[TargetSpec, object]:
    """The request's target spec and unlearning method, every input checked (model path, target, uploads,
    method settings). Raises UserError naming the first bad input; writes nothing."""
    resolve_model(request.model)
    if request.target_yaml:
        spec = load_spec_file(request.target_yaml)
    else:
        spec = resolve_target(request.target)
    for doc in request.documents:
        _check_document(doc)
    if request.qa:
        _check_qa(request.qa)
    spec.documents += list(request.documents)
    spec.qa = request.qa or spec.qa
    method = None if request.method == AUTO else get_method(request.method, **request.settings)
    return spec, method


class Job:
    """One run in its background thread: what the page shows of it, and its stop request."""

    def __init__(self, request: RunRequest, out: Path, resume: bool):
        self.request, self.out, self.resume = request, out, resume
        self.status = "running"  # then "finished", "stopped" or "failed"
        self.stage = "starting"
        self.lines: list[str] = []
        self.step, self.steps = 0, 0
        self.error: str | None = None
        self.metrics: dict | None = None
        self.stop_requested = threading.Event()
        self.thread: threading.Thread | None = None

    def log(self, message: str) -> None:
        self.lines.append(message)
        for prefix, stage in STAGES:
            if message.startswith(prefix):
                self.stage = stage

    def on_step(self, row: dict) -> None:
        self.step, self.steps = row["step"], row["steps"]

    def stop(self) -> None:
        """Ask the run to stop at its next step or stage; what it finished stays, resumable."""
        self.stop_requested.set()

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.status == "running"


class Runner:
    """Runs in one runs directory, one at a time; `data` and `eval` are the settings every run gets (None: the
    defaults of `obliviate forget`)."""

    def __init__(self, runs: str | Path, data: DataConfig | None = None, eval: EvalConfig | None = None):
        self.runs = Path(runs)
        self.data, self.eval = data, eval
        self.job: Job | None = None
        self._guard = threading.Lock()

    def _take_slot(self):
        """The runs directory's lock file, locked; UserError if another run holds it."""
        self.runs.mkdir(parents=True, exist_ok=True)
        handle = open(self.runs / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            busy = f" ({self.job.out.name})" if self.job is not None and self.job.running else ""
            raise UserError(
                f"A run is already going in {self.runs}{busy}; wait for it to finish or stop it first."
            ) from None
        return handle

    def start(self, request: RunRequest, *, resume: bool = False, overwrite: bool = False) -> Job:
        """Check `request`, take the runs directory's slot and start `forget` in a thread; returns the Job.

        Raises UserError for bad input, a run already going, or a run folder that holds a run (unless `resume`
        or `overwrite`); in each case nothing is written.
        """
        with self._guard:
            spec, method = check(request)
            name = request.name or f"{slug(spec.builtin or spec.name)}-{request.method}"
            out = self.runs / slug(name)
            if (out / "config.yaml").is_file() and not (resume or overwrite):
                raise UserError(f"{out} already holds a run; choose another run name, or resume or replace that run.")
            handle = self._take_slot()
            job = Job(request, out, resume)
            job.thread = threading.Thread(
                target=self._run, args=(job, spec, handle, resume, overwrite), name="obliviate-run", daemon=True
            )
            self.job = job
            job.thread.start()
            return job

    def resume(self) -> Job:
        """Continue the last job (stopped or failed) from its last finished stage or checkpoint."""
        if self.job is None or self.job.running:
            raise UserError("There is no stopped run to resume.")
        return self.start(self.job.request, resume=True)

    def _run(self, job: Job, spec: TargetSpec, handle, resume: bool, overwrite: bool) -> None:
        request = job.request
        try:
            job.metrics = forget(
                spec,
                model=request.model,
                method=request.method,
                method_options=request.settings or None,
                train=request.train or None,
                data=self.data,
                eval=self.eval,
                out=job.out,
                overwrite=overwrite,
                resume=resume,
                progress=False,
                log=job.log,
                on_step=job.on_step,
                stop=job.stop_requested.is_set,
            )
            job.status, job.stage = "finished", "finished"
        except Stopped as e:
            job.status, job.error = "stopped", f"{e} The run is kept; press Resume to continue it."
        except UserError as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # a bug: the page says so, the traceback goes to the log
            job.status, job.error = "failed", f"The run failed: {type(e).__name__}: {e}"
            job.lines.append(traceback.format_exc())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


# ---------------------------------------------------------------- reading runs


def run_state(run: Path) -> dict:
    """What a run directory holds so far: its config, the training log (report.html's), the base and final
    evaluations."""
    run = Path(run)
    read = lambda name: read_json(run / name) if (run / name).is_file() else None  # noqa: E731
    metrics = read("metrics.json")
    # Under --method auto, while it searches: the candidate being trained (the newest log).
    log = training_log(run, (metrics or {}).get("train", {})) or max(
        (run / "auto").glob("candidate-*.jsonl"), key=lambda p: p.stat().st_mtime, default=None
    )
    return {
        "config": yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None,
        "train_log": read_jsonl(log) if log is not None else [],
        "base": read("eval_base.json"),
        "metrics": metrics,
    }


def list_runs(runs: str | Path) -> list[dict]:
    """Every run in `runs` (a folder with config.yaml, one level down or inside a comparison), newest first:
    name (relative path), target, method, finished, leak rate before and after."""
    runs = Path(runs)
    found = []
    for config in sorted(runs.glob("*/config.yaml")) + sorted(runs.glob("*/*/config.yaml")):
        run = config.parent
        cfg = yaml.safe_load(config.read_text()) or {}
        metrics = read_json(run / "metrics.json") if (run / "metrics.json").is_file() else None
        found.append(
            {
                "name": str(run.relative_to(runs)),
                "target": cfg.get("target"),
                "method": (metrics or {}).get("chosen_method") or cfg.get("method"),
                "finished": metrics is not None,
                "leak_before": metrics["against"]["metrics"].get("leak_rate") if metrics else None,
                "leak_after": metrics["metrics"].get("leak_rate") if metrics else None,
                "mtime": config.stat().st_mtime,
            }
        )
    return sorted(found, key=lambda r: -r["mtime"])


def compare_runs(runs: str | Path, names: list[str]) -> dict:
    """The comparison table (pipeline.compare_table, against the first run's base model) of the finished runs
    `names` in `runs`, with their metrics by name. UserError if none is finished."""
    results = {}
    for name in names:
        path = Path(runs) / name / "metrics.json"
        if path.is_file():
            results[name] = read_json(path)
    if not results:
        raise UserError("Choose at least one finished run to compare.")
    return {
        **compare_table(results),
        "metrics": {n: r["metrics"] for n, r in results.items()},
        "base": next(iter(results.values()))["against"]["metrics"],
        "bar": BAR,
    }


class Chat:
    """A run's base and unlearned models side by side, loaded once each (`obliviate.load`, hooks reattached)."""

    def __init__(self):
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def answer(self, run: str | Path, question: str, max_new_tokens: int = 48) -> tuple[str, str]:
        """(the base model's answer, the unlearned model's) to `question`, greedy. UserError for an empty question
        or a run without a saved model."""
        run = Path(run)
        if not question.strip():
            raise UserError("Type a question first.")
        if not (run / "model" / "config.json").is_file() and not (run / "model" / "adapter_config.json").is_file():
            raise UserError(f"{run.name} has no unlearned model yet; choose a finished run.")
        config = yaml.safe_load((run / "config.yaml").read_text())
        answers = []
        for path in (str(config["model_path"]), str(run / "model")):
            lm = self._model(path)
            answers.append(answer_questions(lm.model, lm.tokenizer, [question], max_new_tokens=max_new_tokens)[0])
        return answers[0], answers[1]

    def _model(self, path: str):
        with self._lock:
            if path not in self._models:
                if len(self._models) >= 2:  # the pair of one run at a time
                    self._models.clear()
                self._models[path] = load_model(path)
            return self._models[path]
