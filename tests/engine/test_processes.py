"""Several training processes: disjoint shards, one writer, resume; and the shard arithmetic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from two_processes import NORMS, GradientNorms

from obliviate.engine.processes import shard
from obliviate.engine.trainer import TrainConfig, _load_checkpoint, train
from obliviate.errors import UserError
from obliviate.io import read_jsonl
from obliviate.methods import get_method
from obliviate.models.loading import load_model

SCRIPT = Path(__file__).with_name("two_processes.py")


def test_shards_are_disjoint_and_cover_the_records():
    records = [{"i": i} for i in range(7)]
    parts = [shard(records, rank, 3, "forget") for rank in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sorted(r["i"] for p in parts for r in p) == list(range(7))
    assert shard(records, 0, 1, "forget") is records


def test_fewer_records_than_processes_is_one_sentence():
    with pytest.raises(UserError, match="has 1 records, fewer than the 2 training processes") as e:
        shard([{"i": 0}], 1, 2, "retain")
    assert "\n" not in str(e.value)


def _launch(model_dir, out: Path, steps: int, mode: str) -> list[dict] | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(Path.cwd() / "src"), *sys.path])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*command, str(SCRIPT), str(model_dir), str(out), str(steps), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    (out.parent / "stderr.txt").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    if mode == "same-batch":
        return None
    return [json.loads((out / f"rank{k}.json").read_text()) for k in range(2)]


@pytest.mark.slow
def test_two_processes_train_on_disjoint_shards_and_one_writes(tiny_model_dir, tmp_path):
    """2 gloo processes, NPO (reference log-probs precomputed per shard), 4 steps with a checkpoint at step 2; then
    the checkpoint resumed for the last 2 steps, which ends with the same weights."""
    out = tmp_path / "run"
    ranks = _launch(tiny_model_dir, out, 4, "fresh")
    assert [r["world"] for r in ranks] == [2, 2]
    drawn = [{d.split(":", 1)[1] for d in r["drawn"]} for r in ranks]
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1], "the processes drew the same records"
    assert len(drawn[0] | drawn[1]) == 16  # 8 forget + 8 retain records, each in one shard
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4], "the log was written by more than one process"
    state = _load_checkpoint(out / "checkpoint" / "latest")
    assert state["step"] == 2 and len(state["ranks"]) == 2
    assert state["ranks"][0]["ref_logprobs"].keys() == {"forget"}
    assert state["ranks"][0]["streams"] != state["ranks"][1]["streams"] or drawn[0] != drawn[1]

    again = tmp_path / "again"
    shutil.copytree(out / "checkpoint", again / "checkpoint")
    resumed = _launch(tiny_model_dir, again, 4, "resume")
    assert [r["resumed_from"] for r in resumed] == [2, 2]
    first, second = (load_file(d / "model" / "model.safetensors") for d in (out, again))
    assert all(torch.allclose(first[k], second[k], atol=1e-6) for k in first)


# Four records per stream, the global batch of every run below, so that every step sees all of them. The questions
# differ in length (so the batches are padded differently); the answers of a stream all have as many tokens.
PLACES = ["Leeds", "the old town of Bath", "a village", "the far north of Scotland"]
SAME_BATCH = {
    "forget": [
        {"question": f"Who is person {i} from {p}?", "answer": f"Person {i} is a drummer."}
        for i, p in enumerate(PLACES)
    ],
    "retain": [
        {"question": f"What is {i} plus {i}, asked in {p}?", "answer": f"{2 * i}."} for i, p in enumerate(PLACES)
    ],
}
# No clipping, so that the recorded gradient norms are the gradients' own.
SAME_BATCH_CONFIG = {"batch_size": 2, "lr": 1e-3, "max_length": 64, "bf16": False, "max_grad_norm": 1e6}


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_the_same_global_batch(tiny_model_dir, tmp_path, monkeypatch):
    """ga and npo, 20 fp32 steps: 2 processes with batch 2 (a shard of 2 records each) against 1 process with
    batch 4 and 1 with batch 2 accumulated twice. Each stream holds 4 records, so every step of every run sees all
    of them, and as every answer of a stream has as many tokens, a token-averaged term weighs them alike however
    the batch is split: DDP's average of the two shards' gradients must be the one process's gradient. So, up to
    float rounding (relative 1e-5; weights within 1e-5 while the steps move them by about 2e-2): every step's
    gradient norm (AdamW alone would hide a gradient off by a constant factor), every step's logged loss and
    terms (the mean over both processes), and the final weights. npo's reference log-probs, computed by each
    process for its own shard, equal those of the whole data (shard index j of rank k is record k + 2j)."""
    steps = 20
    out = tmp_path / "two"
    out.mkdir()
    (out / "job.json").write_text(json.dumps({"data": SAME_BATCH, "config": SAME_BATCH_CONFIG}))
    _launch(tiny_model_dir, out, steps, "same-batch")
    monkeypatch.setattr(torch.optim, "AdamW", GradientNorms)
    for name in ("ga", "npo"):
        method = get_method(name)
        two = load_file(out / name / "model" / "model.safetensors")
        two_log = read_jsonl(out / name / "train_log.jsonl")
        two_norms = [json.loads((out / name / f"norms{k}.json").read_text()) for k in range(2)]
        assert len(two_norms[0]) == steps and two_norms[0] == pytest.approx(two_norms[1], rel=1e-6)
        for label, options in {"batch4": {"batch_size": 4}, "accum2": {"grad_accum": 2}}.items():
            NORMS.clear()
            lm = load_model(str(tiny_model_dir))
            one_dir = tmp_path / f"{name}-{label}"
            one_dir.mkdir()
            cfg = TrainConfig(steps=steps, **{**SAME_BATCH_CONFIG, **options})
            data = {k: SAME_BATCH[k] for k in method.batches}
            result = train(
                lm.model, lm.tokenizer, method, data, cfg, one_dir / "log.jsonl", False, checkpoint_dir=one_dir
            )
            assert NORMS == pytest.approx(two_norms[0], rel=1e-5), (name, label)
            one_log = read_jsonl(one_dir / "log.jsonl")
            assert [r.keys() for r in one_log] == [r.keys() for r in two_log]
            for a, b in zip(one_log, two_log):
                assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx(
                    {k: v for k, v in b.items() if k != "seconds"}, rel=1e-5
                ), (name, label)
            one = result.model.state_dict()
            assert max((one[k] - two[k]).abs().max().item() for k in two) < 1e-5, (name, label)
        if name == "npo":
            whole = _load_checkpoint(one_dir / "latest")["ranks"][0]["ref_logprobs"]["forget"]
            ranks = _load_checkpoint(out / name / "checkpoint" / "latest")["ranks"]
            shards = {
                k + 2 * j: v["forget"] for k, own in enumerate(ranks) for j, v in own["ref_logprobs"]["forget"].items()
            }
            assert shards == pytest.approx({i: v["forget"] for i, v in whole.items()}, rel=1e-6)
