"""SimNPO: the loss formula on hand-made numbers."""

import math

import torch
from torch.testing import assert_close

from obliviate.methods.simnpo import simnpo_loss


def test_hand_computed_value():
    """logp [-4, -9] over [2, 3] tokens, b = 2, g = 0.5: -(b/|y|) logp - g = [4 - 0.5, 6 - 0.5] = [3.5, 5.5].
    log sigmoid(x) = -ln(1 + e^-x): [-0.029750, -0.004079]; mean -0.016915; times -(2/2) = 0.016915.
    """
    loss = simnpo_loss(torch.tensor([-4.0, -9.0]), torch.tensor([2.0, 3.0]), beta=2.0, gamma=0.5)
    expected = (math.log1p(math.exp(-3.5)) + math.log1p(math.exp(-5.5))) / 2
    assert_close(loss, torch.tensor(expected))


def test_no_reference_and_length_normalized():
    """Doubling an answer's length and its log-prob leaves the loss unchanged."""
    a = simnpo_loss(torch.tensor([-3.0]), torch.tensor([3.0]), beta=2.5, gamma=0.0)
    b = simnpo_loss(torch.tensor([-6.0]), torch.tensor([6.0]), beta=2.5, gamma=0.0)
    assert_close(a, b)


def test_gradient_pushes_the_log_prob_down():
    logp = torch.tensor([-2.0], requires_grad=True)
    simnpo_loss(logp, torch.tensor([4.0]), beta=2.5, gamma=0.0).backward()
    assert logp.grad.item() > 0  # descending the loss lowers log p
