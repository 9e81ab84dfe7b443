"""The TopK SAE against hand-computed values, its training on planted features, and the feature-clamp hook."""

import pytest
import torch

from obliviate.errors import UserError
from obliviate.models.hooks import FeatureClamp, Hooks, attach, clamps_off
from obliviate.models.sae import SAESettings, SparseAutoencoder, fit, sae_loss, site_module, variance_explained


def _hand_sae(k: int) -> SparseAutoencoder:
    sae = SparseAutoencoder(2, 3, k)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    with torch.no_grad():
        sae.W_enc.copy_(rows)
        sae.W_dec.copy_(rows)
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -0.5]))
        sae.b_dec.zero_()
    return sae


def test_encode_decode_and_loss_match_hand_computed_values():
    """x = [1, 2]: pre-activations ReLU([1, 2, 0.6 + 1.6 - 0.5]) = [1, 2, 1.7].
    k=1 keeps feature 1: z = [0, 2, 0], x_hat = [0, 2], loss = (1^2 + 0^2) / 2 = 0.5.
    k=2 keeps features 1 and 2: z = [0, 2, 1.7], x_hat = [1.02, 3.36], loss = (0.02^2 + 1.36^2) / 2 = 0.925."""
    x = torch.tensor([[1.0, 2.0]])
    one, two = _hand_sae(1), _hand_sae(2)
    torch.testing.assert_close(one.pre(x), torch.tensor([[1.0, 2.0, 1.7]]))
    torch.testing.assert_close(one.encode(x), torch.tensor([[0.0, 2.0, 0.0]]))
    torch.testing.assert_close(one(x), torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(sae_loss(one, x), torch.tensor(0.5))
    torch.testing.assert_close(two.encode(x), torch.tensor([[0.0, 2.0, 1.7]]))
    torch.testing.assert_close(two(x), torch.tensor([[1.02, 3.36]]))
    torch.testing.assert_close(sae_loss(two, x), torch.tensor(0.925))
    # Exactly k features are active per token.
    assert (two.encode(torch.randn(5, 2)) > 0).sum(-1).le(2).all()


def test_training_recovers_planted_sparse_features():
    """16 random unit directions in 32 dimensions, each active on 10% of tokens with size 1..3: every one
    is matched by a decoder row with cosine >= 0.9, and the SAE explains most of the variance."""
    g = torch.Generator().manual_seed(0)
    planted = torch.randn(16, 32, generator=g)
    planted /= planted.norm(dim=1, keepdim=True)
    on = torch.rand(8192, 16, generator=g) < 0.1
    x = (on * (1 + 2 * torch.rand(8192, 16, generator=g))) @ planted
    sae = fit(x, SAESettings(width=32, k=4, epochs=10, batch_size=256, lr=1e-2))
    cos = planted @ sae.W_dec.T  # decoder rows have unit norm
    assert cos.max(1).values.min() >= 0.9
    assert variance_explained(sae, x) > 0.9


def test_bad_widths_layers_and_sites_are_one_sentence_errors(tiny_lm):
    with pytest.raises(UserError, match="positive width"):
        SparseAutoencoder(4, 0, 1)
    with pytest.raises(UserError, match="Layer 5 does not exist"):
        site_module(tiny_lm.model, 5, "mlp")
    with pytest.raises(UserError, match="Unknown SAE site"):
        site_module(tiny_lm.model, 0, "attention")


def test_clamp_sets_a_firing_feature_to_its_value_and_leaves_other_tokens():
    """Feature e = d = [1, 0], value -1: x = [2, 3] fires with a = 2, so x + (-1 - 2) [1, 0] = [-1, 3];
    x = [-1, 5] does not fire (a = ReLU(-1) = 0) and is unchanged."""
    clamp = FeatureClamp(0, "mlp", [0], [[1.0, 0.0]], [0.0], [0.0, 0.0], [[1.0, 0.0]], [-1.0])
    out = clamp.clamp(torch.tensor([[2.0, 3.0], [-1.0, 5.0]]))
    torch.testing.assert_close(out, torch.tensor([[-1.0, 3.0], [-1.0, 5.0]]))
    assert FeatureClamp(**clamp.spec()).spec() == clamp.spec()


def test_clamps_attach_replace_switch_off_and_survive_a_bf16_copy(tiny_lm):
    import copy

    model, ids = tiny_lm.model, torch.tensor([[5, 6, 7, 8]])
    plain = model(input_ids=ids).logits
    d = model.config.hidden_size
    spec = FeatureClamp(
        1, "mlp", [0], torch.ones(1, d), [1.0], torch.zeros(d), torch.ones(1, d) / d**0.5, [-5.0]
    ).spec()
    attach(model, Hooks(method="sae", clamps=[spec]))
    attach(model, Hooks(method="sae", clamps=[spec]))  # replaces, does not stack
    hooked = model(input_ids=ids).logits
    assert not torch.allclose(plain, hooked)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 1
    with clamps_off(model):
        torch.testing.assert_close(model(input_ids=ids).logits, plain)
    half = copy.deepcopy(model).to(torch.bfloat16)
    torch.testing.assert_close(half(input_ids=ids).logits.float(), hooked, atol=0.1, rtol=0.1)
