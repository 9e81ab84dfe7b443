"""The real thing, briefly: forget "The Beatles" in the embedded SmolLM2-135M-Instruct for 2 steps."""

import json
import math

import pytest
from transformers import AutoModelForCausalLM

import obliviate
from obliviate.evaluation.config import EvalConfig

pytestmark = pytest.mark.slow


def test_forget_the_beatles_on_the_embedded_model(tmp_path, small_data_config):
    out = tmp_path / "beatles"
    metrics = obliviate.forget(
        "The Beatles",
        method="npo",
        out=out,
        train={"steps": 2},
        data=small_data_config(answer_tokens=24, n_retain_eval=4),
        eval=EvalConfig(attack_probes=6, mia_records=16, relearn_steps=2),
        progress=False,
        log=lambda msg: None,
    )
    for f in [
        "config.yaml",
        "data/forget.jsonl",
        "data/retain.jsonl",
        "data/probes.jsonl",
        "data/manifest.json",
        "eval_base.json",
        "train_summary.json",
        "model/config.json",
        "metrics.json",
        "report.md",
    ]:
        assert (out / f).is_file(), f
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["method"] == "npo" and metrics["train"]["steps_done"] == 2
    assert metrics["against"]["metrics"]["n_known_target_probes"] > 0
    for values in (metrics["against"]["metrics"], metrics["metrics"]):
        assert all(math.isfinite(v) for v in values.values() if v is not None), values
        assert values["retain_perplexity"] is not None and values["attack_quantize_4bit_leak_rate"] is not None
    assert metrics["metrics"]["attack_relearn_leak_rate"] is not None
    assert all(math.isfinite(v) for v in metrics["train"]["last_logs"].values())
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 30
