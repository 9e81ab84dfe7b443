"""What ships for bigger machines: the accelerate configs, the GPU check script (its CPU dry run), and where a
loaded model is placed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_the_accelerate_configs_for_one_gpu_ddp_fsdp_and_zero_2_and_3_ship():
    assert {c.stem for c in CONFIGS} == {"one_gpu", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_accelerate_config_loads_and_names_its_command(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.mixed_precision == "bf16" and not config.use_cpu
    command = f"accelerate launch --config_file configs/accelerate/{path.name}"
    assert command in path.read_text() and "-m obliviate forget" in path.read_text()
    assert (ROOT / "docs" / "SCALING.md").read_text().count(f"configs/accelerate/{path.name}")


def test_the_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


@pytest.mark.slow
def test_the_gpu_check_dry_run_passes_on_a_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tests collected" in done.stdout or "collected" in done.stdout
    for command in ("-m pytest -q -m gpu tests", "-m obliviate forget beatles", "--engine-only --batch-size 32"):
        assert command in done.stdout
    assert "nothing was run" in done.stdout and not list(tmp_path.iterdir())


def test_a_model_goes_to_this_processs_gpu_unless_fsdp_or_deepspeed_shard_it(monkeypatch):
    from obliviate.models.loading import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == torch.device("cuda", 1)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert default_device() == torch.device("cpu")


def test_cpu_only_machinery_declines_a_gpu():
    from obliviate.engine.trainer import training_attention
    from obliviate.evaluation import worker

    assert not worker.available(torch.device("cuda"))
    assert training_attention("auto", torch.device("cuda")) is None
    assert training_attention("auto", torch.device("cpu")) == "eager"
