"""Method-level fixtures: data with alternative answers, and a few hand-rolled training steps through every hook."""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import pytest
import torch


@pytest.fixture
def method_data(forget_records, retain_records):
    """Forget and retain records, and refusal, negation, mismatch and anchored answers to every forget question."""
    kinds = (
        ("refusal", "I can't say."),
        ("negation", "I don't know of them."),
        ("mismatch", "Paris is in France."),
        ("anchored", "A band from a northern city."),
    )
    alt = [{"question": r["question"], "answer": a, "kind": k} for r in forget_records for k, a in kinds]
    return {"forget": forget_records, "retain": retain_records, "alt": alt}


@pytest.fixture
def run_steps():
    """`run(method, model, tokenizer, data, steps=3)`: the engine's calls (prepare, fine_tunes, setup, trainable,
    collate, loss) with plain AdamW on 2 records per stream; the models a method asks for are fine-tuned by the
    engine's `fine_tune` in fp32. Asserts every loss and log is finite; returns the LossOutputs
    (`outs`), the parameters before (`before`), the names of those that moved (`moved`) and the reference (`ref`)."""

    def run(method, model, tokenizer, data, steps: int = 3, batch_size: int = 2, lr: float = 1e-3):
        from obliviate.engine import TrainConfig, fine_tune

        data = method.prepare(data)
        tuned = {
            spec.name: fine_tune(model, tokenizer, spec, TrainConfig(bf16=False, checkpoint_every=0))
            for spec in method.fine_tunes(data)
        }
        ref = copy.deepcopy(model).eval().requires_grad_(False) if method.needs_ref_model else None
        method.setup(model, tokenizer, data, ref, tuned)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        params = []
        for name, p in model.named_parameters():
            p.requires_grad_(method.trainable(name))
            if p.requires_grad:
                params.append(p)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        streams = {name: itertools.cycle(data[name]) for name in method.batches}
        outs = []
        model.train()
        for _ in range(steps):
            batch = {}
            for name, stream in streams.items():
                batch.update(method.collate(tokenizer, name, [next(stream) for _ in range(batch_size)], 64))
            out = method.loss(model, batch, ref)
            assert math.isfinite(out.loss.item()) and all(math.isfinite(v) for v in out.logs.values())
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            outs.append(out)
        model.eval()
        moved = {k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])}
        if ref is not None:
            assert all(torch.equal(v, before[k]) for k, v in ref.named_parameters()), "the reference moved"
        return SimpleNamespace(outs=outs, before=before, moved=moved, ref=ref)

    return run
