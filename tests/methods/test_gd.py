"""Gradient difference: -NLL(forget) + alpha * NLL(retain)."""

import pytest
import torch
from torch.testing import assert_close

from obliviate.methods import get_method
from obliviate.methods.gd import gd_loss
from obliviate.models.prompts import encode


def test_hand_computed_value():
    """forget NLL 2.0, retain NLL 0.5, alpha 3: -2.0 + 3 * 0.5 = -0.5."""
    assert_close(gd_loss(torch.tensor(2.0), torch.tensor(0.5), 3.0), torch.tensor(-0.5))


def test_gradients_ascend_forget_and_descend_retain():
    """d/dforget = -1, d/dretain = alpha = 2."""
    f, r = torch.tensor(2.0, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    gd_loss(f, r, 2.0).backward()
    assert_close((f.grad, r.grad), (torch.tensor(-1.0), torch.tensor(2.0)))


def test_method_combines_the_logged_terms(tiny_lm, tokenizer, forget_records, retain_records):
    batch = {"forget": encode(tokenizer, forget_records), "retain": encode(tokenizer, retain_records)}
    out = get_method("gd", alpha=2.0).loss(tiny_lm.model, batch)
    assert set(out.logs) == {"forget_nll", "retain_nll"}
    assert out.loss.item() == pytest.approx(-out.logs["forget_nll"] + 2.0 * out.logs["retain_nll"], rel=1e-5)
