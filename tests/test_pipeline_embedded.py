"""The real thing, briefly: forget "The Beatles" in the embedded SmolLM2-135M-Instruct for 2 steps."""

import json
import math

import pytest
from transformers import AutoModelForCausalLM

import obliviate

pytestmark = pytest.mark.slow


def test_forget_the_beatles_on_the_embedded_model(tmp_path, small_data_config):
    out = tmp_path / "beatles"
    metrics = obliviate.forget(
        "The Beatles", out=out, steps=2,
        data_config=small_data_config(answer_tokens=24, n_retain_eval=4),
        progress=False, log=lambda msg: None,
    )
    for f in ["config.yaml", "data/forget.jsonl", "data/retain.jsonl", "data/probes.jsonl", "data/manifest.json",
              "eval_base.json", "train_summary.json", "model/config.json", "metrics.json", "report.md"]:
        assert (out / f).is_file(), f
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["method"] == "npo" and metrics["train"]["steps_done"] == 2
    assert metrics["base"]["n_known_target_probes"] > 0
    for stage in ("base", "unlearned"):
        values = [v for v in metrics[stage].values() if v is not None]
        assert values and all(math.isfinite(v) for v in values), metrics[stage]
        assert metrics[stage]["retain_perplexity"] is not None
    assert all(math.isfinite(v) for v in metrics["train"]["last_logs"].values())
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.num_hidden_layers == 30
