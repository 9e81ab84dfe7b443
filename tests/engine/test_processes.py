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

from obliviate.engine.processes import shard
from obliviate.engine.trainer import _load_checkpoint
from obliviate.errors import UserError

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


def _launch(model_dir, out: Path, steps: int, mode: str) -> list[dict]:
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
