"""`compare --ray`: the methods as Ray tasks on a local Ray instance give the sequential path's compare.json."""

from __future__ import annotations

import json

import pytest

from obliviate.errors import UserError

TIMINGS = ("seconds", "time")


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not any(t in k for t in TIMINGS)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.slow
def test_a_ray_compare_equals_the_sequential_one(tiny_model_dir, zorblax, small_data_config, tmp_path):
    pytest.importorskip("ray")
    from obliviate.evaluation.config import EvalConfig
    from obliviate.pipeline.run import build_data_dir, compare

    data = tmp_path / "data"
    build_data_dir(zorblax, data, str(tiny_model_dir), small_data_config(qa_holdout=0.25), log=lambda m: None)
    args = dict(
        model=str(tiny_model_dir),
        data_dir=data,
        train={"steps": 2, "batch_size": 2},
        eval=EvalConfig(attacks=(), mia_records=8),
        progress=False,
        log=lambda m: None,
    )
    compare(None, ["ga", "npo"], out=tmp_path / "sequential", **args)
    compare(None, ["ga", "npo"], out=tmp_path / "ray", ray="local", **args)
    first, second = (json.loads((tmp_path / d / "compare.json").read_text()) for d in ("sequential", "ray"))
    for doc in (first, second):
        doc["data"] = None
        timed = [i for i, c in enumerate(doc["columns"]) if "time" in c]
        doc["rows"] = [[v for i, v in enumerate(row) if i not in timed] for row in doc["rows"]]
    assert _without_timings(first) == _without_timings(second)
    assert (tmp_path / "ray" / "npo" / "model" / "config.json").is_file()


def test_without_ray_installed_the_flag_is_one_sentence(monkeypatch, tmp_path):
    import builtins

    from obliviate.engine.fanout import ray_map

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError, match=r"pip install 'obliviate\[ray\]'"):
        ray_map(lambda run: {}, {"ga": (tmp_path,)}, "local")


@pytest.mark.slow
def test_a_ray_bench_equals_the_sequential_one(tiny_model_dir, tmp_path, monkeypatch):
    """The smoke benchmark of GA and guardrail, each method's grid a Ray task: the same runs and leaderboard."""
    pytest.importorskip("ray")
    from obliviate.cli.main import main

    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    argv = ["bench", "--model", str(tiny_model_dir), "--size", "smoke", "--methods", "ga,guardrail", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "sequential")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ray"), "--ray"]) == 0
    first, second = (json.loads((tmp_path / d / "bench.json").read_text()) for d in ("sequential", "ray"))
    assert _without_timings(first["methods"]) == _without_timings(second["methods"])
    assert (tmp_path / "ray" / "leaderboard.md").is_file()
