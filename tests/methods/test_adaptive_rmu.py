"""Adaptive RMU: the per-input norm on hand-made activations, the target it builds, and a few steps on a tiny model."""

import copy

import pytest
import torch
from torch.testing import assert_close

from obliviate.methods import get_method
from obliviate.methods.adaptive_rmu import input_norms
from obliviate.methods.rmu import layer_output, masked_mse
from obliviate.models.prompts import encode


def test_input_norms_hand_computed():
    """Row 0: tokens [3, 4] and [0, 1], norms 5 and 1, both counted: 3. Row 1: [6, 8] and [1, 0], norms 10
    and 1, only the first counted: 10. Row 2: no counted token: 0."""
    h = torch.tensor([[[3.0, 4.0], [0.0, 1.0]], [[6.0, 8.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    assert_close(input_norms(h, mask), torch.tensor([3.0, 10.0, 0.0]))


def test_setup_keeps_rmus_layer_and_direction_without_measuring_a_fixed_c(tiny_lm):
    """Same layer, trained MLPs and direction as RMU with the same seed; no forget data is read."""
    model = tiny_lm.model
    adaptive, rmu = get_method("adaptive_rmu"), get_method("rmu", steering=1.0)
    adaptive.setup(model, tiny_lm.tokenizer, {"forget": []}, model)
    rmu.setup(model, tiny_lm.tokenizer, {"forget": []}, model)
    assert (adaptive.layer, adaptive.updated) == (rmu.layer, rmu.updated) == (0, {0})
    assert torch.equal(adaptive.direction, rmu.direction)
    assert {n for n, _ in model.named_parameters() if adaptive.trainable(n)} == {
        f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")
    }


def test_target_is_beta_times_each_inputs_frozen_norm(tiny_lm, forget_records, retain_records):
    """With ref == model, the forget MSE equals masked_mse(h, beta * n_b * u) with n_b each row's mean
    answer-token norm, and the retain MSE is 0; the logged steering is beta * mean(n_b)."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ref = copy.deepcopy(model).eval()
    method = get_method("adaptive_rmu", beta=3.0, alpha=7.0)
    method.setup(model, tok, {"forget": forget_records}, ref)
    batch = {"forget": encode(tok, forget_records), "retain": encode(tok, retain_records)}
    out = method.loss(model, batch, ref)

    mask = batch["forget"]["labels"] != -100
    with torch.no_grad():
        h = layer_output(model, batch["forget"], 0)
    norms = torch.stack([h[b][mask[b]].norm(dim=-1).mean() for b in range(h.shape[0])])
    expected = masked_mse(h, 3.0 * norms[:, None, None] * method.direction, mask)
    assert out.logs["forget_mse"] == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["retain_mse"] == pytest.approx(0.0, abs=1e-10)
    assert out.logs["steering"] == pytest.approx(3.0 * norms.mean().item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_three_steps_move_only_the_chosen_mlp(tiny_lm, method_data, run_steps):
    run = run_steps(get_method("adaptive_rmu"), tiny_lm.model, tiny_lm.tokenizer, method_data)
    assert run.moved == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    first, last = run.outs[0].logs, run.outs[-1].logs
    assert last["forget_mse"] < first["forget_mse"]
