"""Every stage on a tiny random model of each causal-LM family users bring: GPT-2, OPT, Llama, Qwen2, Gemma 2,
Gemma 3, Phi-3 and Mistral.

Each model has 2 layers, hidden size 32, and the real SmolLM2 tokenizer: with its chat template for the chat
families, without it (plain-text prompts) for GPT-2 and OPT, which have none. GPT-2, OPT and the Gemmas tie
their embeddings; the others do not. A random model knows nothing, so the target is a made-up entity with
given QA pairs and a document, which become forget data whatever the model answers.
"""

from __future__ import annotations

import json

import pytest
import torch

import obliviate
from obliviate.errors import UserError
from obliviate.methods import METHODS, get_method

SMALL = {"hidden": 32, "layers": 2, "heads": 4}
# family -> (config class, its fields for a tiny model, chat template?)
FAMILIES = {
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=512), False),
    "opt": (
        "OPTConfig",
        dict(hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32),
        False,
    ),
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False), True),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=False), True),
    "gemma2": ("Gemma2Config", dict(head_dim=8, tie_word_embeddings=True), True),
    "gemma3_text": ("Gemma3TextConfig", dict(head_dim=8, tie_word_embeddings=True), True),
    "phi3": ("Phi3Config", dict(tie_word_embeddings=False), True),
    "mistral": ("MistralConfig", dict(tie_word_embeddings=False), True),
}
_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def tiny_family_model(family: str, vocab_size: int, seed: int = 0):
    """A tiny random model of `family` (2 layers, hidden 32), fp32, in eval mode."""
    import transformers

    name, fields, _ = FAMILIES[family]
    extra = fields if family in ("gpt2", "opt") else {**_DECODER, **fields}
    config = getattr(transformers, name)(
        vocab_size=vocab_size, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2, **extra
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).float().eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory, tokenizer, tokenizer_dir):
    """(family, directory of its tiny model with the SmolLM2 tokenizer, chat template or none)."""
    from transformers import AutoTokenizer

    family = request.param
    path = tmp_path_factory.mktemp(f"tiny-{family}")
    tiny_family_model(family, len(tokenizer)).save_pretrained(path)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not FAMILIES[family][2]:
        tok.chat_template = None
    tok.save_pretrained(path)
    return family, path


def _eval_config():
    from obliviate.evaluation.config import EvalConfig

    return EvalConfig(
        max_new_tokens=8,
        attack_probes=4,
        mia_records=8,
        keep_loss_probes=8,
        relearn_steps=2,
        relearn_records=4,
        quant_bits=(4,),
        fork=False,
    )


@pytest.fixture(scope="module")
def family_run(family_dir, zorblax, tmp_path_factory, small_data_config):
    """`obliviate.forget` on the family's model: data, base evaluation, 2 LoRA steps of NPO, save, evaluation with
    every attack group; returns (family, model dir, run dir, metrics)."""
    family, path = family_dir
    out = tmp_path_factory.mktemp(f"run-{family}") / "run"
    metrics = obliviate.forget(
        zorblax,
        model=str(path),
        method="npo",
        out=out,
        train={"steps": 2, "lora": True, "batch_size": 2, "max_length": 64, "lr": 1e-3},
        data=small_data_config(qa_holdout=0.25, max_doc_passages=4),
        eval=_eval_config(),
        progress=False,
        log=lambda m: None,
    )
    return family, path, out, metrics


@pytest.mark.slow
def test_every_stage_runs_on_the_family(family_run):
    """Load, data, LoRA training with the family's targets, merge, save, reload and evaluation with attacks."""
    from obliviate.models.families import find_family
    from obliviate.models.loading import load_model

    family, base_dir, out, metrics = family_run
    assert metrics["method"] == "npo" and metrics["train"]["steps_done"] == 2
    assert (out / "report.md").is_file()
    attacks = json.dumps(metrics)
    assert "quant" in attacks and "relearn" in attacks
    reloaded = load_model(str(out / "model"))
    base = load_model(str(base_dir))
    assert type(reloaded.model) is type(base.model) and find_family(reloaded.model) is not None
    assert reloaded.is_chat == FAMILIES[family][2]
    assert reloaded.model.config.tie_word_embeddings == base.model.config.tie_word_embeddings
    moved = [n for n, p in reloaded.model.named_parameters() if not torch.equal(p, base.model.state_dict()[n])]
    assert moved, "the merged LoRA update did not reach the saved weights"
    prompt = (out / "data" / "forget.jsonl").read_text().splitlines()[0]
    assert json.loads(prompt)["question"] or json.loads(prompt)["text"]


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_saves_and_reloads_on_the_family(family_run, zorblax, method, tmp_path):
    """2 steps of each training method (or the edit of an edit method) through the engine, saved and reloaded
    with the same weights and hooks."""
    from obliviate.engine import TrainConfig, train
    from obliviate.io import read_jsonl
    from obliviate.models.hooks import hooks_of
    from obliviate.models.loading import load_model

    family, base_dir, out, _ = family_run
    lm = load_model(str(base_dir))
    data = {name: read_jsonl(out / "data" / f"{name}.jsonl") for name in ("forget", "retain", "alt")}
    # Declining answers for the preference methods, whatever alternative kinds the data stage chose.
    declining = (("refusal", "I can't say."), ("negation", "I don't know of Zorblax."))
    data["alt"] += [
        {"question": r["question"], "answer": a, "kind": k}
        for r in data["forget"]
        if "question" in r
        for k, a in declining
    ]
    unlearner = get_method(method, **({"reinforce_steps": 2} if method == "whp" else {}))
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    if unlearner.trains:
        cfg = TrainConfig(steps=2, batch_size=2, max_length=64, lr=1e-3, checkpoint_every=0)
        model = train(lm.model, lm.tokenizer, unlearner, data, cfg, progress=False).model
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()), "nothing trained"
    else:
        model = lm.model
        unlearner.edit(model, lm.tokenizer, data, zorblax)
    model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    if hooks_of(model) is not None:
        hooks_of(model).save(tmp_path)
    again = load_model(str(tmp_path))
    saved = dict(again.model.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    assert (hooks_of(again.model) is None) == (hooks_of(model) is None)


def test_layer_names_are_found_per_family(family_dir):
    """RMU trains the MLPs of its layers, LoRA's 'auto' targets exist, and the MLP's output projection is found,
    in every family."""
    from obliviate.engine.trainer import lora_targets
    from obliviate.models.families import family_of
    from obliviate.models.loading import load_model

    family, path = family_dir
    model = load_model(str(path)).model
    fam = family_of(model)
    rmu = get_method("rmu", layer=0, steering=1.0)
    rmu.setup(model, None, {"forget": []}, None)
    trained = [n for n, _ in model.named_parameters() if rmu.trainable(n)]
    assert trained and all(fam.layer_part(n)[0] == 0 for n in trained)
    modules = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert set(lora_targets(model, "auto")) <= modules
    out = fam.mlp_out_module(model.get_submodule(f"{fam.layers}.0"))  # what sae_edit edits
    assert getattr(out, "nf", getattr(out, "out_features", None)) == model.config.hidden_size  # GPT-2's Conv1D: nf


def test_an_unknown_family_is_one_sentence_for_a_method_that_names_layers():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from obliviate.engine.trainer import lora_targets

    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    with pytest.raises(UserError, match=r"model type 'gpt_neox'") as e:
        get_method("rmu", layer=0, steering=1.0).setup(model, None, {"forget": []}, None)
    assert "\n" not in str(e.value) and str(e.value).endswith(".")
    assert lora_targets(model, "auto") == "all-linear"
