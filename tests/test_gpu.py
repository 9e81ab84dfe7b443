"""On a CUDA device: the model goes to the GPU, trains in bf16 with SDPA attention and fused AdamW, and the CPU
machinery (allocator policy, forked evaluation worker, CPU attention, bf16 generation copies) stays off.

Skipped without CUDA (conftest); `bash benchmarks/gpu_check.sh` runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_a_loaded_model_is_placed_on_the_gpu(tiny_model_dir):
    from obliviate.models.loading import load_model

    lm = load_model(str(tiny_model_dir))
    assert next(lm.model.parameters()).device.type == "cuda"


def test_cpu_machinery_is_off_on_the_gpu(tiny_model_dir):
    from obliviate.evaluation import worker
    from obliviate.models.attention import cpu_inference
    from obliviate.models.generate import generation_copy
    from obliviate.models.loading import load_model

    model = load_model(str(tiny_model_dir)).model
    assert generation_copy(model) is model
    assert not worker.available(torch.device("cuda"))
    before = model.config._attn_implementation
    with cpu_inference(model):
        assert model.config._attn_implementation == before


def test_training_on_the_gpu_uses_bf16_sdpa_and_fused_adamw(tiny_model_dir, monkeypatch):
    from obliviate import malloc
    from obliviate.engine import TrainConfig, train
    from obliviate.methods import get_method
    from obliviate.models.loading import load_model

    lm = load_model(str(tiny_model_dir))
    seen = {}
    adamw = torch.optim.AdamW

    def spy(params, **kw):
        seen["fused"] = kw.get("fused")
        return adamw(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    method = get_method("ga")
    loss = method.loss

    def checked(model, batch, ref=None):
        seen["autocast"] = torch.is_autocast_enabled("cuda")
        seen["attention"] = lm.model.config._attn_implementation
        seen["allocator"] = malloc.mode()
        return loss(model, batch, ref)

    method.loss = checked
    records = [{"question": f"What is {i}?", "answer": f"It is {i}."} for i in range(8)]
    result = train(lm.model, lm.tokenizer, method, {"forget": records}, TrainConfig(steps=2, checkpoint_every=0))
    assert result.steps_done == 2
    assert seen == {"fused": True, "autocast": True, "attention": "sdpa", "allocator": "default"}


def test_lora_npo_and_rmu_train_on_the_gpu(tiny_model_dir):
    from obliviate.engine import TrainConfig, train
    from obliviate.methods import get_method
    from obliviate.models.loading import load_model

    records = [{"question": f"What is {i}?", "answer": f"It is {i}."} for i in range(8)]
    for name, lora in (("npo", True), ("rmu", False)):
        lm = load_model(str(tiny_model_dir))
        method = get_method(name, **({"layer": 0} if name == "rmu" else {}))
        cfg = TrainConfig(steps=2, checkpoint_every=0, lora=lora)
        result = train(lm.model, lm.tokenizer, method, {"forget": records, "retain": records[::-1]}, cfg)
        assert result.steps_done == 2 and next(result.model.parameters()).device.type == "cuda"
