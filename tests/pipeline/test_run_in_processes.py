"""`obliviate run` launched as 2 gloo processes: one run directory, written once, evaluated once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_two_process_run_writes_one_run_directory(tiny_model_dir, zorblax, small_data_config, tmp_path):
    from obliviate.pipeline.run import build_data_dir

    data = tmp_path / "data"
    build_data_dir(zorblax, data, str(tiny_model_dir), small_data_config(qa_holdout=0.25), log=lambda m: None)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "obliviate"]
    args = ["run", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--method", "npo"]
    args += ["--steps", "2", "--batch-size", "2", "--attacks", "none", "--eval-set", "mia_records=8"]
    done = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Known held-out probes") == 1, "more than one process printed the results"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "npo" and metrics["train"]["steps_done"] == 2
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "model" / "config.json").is_file() and (out / "report.md").is_file()
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"
