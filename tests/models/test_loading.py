"""load_model: local directories load; anything that is not a causal LM is a one-sentence UserError."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, BertModel, T5Config

from obliviate.errors import UserError
from obliviate.models.loading import LoadedModel, load_model, resolve_model


def _one_sentence(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.rstrip().endswith("."), msg
    return msg


def test_loads_the_tiny_model_directory(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    assert isinstance(lm, LoadedModel)
    assert lm.source == lm.path == str(tiny_model_dir)
    assert lm.model.config.model_type == "llama" and lm.model.config.num_hidden_layers == 2
    assert not lm.model.training
    assert lm.model.dtype == torch.float32
    assert lm.tokenizer.pad_token_id == 2
    assert lm.is_chat


def test_a_tokenizer_without_pad_gets_eos_as_pad(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "nopad"
    shutil.copytree(tiny_model_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert AutoTokenizer.from_pretrained(d).pad_token is None  # the premise
    lm = load_model(str(d))
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token


def test_missing_path(tmp_path):
    with pytest.raises(UserError) as e:
        load_model(str(tmp_path / "does" / "not" / "exist"))
    assert "does not exist" in _one_sentence(e)


def test_relative_missing_path():
    with pytest.raises(UserError):
        load_model("./no-such-model-dir")


def test_a_file_that_is_not_a_model(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    with pytest.raises(UserError) as e:
        load_model(str(f))
    assert "not a model" in _one_sentence(e)


def test_a_directory_without_config_json(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(UserError) as e:
        load_model(str(tmp_path))
    assert "config.json" in _one_sentence(e)


def test_a_gguf_that_is_not_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "home"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file")
    with pytest.raises(UserError) as e:
        load_model(str(bad))
    assert "GGUF" in str(e.value)
    assert not (tmp_path / "home" / "models").exists() or not any((tmp_path / "home" / "models").iterdir())


def test_an_encoder_decoder_config_is_not_a_causal_lm(tmp_path):
    T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UserError) as e:
        load_model(str(tmp_path))
    assert "not a causal language model" in _one_sentence(e)


def test_a_model_directory_without_weights(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "noweights"
    shutil.copytree(tiny_model_dir, d)
    for w in d.glob("*.safetensors"):
        w.unlink()
    with pytest.raises(UserError, match="Could not load"):
        load_model(str(d))


def test_a_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError):
        load_model(str(tmp_path))


def test_a_config_json_that_is_not_a_transformers_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UserError):
        load_model(str(tmp_path))


def test_a_bert_encoder_is_not_a_causal_lm(tmp_path):
    BertModel(
        BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ).save_pretrained(tmp_path)
    with pytest.raises(UserError):
        load_model(str(tmp_path))


def test_a_hub_id_is_passed_through_without_network():
    assert resolve_model("someorg/somemodel") == ("someorg/somemodel", "someorg/somemodel")


def test_an_unknown_hub_id_is_a_user_error():
    # HF_HUB_OFFLINE is set by conftest, so this cannot touch the network.
    with pytest.raises(UserError) as e:
        load_model("obliviate-tests/no-such-model")
    assert "no-such-model" in str(e.value)


@pytest.mark.slow
def test_embedded_model_is_clean_and_saveable(tmp_path):
    lm = load_model()
    assert lm.source == "embedded" and lm.is_chat
    config = json.loads((Path(lm.path) / "config.json").read_text())
    assert "quantization_config" not in config
    assert not hasattr(lm.model.config, "quantization_config")

    lm.model.save_pretrained(tmp_path / "copy")
    lm.tokenizer.save_pretrained(tmp_path / "copy")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    ids = lm.tokenizer("The Beatles were", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(again(ids).logits, lm.model(ids).logits)
    assert load_model(str(tmp_path / "copy")).tokenizer.chat_template == lm.tokenizer.chat_template


def test_bf16_loads_of_a_gguf_cache_read_a_bf16_copy_written_once(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path))
    cached = tmp_path / "models" / "tiny-0123456789ab"  # where convert_gguf writes
    shutil.copytree(tiny_model_dir, cached)
    lm = load_model(str(cached), dtype=torch.bfloat16)
    copy = tmp_path / "models" / "tiny-0123456789ab-bf16"
    weights = copy / "model.safetensors"
    assert weights.is_file() and lm.path == str(cached)  # the model keeps its own name and path
    fp32 = load_model(str(cached)).model.state_dict()
    for name, value in lm.model.state_dict().items():
        assert value.dtype == torch.bfloat16 and torch.equal(value, fp32[name].to(torch.bfloat16)), name
    written = weights.stat().st_mtime_ns
    load_model(str(cached), dtype=torch.bfloat16)
    assert weights.stat().st_mtime_ns == written  # written once
    other = tmp_path / "elsewhere"  # a directory outside the cache loads as it is
    shutil.copytree(tiny_model_dir, other)
    load_model(str(other), dtype=torch.bfloat16)
    assert not (tmp_path / "elsewhere-bf16").exists()
