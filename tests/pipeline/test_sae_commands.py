"""`obliviate sae train` and `obliviate sae features` end to end on a tiny random model."""

import json

import pytest

import obliviate.methods.sae as sae_methods
from obliviate.cli.main import main
from obliviate.io import write_jsonl

SMALL = ["--width", "16", "--k", "4", "--tokens", "400", "--epochs", "1", "--batch-size", "128"]


@pytest.fixture
def data_dir(tmp_path, tiny_model_dir, forget_records, retain_records, monkeypatch):
    monkeypatch.setattr(sae_methods, "sae_root", lambda: tmp_path / "sae")
    monkeypatch.setattr(sae_methods, "corpus_texts", lambda: [f"Passage {i}: a quiet river town." for i in range(40)])
    monkeypatch.setattr(sae_methods, "SPLICE_TEXTS", 2)
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"model": str(tiny_model_dir)}))
    write_jsonl(data / "forget.jsonl", forget_records)
    write_jsonl(data / "retain.jsonl", retain_records)
    return data


def test_sae_train_then_features_reuse_the_cached_sae(data_dir, tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    assert main(["sae", "train", *model, "--layers", "0,1", "--data", str(data_dir.parent), *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.count("variance explained") == 2 and "layer 0 (mlp)" in out and "layer 1 (mlp)" in out
    assert len(list((tmp_path / "sae").iterdir())) == 2

    assert main(["sae", "features", str(data_dir.parent), "--layer", "1", "--top", "3", *SMALL]) == 0
    captured = capsys.readouterr()
    assert "Reusing the SAE" in captured.err and len(list((tmp_path / "sae").iterdir())) == 2
    assert captured.out.count("feature ") == 3 and "[[" in captured.out


def test_sae_commands_reject_bad_input_in_one_sentence(data_dir, tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    assert main(["sae", "train", *model, "--layers", "9", *SMALL]) == 2
    assert "Layer 9 does not exist in this 2-layer model" in capsys.readouterr().err
    assert main(["sae", "train", *model, "--layers", "one", *SMALL]) == 2
    assert "--layers takes comma-separated layer numbers" in capsys.readouterr().err
    assert main(["sae", "train", *model, *SMALL[:-2], "--width", "0"]) == 2
    assert "width must be a positive" in capsys.readouterr().err
    assert main(["sae", "features", str(tmp_path), *SMALL]) == 2
    assert "neither a run nor a data directory" in capsys.readouterr().err
