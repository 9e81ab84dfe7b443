"""NPO: the loss formula on hand-made numbers, and the method on a tiny model."""

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.methods import get_method
from obliviate.methods.npo import npo_loss
from obliviate.models.logprobs import dpo_loss
from obliviate.models.prompts import encode


def test_at_the_reference_the_loss_is_two_over_beta_log_two():
    """logp == ref_logp: -(2/b) log sigmoid(0) = (2/b) ln 2; b = 0.1 gives 20 ln 2 = 13.862944."""
    logp = torch.tensor([-5.0, -7.0, -1.0])
    assert_close(npo_loss(logp, logp.clone(), beta=0.1), torch.tensor(20 * math.log(2)))


def test_hand_computed_value():
    """logp [-1, -3], ref [-2, -2], b = 0.5: d = [1, -1], -b d = [-0.5, 0.5].
    log sigmoid(-0.5) = -ln(1 + e^0.5) = -0.974077; log sigmoid(0.5) = -ln(1 + e^-0.5) = -0.474077.
    Mean -0.724077; times -(2 / 0.5) = -4: loss = 2.896308.
    """
    loss = npo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0]), beta=0.5)
    expected = 4 * (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-0.5))) / 2
    assert_close(loss, torch.tensor(expected))
    assert_close(loss, torch.tensor(2.896308))


def test_npo_is_dpo_with_no_chosen_side():
    """The hand-computed case above through the DPO helper: rejected log-ratios [1, -1], no chosen side, b = 0.5.
    It equals DPO with a chosen side whose log-ratio is 0 everywhere (margin 0 - d = -d)."""
    rejected = torch.tensor([1.0, -1.0])
    assert_close(dpo_loss(None, rejected, beta=0.5), torch.tensor(2.896308))
    assert_close(dpo_loss(None, rejected, beta=0.5), dpo_loss(torch.zeros(2), rejected, beta=0.5))
    assert torch.equal(
        npo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0]), beta=0.5), dpo_loss(None, rejected, beta=0.5)
    )


def test_gradient_at_the_reference_equals_gradient_ascent():
    """d/dlogp_i of -(2/b) mean log sigmoid(-b d) = 2 sigmoid(b d_i) / N; at d = 0 that is 1/N,
    exactly the gradient of GA's loss (mean logp) — NPO starts out as gradient ascent, for any beta.
    """
    for beta in (0.05, 0.1, 1.0):
        logp = torch.tensor([-4.0, -2.0], requires_grad=True)
        npo_loss(logp, logp.detach().clone(), beta).backward()
        assert_close(logp.grad, torch.tensor([0.5, 0.5]))


def test_loss_is_positive_and_vanishes_once_the_answer_is_unlikely():
    """d = -1000, b = 0.1: (2/b) ln(1 + e^-100) ~ 0 — bounded below by 0, unlike GA."""
    loss = npo_loss(torch.tensor([-1002.0]), torch.tensor([-2.0]), beta=0.1)
    assert 0 <= loss.item() < 1e-6
    assert npo_loss(torch.tensor([0.0]), torch.tensor([-2.0]), beta=0.1).item() > 20 * math.log(2)


@pytest.fixture
def batch(tokenizer, forget_records, retain_records):
    return {"forget": encode(tokenizer, forget_records), "retain": encode(tokenizer, retain_records)}


def test_method_against_an_identical_reference(tiny_lm, batch):
    """With ref == model, the NPO term is 20 ln 2 (b = 0.1) and the loss adds alpha * retain NLL."""
    model = tiny_lm.model
    ref = copy.deepcopy(model).eval()
    out = get_method("npo", alpha=0.5).loss(model, batch, ref)
    assert out.logs["npo"] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert set(out.logs) == {"npo", "forget_nll", "retain_nll"}
    assert out.loss.item() == pytest.approx(out.logs["npo"] + 0.5 * out.logs["retain_nll"], rel=1e-5)
    assert out.loss.requires_grad


def test_alpha_zero_drops_the_retain_term(tiny_lm, batch):
    model = tiny_lm.model
    out = get_method("npo", alpha=0.0, beta=1.0).loss(model, batch, copy.deepcopy(model).eval())
    assert "retain_nll" not in out.logs
    assert out.loss.item() == pytest.approx(2 * math.log(2), rel=1e-5)
