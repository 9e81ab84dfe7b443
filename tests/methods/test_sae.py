"""SAE training and its cache, feature ranking, and the `sae` / `sae_edit` methods on a tiny random model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import obliviate.methods.sae as sae_methods
from obliviate.errors import UserError
from obliviate.methods import get_method
from obliviate.methods.sae import project_out, rank_features, train_sae
from obliviate.models.hooks import HOOKS_FILE, Hooks, hooks_of
from obliviate.models.loading import load_model
from obliviate.models.sae import SAESettings, fit, load_sae

TINY = {"layer": 1, "width": 16, "k": 4, "tokens": 400, "epochs": 1, "batch_size": 128}


PROSE = [f"Passage {i}: the river runs past the old mill and the town square in spring." for i in range(40)]


@pytest.fixture
def sae_root(tmp_path, monkeypatch):
    """SAEs cached under tmp_path; a few sentences of prose stand in for the corpus (gensim loads slowly)."""
    monkeypatch.setattr(sae_methods, "sae_root", lambda: tmp_path / "sae")
    monkeypatch.setattr(sae_methods, "corpus_texts", lambda: PROSE)
    monkeypatch.setattr(sae_methods, "SPLICE_TEXTS", 2)
    return tmp_path / "sae"


def test_sae_is_cached_by_model_settings_and_data_and_reused(tiny_lm, forget_records, sae_root, monkeypatch):
    settings = SAESettings(**TINY)
    sae, info = train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records, settings)
    assert info["tokens"] > 0 and info["variance_explained"] <= 1 and "spliced_loss" in info
    assert (sae_root / info["key"] / "sae.safetensors").is_file() and info["key"].startswith("L1-mlp-w16-k4-")

    monkeypatch.setattr(sae_methods, "fit", lambda *a, **k: pytest.fail("a cached SAE was trained again"))
    again, info2 = train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records, settings)
    assert info2 == info and torch.equal(again.W_dec, sae.W_dec)
    monkeypatch.setattr(sae_methods, "fit", fit)

    wider = train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records, SAESettings(**{**TINY, "width": 8}))[1]
    fewer = train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records[:1], settings)[1]
    assert len({info["key"], wider["key"], fewer["key"]}) == 3
    with pytest.raises(UserError, match="trained on another model"):
        load_sae(sae_root / info["key"], model_hash="0" * 16)
    with pytest.raises(UserError, match="Layer 7 does not exist"):
        train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records, SAESettings(**{**TINY, "layer": 7}))
    with pytest.raises(UserError, match="width must be a positive"):
        train_sae(tiny_lm.model, tiny_lm.tokenizer, forget_records, SAESettings(**{**TINY, "width": 0}))


def test_ranking_puts_a_feature_that_fires_only_on_forget_tokens_first():
    """Feature 2 fires on half the forget tokens and never on retain; feature 0 fires everywhere;
    feature 1 fires on a quarter of both. Scores: (0.5 + 0.001) / 0.001 = 501 for feature 2, 1 for the others."""
    forget, retain = torch.zeros(8, 3), torch.zeros(8, 3)
    forget[:, 0] = retain[:, 0] = 1.0
    forget[:2, 1] = retain[:2, 1] = 0.5
    forget[:4, 2] = 3.0
    ranked = rank_features(forget, retain)
    assert [r["feature"] for r in ranked][0] == 2
    top = ranked[0]
    assert top["score"] == pytest.approx(501.0) and top["forget_freq"] == 0.5 and top["retain_freq"] == 0
    assert top["mean_active"] == pytest.approx(3.0) and top["t"] > 0
    assert ranked[1]["score"] == pytest.approx(1.0)


def test_project_out_removes_the_directions_from_the_mlp_output():
    """With scale 0 the output has no component along the directions, and the rest of it is unchanged."""
    torch.manual_seed(0)
    mlp = torch.nn.Module()
    mlp.down_proj = torch.nn.Linear(6, 4, bias=False)
    x, dirs = torch.randn(3, 6), torch.randn(2, 4)
    before = mlp.down_proj(x)
    project_out(mlp.down_proj, dirs, 0.0)
    q, _ = torch.linalg.qr(dirs.T)
    torch.testing.assert_close(mlp.down_proj(x) @ q, torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(mlp.down_proj(x) - mlp.down_proj(x) @ q @ q.T, before - before @ q @ q.T)


def test_project_out_edits_a_gpt2_conv1d_and_a_linear_alike():
    """GPT-2's Conv1D stores its weight transposed ([in, out]); nn.Linear stores [out, in]."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    x, dirs = torch.randn(3, 6), torch.randn(2, 4)
    q, _ = torch.linalg.qr(dirs.T)
    for proj in (Conv1D(4, 6), torch.nn.Linear(6, 4)):
        before = proj(x)
        project_out(proj, dirs, 0.0)
        torch.testing.assert_close(proj(x) @ q, torch.zeros(3, 2), atol=1e-5, rtol=0)
        torch.testing.assert_close(proj(x), before - before @ q @ q.T, atol=1e-5, rtol=1e-5)


def test_sae_clamps_features_with_hooks_that_save_and_reload(tiny_lm, method_data, sae_root, tmp_path):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ids = tok("Who were the Beatles?", return_tensors="pt")["input_ids"]
    plain = model(input_ids=ids).logits
    method = get_method("sae", **TINY, features=3, clamp=-20.0)
    hooks = method.edit(model, tok, method_data, None)
    assert hooks_of(model) is hooks and len(hooks.clamps[0]["features"]) == 3
    assert [f["feature"] for f in hooks.notes["features"]] == hooks.clamps[0]["features"]
    hooked = model(input_ids=ids).logits
    assert not torch.allclose(hooked, plain)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    hooks.save(tmp_path / "m")
    assert (tmp_path / "m" / HOOKS_FILE).is_file()
    again = load_model(str(tmp_path / "m"))
    assert again.model.obliviate_hooks == Hooks.load(tmp_path / "m")
    torch.testing.assert_close(again.model(input_ids=ids).logits, hooked, atol=1e-4, rtol=1e-4)
    from obliviate.models.generate import generate

    prompt = ["Who were the Beatles?"]
    base = load_model(str(tmp_path / "m"))
    base.model.obliviate_hooks = None
    for m in base.model.modules():
        m._forward_hooks.clear()
    # Ignoring the hooks gives the unedited model's answer.
    assert generate(again.model, tok, prompt, max_new_tokens=6, use_hooks=False) == generate(
        base.model, tok, prompt, max_new_tokens=6
    )


def test_sae_edit_writes_a_plain_model_that_transformers_loads(tiny_lm, method_data, sae_root, tmp_path):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ids = tok("Who were the Beatles?", return_tensors="pt")["input_ids"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert get_method("sae_edit", **TINY, features=3).edit(model, tok, method_data, None) is None
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["model.layers.1.mlp.down_proj.weight"] and hooks_of(model) is None
    model.save_pretrained(tmp_path / "e")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "e").eval()
    torch.testing.assert_close(plain(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(UserError, match="site=mlp"):
        get_method("sae_edit", **TINY, site="resid").edit(model, tok, method_data, None)
    with pytest.raises(UserError, match="positive number of SAE features"):
        get_method("sae", **TINY, features=0).edit(model, tok, method_data, None)
