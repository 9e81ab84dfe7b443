"""RMU: the masked MSE on hand-made activations, the layer and parameters it picks, and a few steps on a tiny model."""

from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from obliviate.errors import UserError
from obliviate.methods import get_method
from obliviate.methods.rmu import layer_output, masked_mse, rmu_loss
from obliviate.models.prompts import encode


def test_masked_mse_hand_computed():
    """h = [[1, 2], [3, 4]], target [1, 0]: squared distances 0 + 4 = 4 and 4 + 16 = 20, hidden size 2.
    Mask [1, 0]: 4 / (1 * 2) = 2. Mask [1, 1]: 24 / (2 * 2) = 6."""
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([1.0, 0.0])
    assert_close(masked_mse(h, target, torch.tensor([[1, 0]])), torch.tensor(2.0))
    assert_close(masked_mse(h, target, torch.tensor([[1, 1]])), torch.tensor(6.0))


def test_rmu_loss_adds_alpha_times_the_retain_mse():
    """Forget as above with mask [1, 1]: 6. Retain h = [[0, 1]] vs ref [[0, 0]]: 1 / 2 = 0.5. alpha 10: 6 + 5 = 11."""
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    loss, forget, retain = rmu_loss(
        h,
        torch.tensor([[1, 1]]),
        torch.tensor([1.0, 0.0]),
        torch.tensor([[[0.0, 1.0]]]),
        torch.zeros(1, 1, 2),
        torch.tensor([[1]]),
        alpha=10.0,
    )
    assert_close((loss, forget, retain), (torch.tensor(11.0), torch.tensor(6.0), torch.tensor(0.5)))


def _fake_model(layers: int, hidden: int = 8):
    return SimpleNamespace(
        config=SimpleNamespace(num_hidden_layers=layers, hidden_size=hidden, model_type="llama"),
        named_parameters=lambda: iter(()),
    )


def test_default_layer_and_trained_parameters():
    """32 layers: layer 7, MLPs of layers 5, 6, 7 (full names and LoRA adapter names)."""
    method = get_method("rmu", steering=6.5)
    method.setup(_fake_model(32), None, {"forget": []}, None)
    assert method.layer == 7 and method.updated == {5, 6, 7}
    assert method.trainable("model.layers.5.mlp.down_proj.weight")
    assert method.trainable("base_model.model.model.layers.7.mlp.up_proj.lora_A.default.weight")
    assert not method.trainable("model.layers.4.mlp.down_proj.weight")
    assert not method.trainable("model.layers.17.mlp.down_proj.weight")
    assert not method.trainable("model.layers.6.self_attn.q_proj.weight")
    assert not method.trainable("model.embed_tokens.weight")
    down_only = get_method("rmu", steering=1.0, layer=3, params="mlp.down_proj.")
    down_only.setup(_fake_model(32), None, {"forget": []}, None)
    assert down_only.updated == {1, 2, 3}
    assert down_only.trainable("model.layers.2.mlp.down_proj.weight") and not down_only.trainable(
        "model.layers.2.mlp.up_proj.weight"
    )


def test_direction_is_a_seeded_unit_vector():
    a, b, c = (get_method("rmu", steering=1.0, seed=s) for s in (0, 0, 1))
    for m in (a, b, c):
        m.setup(_fake_model(8, hidden=16), None, {"forget": []}, None)
    assert_close(a.direction.norm(), torch.tensor(1.0))
    assert torch.equal(a.direction, b.direction) and not torch.equal(a.direction, c.direction)


def test_a_layer_the_model_lacks_is_a_user_error():
    with pytest.raises(UserError, match="between 0 and 0"):
        get_method("rmu", layer=1, steering=1.0).setup(_fake_model(2), None, {"forget": []}, None)


def test_layer_output_is_the_decoder_layers_output(tiny_lm, forget_records):
    """hidden_states[l + 1] is what decoder layer l returns."""
    model = tiny_lm.model
    seen = {}
    handle = model.model.layers[0].register_forward_hook(
        lambda mod, args, out: seen.update(h=out[0] if isinstance(out, tuple) else out)
    )
    try:
        with torch.no_grad():
            h = layer_output(model, encode(tiny_lm.tokenizer, forget_records[:2]), 0)
    finally:
        handle.remove()
    assert torch.equal(h, seen["h"])


def test_steering_defaults_to_scale_times_the_forget_activation_norm(tiny_lm, forget_records):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    method = get_method("rmu", scale=2.0)
    method.setup(model, tok, {"forget": forget_records}, model)
    sub = encode(tok, forget_records)
    with torch.no_grad():
        norms = layer_output(model, sub, 0)[sub["labels"] != -100].norm(dim=-1)
    assert method.layer == 0
    assert method.steering == pytest.approx(2.0 * norms.mean().item(), rel=1e-5)


def test_setup_chooses_the_trained_parameters(tiny_lm):
    """Before `setup` the layer is unknown; after it only the MLPs of layers l-2..l are trainable."""
    method = get_method("rmu", steering=1.0)
    model = tiny_lm.model
    method.setup(model, tiny_lm.tokenizer, {"forget": []}, None)
    assert {n for n, _ in model.named_parameters() if method.trainable(n)} == {
        f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")
    }


def test_three_steps_move_only_the_chosen_mlp(tiny_lm, method_data, run_steps):
    run = run_steps(get_method("rmu"), tiny_lm.model, tiny_lm.tokenizer, method_data)
    assert run.moved == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    first, last = run.outs[0].logs, run.outs[-1].logs
    assert last["forget_mse"] < first["forget_mse"]
