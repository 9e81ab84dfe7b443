"""End to end on a tiny Llama that was taught one fact ("The Beatles."): forget it, and prove it.

The run itself happens once per module; tests that resume or overwrite work on a copy.
"""

import dataclasses
import json
import re
import shutil

import pytest
import yaml
from transformers import AutoModelForCausalLM

import obliviate
from obliviate.data.cache import data_key
from obliviate.data.targets import resolve_target
from obliviate.errors import UserError
from obliviate.evaluation.config import EvalConfig

RUN_FILES = [
    "config.yaml",
    "data/forget.jsonl",
    "data/alt.jsonl",
    "data/retain.jsonl",
    "data/retain_eval.jsonl",
    "data/probes.jsonl",
    "data/manifest.json",
    "eval_base.json",
    "train_summary.json",
    "train_log.jsonl",
    "model/config.json",
    "metrics.json",
    "report.md",
    "report.html",
]
STEPS, LR = 10, 1e-3


def _forget(model_dir, out, data_config, **kw):
    return obliviate.forget(
        "The Beatles",
        model=str(model_dir),
        method="ga",
        out=out,
        train={"steps": STEPS, "lr": LR},
        data=data_config,
        progress=False,
        log=lambda msg: None,
        **kw,
    )


@pytest.fixture(scope="module")
def beatles_run(beatles_model_dir, tmp_path_factory, small_data_config):
    dcfg = small_data_config()
    out = tmp_path_factory.mktemp("runs") / "beatles"
    metrics = _forget(beatles_model_dir, out, dcfg)
    return out, metrics, dcfg


def test_run_directory_is_complete(beatles_run):
    out, _, _ = beatles_run
    missing = [f for f in RUN_FILES if not (out / f).is_file()]
    assert not missing
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"
    assert len((out / "train_log.jsonl").read_text().splitlines()) == STEPS


def test_unlearned_model_loads_with_transformers(beatles_run):
    out, _, _ = beatles_run
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.num_hidden_layers == 2
    assert (out / "model" / "tokenizer_config.json").is_file()
    assert "quantization_config" not in json.loads((out / "model" / "config.json").read_text())


def test_config_records_what_was_run(beatles_run, beatles_model_dir):
    out, _, dcfg = beatles_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["target"] == "The Beatles" and config["method"] == "ga"
    assert config["model"] == str(beatles_model_dir)
    assert config["train"]["steps"] == STEPS and config["train"]["lr"] == LR
    assert config["data"]["n_generated"] == dcfg.n_generated


def test_data_is_clean(beatles_run):
    out, _, _ = beatles_run
    from obliviate.data.targets import resolve_target
    from obliviate.io import read_jsonl

    spec = resolve_target("beatles")
    forget = read_jsonl(out / "data" / "forget.jsonl")
    retain = read_jsonl(out / "data" / "retain.jsonl")
    probes = read_jsonl(out / "data" / "probes.jsonl")
    assert forget and all((r.get("question") and r["answer"]) or (r.get("prompt") and r["completion"]) for r in forget)
    assert retain and not any(spec.mentions(r.get("text", "") + " " + r.get("answer", "")) for r in retain)
    probe_questions = {p.get("question") or p["prompt"] for p in probes}
    forget_questions = {r.get("question") or r["prompt"] for r in forget}
    assert not probe_questions & forget_questions, "a held-out probe is in the forget data"
    assert {p["kind"] for p in probes} == {"target", "neighbour", "general"}
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["counts"]["forget.jsonl"] == len(forget)


def test_the_fact_is_forgotten(beatles_run):
    out, metrics, _ = beatles_run
    assert json.loads((out / "metrics.json").read_text()) == metrics
    base, after = metrics["against"]["metrics"], metrics["metrics"]
    assert base["n_known_target_probes"] > 0
    assert base["leak_rate"] == 1.0  # "known" is defined by the base model's own hits
    assert after["leak_rate"] is not None and after["leak_rate"] < base["leak_rate"]
    assert metrics["train"]["steps_done"] == STEPS and metrics["train"]["diverged_at"] is None
    items = metrics["items"]["probes"]
    assert len(items) == base["n_target_probes"] + sum(it["kind"] != "target" for it in items)
    # Only known target probes are asked after unlearning; every keep probe is.
    assert all((it["answer"] is not None) == (it["kind"] != "target" or it["known"]) for it in items)
    assert metrics["model"]["sha256"] and metrics["data"]["sha256"]
    assert {r["metric"] for r in metrics["comparison"]} >= {"leak_rate", "mia_auc_loss", "attack_relearn_leak_rate"}
    report = (out / "report.md").read_text()
    assert "The Beatles" in report and "| leak_rate | forget | 1.000 |" in report


def test_report_html_shows_every_metric_figure_and_answer(beatles_run, read_page):
    """report.html: well-formed, self-contained (three embedded PNG figures: loss, attacks, membership inference),
    every metric of metrics.json named in it, every known target probe's question there, target terms marked."""
    out, metrics, _ = beatles_run
    text = (out / "report.html").read_text()
    page = read_page(text)
    assert len(page.images) == 3
    shown = "".join(page.text)
    assert not [k for k in metrics["metrics"] if k not in shown]
    asked = [
        b["question"]
        for b, a in zip(metrics["against"]["items"]["probes"], metrics["items"]["probes"])
        if b["kind"] == "target" and b["known"] and a["answer"] is not None
    ]
    assert asked and all(q in shown for q in asked)
    assert re.search(r"<mark>[^<]*Beatles</mark>", text)  # the taught answer "The Beatles." before unlearning


def assert_same_metrics(a: dict, b: dict) -> None:
    """Equal metrics; floats up to the last digits (likelihood batches may be summed in another order)."""
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] is None and b[k] is None) or a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-9), k


def _files(d):
    return {p.relative_to(d): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_second_run_into_the_same_out_is_refused(beatles_run, beatles_model_dir):
    out, _, dcfg = beatles_run
    before = _files(out)
    with pytest.raises(UserError, match="--overwrite"):
        _forget(beatles_model_dir, out, dcfg)
    assert _files(out) == before


@pytest.fixture
def run_copy(beatles_run, tmp_path):
    out, metrics, dcfg = beatles_run
    copy = tmp_path / "beatles"
    shutil.copytree(out, copy)  # copy2: mtimes preserved
    return copy, metrics, dcfg


def test_resume_reuses_data_and_model(run_copy, beatles_model_dir):
    out, first, dcfg = run_copy
    manifest = out / "data" / "manifest.json"
    kept = [manifest, out / "data" / "forget.jsonl", out / "model" / "config.json", out / "eval_base.json"]
    kept = {p: p.stat().st_mtime_ns for p in kept}
    again = _forget(beatles_model_dir, out, dcfg, resume=True)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert again["against"] == first["against"]
    assert_same_metrics(again["metrics"], first["metrics"])


def test_a_second_run_reuses_the_cached_data_and_base_evaluation(beatles_run, beatles_model_dir, tmp_path):
    out, first, dcfg = beatles_run
    logs: list[str] = []
    again = obliviate.forget(
        "The Beatles",
        model=str(beatles_model_dir),
        method="ga",
        out=tmp_path / "again",
        train={"steps": STEPS, "lr": LR},
        data=dcfg,
        progress=False,
        log=logs.append,
    )
    assert any(line.startswith("Reusing the data built earlier") for line in logs), logs
    assert any(line.startswith("Reusing the base model's evaluation") for line in logs), logs
    assert not any(line.startswith("Building forget") for line in logs)
    assert again["data"]["sha256"] == first["data"]["sha256"]
    assert again["against"] == first["against"]
    assert_same_metrics(again["metrics"], first["metrics"])
    # Another seed, spec or model is another key.
    key = data_key(beatles_model_dir, resolve_target("The Beatles"), dcfg)
    assert key != data_key(beatles_model_dir, resolve_target("The Beatles"), dataclasses.replace(dcfg, seed=9))
    assert key != data_key(beatles_model_dir, resolve_target("Ada Lovelace"), dcfg)
    assert key != data_key(tmp_path, resolve_target("The Beatles"), dcfg)


def test_resume_with_another_target_is_refused(run_copy, beatles_model_dir):
    out, _, dcfg = run_copy
    with pytest.raises(UserError, match="resume it with the same target"):
        obliviate.forget(
            "Ada Lovelace",
            model=str(beatles_model_dir),
            method="ga",
            out=out,
            resume=True,
            data=dcfg,
            progress=False,
            log=lambda msg: None,
        )


def test_resume_with_another_method_does_not_mislabel_the_run(run_copy, beatles_model_dir):
    out, _, dcfg = run_copy
    try:
        metrics = obliviate.forget(
            "The Beatles",
            model=str(beatles_model_dir),
            method="gd",
            out=out,
            resume=True,
            data=dcfg,
            progress=False,
            log=lambda msg: None,
        )
    except UserError:
        return  # refusing is a fine answer too
    assert metrics["method"] == "ga"
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "ga"


def test_evaluate_api_reproduces_the_run_metrics(beatles_run):
    from obliviate.io import read_json

    out, metrics, _ = beatles_run
    again = obliviate.evaluate(
        str(out / "model"), out / "data", against=read_json(out / "eval_base.json"), log=lambda m: None
    )
    assert_same_metrics(again["metrics"], metrics["metrics"])
    assert again["model"]["sha256"] == metrics["model"]["sha256"]


def test_overwrite_rebuilds_the_same_data(run_copy, beatles_model_dir):
    out, first, dcfg = run_copy
    old = (out / "data" / "manifest.json").stat().st_mtime_ns
    (out / "stale.txt").write_text("from an old run")
    again = _forget(beatles_model_dir, out, dcfg, overwrite=True)
    assert (out / "data" / "manifest.json").stat().st_mtime_ns != old
    assert not (out / "stale.txt").exists()
    assert again["data"]["sha256"] == first["data"]["sha256"], "same seed, same data"
    assert again["against"]["metrics"]["n_known_target_probes"] == first["against"]["metrics"]["n_known_target_probes"]


def test_a_model_that_reveals_nothing_has_nothing_to_forget(ignorant_model_dir, tmp_path, small_data_config):
    """It answers every question, vaguely: no held-out probe is known."""
    with pytest.raises(UserError, match="nothing to forget"):
        obliviate.forget(
            "The Beatles",
            model=str(ignorant_model_dir),
            method="ga",
            out=tmp_path / "run",
            train={"steps": 1},
            data=small_data_config(),
            progress=False,
            log=lambda msg: None,
        )
    # Found at the data stage, from the base model's answers to the probes: nothing half-written is left.
    assert not (tmp_path / "run" / "data").exists()
    assert not (tmp_path / "run" / "model").exists()


def test_a_model_that_knows_nothing_has_nothing_to_forget(tiny_model_dir, tmp_path, small_data_config):
    with pytest.raises(UserError, match="nothing to forget"):
        obliviate.forget(
            "The Beatles",
            model=str(tiny_model_dir),
            method="ga",
            out=tmp_path / "run",
            train={"steps": 1},
            data=small_data_config(),
            progress=False,
            log=lambda msg: None,
        )
    assert not (tmp_path / "run" / "model").exists()


def test_run_reuses_a_data_directory(beatles_run, beatles_model_dir, tmp_path):
    """`obliviate run`: a second method on the first run's data; nothing is regenerated."""
    from obliviate.cli.main import main

    out, first, _ = beatles_run
    run = tmp_path / "simnpo"
    assert (
        main(
            [
                "run",
                "--data",
                str(out / "data"),
                "--method",
                "simnpo",
                "--model",
                str(beatles_model_dir),
                "--out",
                str(run),
                "--steps",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "simnpo" and metrics["data"]["sha256"] == first["data"]["sha256"]
    known = metrics["against"]["metrics"]["n_known_target_probes"]
    assert known == first["against"]["metrics"]["n_known_target_probes"]
    # Data built from another model is refused: its "known" flags would be wrong.
    with pytest.raises(UserError, match="was built from the model at"):
        obliviate.forget(
            None, data_dir=out / "data", method="ga", out=tmp_path / "other", log=lambda m: None, progress=False
        )
    with pytest.raises(UserError, match="not a data directory"):
        obliviate.forget(None, data_dir=tmp_path, out=tmp_path / "x", log=lambda m: None, progress=False)


def test_data_built_from_a_model_that_moved_is_accepted_by_its_hash(beatles_run, beatles_model_dir, tmp_path):
    """The manifest names the model by the hash of its weights, so a data folder (or a model) moved to another
    place, or another machine, still matches."""
    out, _, _ = beatles_run
    moved = tmp_path / "moved-model"
    shutil.copytree(beatles_model_dir, moved)
    metrics = obliviate.forget(
        None,
        model=str(moved),
        data_dir=out / "data",
        method="ga",
        train={"steps": 1, "lr": 1e-4},
        eval=EvalConfig(attacks=()),
        out=tmp_path / "run",
        log=lambda m: None,
        progress=False,
    )
    assert metrics["method"] == "ga"


def test_a_run_that_diverges_at_the_start_fails_and_saves_no_model(beatles_run, beatles_model_dir, tmp_path):
    """A learning rate that blows the weights up at once: the guard restores the step-0 weights, which are
    the base model's, so the run is an error (no model/, no report) and not an 'unlearned' copy of the base.
    What it did finish (the data, the base evaluation) stays, and --resume with a sane rate completes it."""
    from obliviate.io import read_json

    done, _, _ = beatles_run
    out = tmp_path / "diverged"
    args = dict(
        model=str(beatles_model_dir),
        data_dir=done / "data",
        method="ga",
        out=out,
        base_eval=read_json(done / "eval_base.json"),
        progress=False,
        log=lambda msg: None,
    )
    with pytest.raises(UserError, match=r"diverged at step \d+ .* no model was saved; lower --lr"):
        obliviate.forget(None, train={"steps": 3, "lr": 1e30}, **args)
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    assert (out / "data" / "manifest.json").is_file() and (out / "eval_base.json").is_file()
    metrics = obliviate.forget(None, train={"steps": 2, "lr": LR}, resume=True, **args)
    assert metrics["train"]["steps_done"] == 2 and (out / "model" / "config.json").is_file()


def test_auto_whose_every_candidate_diverged_at_the_start_fails(monkeypatch, tmp_path):
    """--method auto keeps the best candidate; if even that one kept no step, it is the base model: an error."""
    from types import SimpleNamespace

    import obliviate.pipeline.auto as auto
    from obliviate.pipeline.run import _choose

    rows = [{"candidate": "rmu", "chosen": True, "steps_kept": 0}, {"candidate": "npo", "chosen": False}]
    monkeypatch.setattr(auto, "search", lambda *a, **k: SimpleNamespace(rows=rows))
    plan = SimpleNamespace(budget=1.0, data_dir=tmp_path, eval=None, train_overrides={}, out=tmp_path)
    with pytest.raises(UserError, match="diverged before any step could be kept .rmu was the best"):
        _choose(plan, None, {}, False, lambda msg: None)


def test_a_new_start_puts_back_a_checkpoint_set_aside_and_drops_the_temporaries(tmp_path):
    """What kills may leave in a run folder: a half-written temporary (.NAME.*.tmp), an old copy beside its
    replacement (.NAME.old), and a checkpoint set aside between atomic_dir's two renames, which goes back."""
    from obliviate.engine import has_checkpoint
    from obliviate.pipeline.run import _drop_temporaries

    out = tmp_path / "run"
    (out / "checkpoint" / ".latest.old").mkdir(parents=True)
    (out / "checkpoint" / ".latest.old" / "state.json").write_text("{}")
    (out / "checkpoint" / ".latest.x1.tmp").mkdir()
    (out / "data").mkdir()
    (out / ".data.old").mkdir()
    (out / ".config.yaml.x2.tmp").write_text("half")
    _drop_temporaries(out)
    assert has_checkpoint(out / "checkpoint")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "checkpoint",
        "checkpoint/latest",
        "checkpoint/latest/state.json",
        "data",
    ]
