"""Gradient ascent: loss = -NLL(forget)."""

import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.methods import get_method
from obliviate.methods.ga import ga_loss
from obliviate.models.prompts import encode


def test_hand_computed_value_and_gradient():
    """ga_loss(2.5) = -2.5, and d loss / d NLL = -1 (minimising it raises the NLL)."""
    x = torch.tensor(2.5, requires_grad=True)
    loss = ga_loss(x)
    loss.backward()
    assert_close(loss, torch.tensor(-2.5))
    assert_close(x.grad, torch.tensor(-1.0))


def test_method_reads_only_the_forget_batch(tiny_lm, tokenizer, forget_records):
    method = get_method("ga")
    assert method.batches == ("forget",)
    out = method.loss(tiny_lm.model, {"forget": encode(tokenizer, forget_records)})
    assert set(out.logs) == {"forget_nll"}
    assert out.loss.item() == pytest.approx(-out.logs["forget_nll"])
    # An untrained model over a 49152-token vocab is near uniform: NLL ~ ln 49152 = 10.8.
    assert out.logs["forget_nll"] == pytest.approx(math.log(49152), abs=1.0)
