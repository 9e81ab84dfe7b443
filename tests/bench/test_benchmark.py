"""The benchmark with an oracle: the smoke size end to end on a tiny model, and its statistics."""

import json

import pytest
from scipy.stats import hmean

from obliviate.bench import SIZES
from obliviate.bench.benchmark import (
    BenchConfig,
    Split,
    against_oracle,
    best_of,
    cache_key,
    finetune,
    forget_spec,
    method_data,
    world_facts,
)
from obliviate.cli.main import main
from obliviate.errors import UserError
from obliviate.leak import reveals
from obliviate.methods import METHODS


def test_splits_are_disjoint_and_seeded():
    cfg = BenchConfig(n_authors=10, n_forget=2, n_holdout=3, n_retain_eval=12)
    split = Split.make(cfg)
    names = lambda rows: {r["entity"] for r in rows}  # noqa: E731
    assert len(names(split.forget)) == 2 and len(names(split.retain)) == 8 and len(names(split.holdout)) == 3
    assert not names(split.forget) & names(split.retain)
    assert not names(split.holdout) & (names(split.forget) | names(split.retain))
    assert len(split.retain_eval) == 12 and all(r in split.retain for r in split.retain_eval)
    assert Split.make(cfg) == split and Split.make(BenchConfig(n_authors=10, n_forget=2, n_holdout=3, seed=1)) != split
    for r in split.forget:  # the held-out wording is another question about the same fact
        assert r["held_out_question"] != r["question"] and r["entity"] in r["held_out_question"]


def test_world_facts_have_one_right_and_three_wrong_capitals():
    rows = world_facts(10, seed=0)
    assert len(rows) == 10 and len({r["question"] for r in rows}) == 10
    for r in rows:
        assert reveals(r["answer"], r["answers"]) and len(set(r["perturbed_answers"])) == 3
        assert not any(reveals(w, r["answers"]) for w in r["perturbed_answers"])


def test_method_data_has_every_alternative_kind_and_never_trains_on_holdout():
    split = Split.make(BenchConfig(n_authors=8, n_forget=2, n_holdout=2))
    data = method_data(split)
    assert [r["question"] for r in data["forget"]] == [r["question"] for r in split.forget]
    kinds = {r["kind"] for r in data["alt"]}
    assert kinds == {"refusal", "negation", "guardrail", "mismatch", "other_subject", "anchored"}
    held = {r["entity"] for r in split.holdout}
    assert not any(name in json.dumps(data) for name in held)
    spec = forget_spec(split)
    for r in data["alt"]:
        if r["kind"] == "anchored":
            assert not spec.mentions(r["answer"])  # the forget author's name is swapped for "the author"


def test_forget_quality_is_one_for_the_oracle_itself_and_small_for_a_shifted_distribution():
    oracle = {"metrics": {"mia_auc_loss": 0.5}, "truth_ratios": [0.9 + 0.01 * i for i in range(24)]}
    same = against_oracle({"metrics": {"mia_auc_loss": 0.5}, "truth_ratios": list(oracle["truth_ratios"])}, oracle)
    assert same["metrics"]["forget_quality"] == pytest.approx(1.0) and same["metrics"]["privleak"] == pytest.approx(0.0)
    shifted = {"metrics": {"mia_auc_loss": 0.9}, "truth_ratios": [0.1 + 0.01 * i for i in range(24)]}
    learned = against_oracle(shifted, oracle)
    assert learned["metrics"]["forget_quality"] < 1e-6 and learned["metrics"]["privleak"] == pytest.approx(0.8)


def test_best_of_grid_prefers_forget_quality_among_runs_that_keep_utility():
    run = lambda fq, mu, s: {"metrics": {"forget_quality": fq, "model_utility": mu}, "lr_scale": s}  # noqa: E731
    runs = [run(0.01, 0.50, 1), run(0.30, 0.46, 3), run(0.90, 0.20, 10)]
    assert best_of(runs, target_utility=0.5)["lr_scale"] == 3  # 0.46 >= 0.9 * 0.5; the x10 run broke the model
    assert best_of(runs, target_utility=0.9)["lr_scale"] == 1  # none keeps 90 %: the highest utility


def test_config_refuses_an_empty_split():
    with pytest.raises(UserError, match="forget author"):
        BenchConfig(n_authors=2, n_forget=2)


def test_finetune_is_cached_by_what_shapes_it(tiny_model_dir, tmp_path, monkeypatch):
    cfg = BenchConfig(**{**SIZES["smoke"], "finetune_epochs": 1, "finetune_batch": 8})
    records = Split.make(cfg).retain[:8]
    first = finetune(str(tiny_model_dir), records, cfg, tmp_path, log=lambda m: None)
    assert (first / "config.json").is_file() and json.loads((first / "finetune.json").read_text())["steps"] == 1
    import obliviate.bench.benchmark as bench

    monkeypatch.setattr(bench, "train", lambda *a, **k: pytest.fail("a cached fine-tune was rebuilt"))
    assert finetune(str(tiny_model_dir), records, cfg, tmp_path, log=lambda m: None) == first
    other = BenchConfig(**{**SIZES["smoke"], "finetune_epochs": 2})
    assert cache_key(str(tiny_model_dir), records, other) != cache_key(str(tiny_model_dir), records, cfg)
    assert cache_key(str(tiny_model_dir), records[:4], cfg) != cache_key(str(tiny_model_dir), records, cfg)


def test_smoke_benchmark_runs_every_method_and_writes_the_page(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    out, docs = tmp_path / "bench", tmp_path / "docs"
    argv = [
        "bench",
        "--model",
        str(tiny_model_dir),
        "--size",
        "smoke",
        "--out",
        str(out),
        "--docs",
        str(docs),
        "--bench-set",
        "grid=2",
        "--quiet",
    ]
    assert main(argv) == 0
    doc = json.loads((out / "bench.json").read_text())
    assert set(doc["methods"]) == set(METHODS)
    for name, r in doc["methods"].items():
        m = r["best"]["metrics"]
        assert 0.0 <= m["forget_quality"] <= 1.0 and 0.0 <= m["model_utility"] <= 1.0, name
        parts = [m[f"{s}_{k}"] for s in ("retain", "world") for k in ("probability", "rouge_l", "truth")]
        assert m["model_utility"] == pytest.approx(hmean(parts) if min(parts) > 0 else 0.0)
        # defaults + lr x2 for trained methods (x2 skipped when the defaults already broke utility)
        assert len(r["grid"]) + len(r["skipped"]) == (2 if METHODS[name].trains else 1)
        assert len(r["best"]["truth_ratios"]) == doc["split"]["forget_qa"]
    assert doc["oracle"]["metrics"]["forget_quality"] == pytest.approx(1.0)
    assert doc["cold_seconds"] >= sum(doc["finetune_seconds"]) > 0
    board = (out / "leaderboard.md").read_text()
    assert board.count("\n") >= 2 + len(METHODS) + 2 and "oracle (never learned)" in board
    assert (out / "forget_quality_vs_utility.png").stat().st_size > 1000
    page = (docs / "BENCHMARKS.md").read_text()
    assert "obliviate bench --model" in page and board.splitlines()[2] in page
    assert (docs / "images" / "bench_forget_quality_vs_utility.png").is_file()

    # A rerun reuses every finished run; other settings in the same --out are refused.
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()} == stamp
    capsys.readouterr()
    assert main([*argv[:-1], "--bench-set", "n_world=5"]) == 2
    assert "other settings" in capsys.readouterr().err

    # A wider grid only adds runs: the finished ones are reused.
    assert main([*argv[:-2], "grid=2,4", "--quiet"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").iterdir()}
    assert all(after[name] == t for name, t in stamp.items())
    assert {n for n in after if n.endswith("-lr4.json")} <= {f"{m}-lr4.json" for m in METHODS if METHODS[m].trains}


def test_cli_refuses_a_misspelled_setting(capsys):
    assert main(["bench", "--bench-set", "n_author=3"]) == 2
    assert "did you mean 'n_authors'" in capsys.readouterr().err


def test_a_directory_that_is_not_a_benchmark_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    assert main(["bench", "--out", str(out), "--overwrite", "--size", "smoke"]) == 2
    assert "not an obliviate benchmark" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
