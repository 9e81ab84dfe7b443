"""The quantization attack's quantizer: exact on its grid, closer with more bits, leaves the model alone."""

import pytest
import torch

from obliviate.evaluation.quantize import quantize_rtn, rtn


def test_hand_computed_row():
    w = torch.tensor([[1.0, -0.4, 0.26, 0.0]])
    # 2 bits: qmax 1, scale 1.0 -> round(w) in [-2, 1]
    assert torch.equal(rtn(w, 2), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # 4 bits: qmax 7, scale 1/7
    expected = torch.round(w * 7) / 7
    assert torch.allclose(rtn(w, 4), expected)


def test_values_on_the_grid_are_kept_and_groups_have_their_own_scale():
    w = torch.tensor([[7.0, -3.0, 1.0, 0.0, 0.07, 0.03, 0.01, 0.0]])
    assert torch.equal(rtn(w[:, :4], 4), w[:, :4])
    grouped = rtn(w, 4, group_size=4)
    assert torch.allclose(grouped, w)  # the small group keeps its own scale
    assert not torch.allclose(rtn(w, 4), w)  # one scale per row loses the small values


def test_error_shrinks_with_bits():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))
    errors = [(rtn(w, b, 32) - w).abs().mean().item() for b in (3, 4, 8)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01 * w.abs().mean().item()


def test_a_copy_with_only_the_linear_weights_changed(tiny_lm):
    model = tiny_lm.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    q = quantize_rtn(model, 4, group_size=32)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    changed = {k for k, v in q.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.endswith("proj.weight") for k in changed)
    ids = torch.tensor([[1, 5, 9, 2]])
    base = model(input_ids=ids).logits
    err = {b: (quantize_rtn(model, b, 32)(input_ids=ids).logits - base).abs().mean().item() for b in (4, 8)}
    assert err[8] < err[4]


def test_one_bit_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        rtn(torch.ones(2, 2), 1)
