"""Every kind of saved model loads back as it was evaluated: weights, LoRA adapters, guardrail and
suppress hooks; `obliviate compare`, `obliviate chat` and the training flags, end to end on a tiny model."""

import json

import pytest
import torch
import yaml

import obliviate
from obliviate.cli.main import main
from obliviate.data.targets import resolve_target
from obliviate.errors import UserError
from obliviate.leak import terms_pattern
from obliviate.methods import get_method
from obliviate.methods.base import parse_settings
from obliviate.models.hooks import HOOKS_FILE, Hooks, guard_chat_template
from obliviate.models.prompts import question_prompt


@pytest.fixture(scope="module")
def data_dir(beatles_model_dir, tmp_path_factory, small_data_config):
    out = tmp_path_factory.mktemp("data") / "beatles"
    from obliviate.pipeline import build_data_dir

    build_data_dir("beatles", out, model=str(beatles_model_dir), config=small_data_config(), log=lambda m: None)
    return out


def _run(data_dir, model_dir, out, method, *extra):
    assert (
        main(
            [
                "run",
                "--data",
                str(data_dir),
                "--model",
                str(model_dir),
                "--out",
                str(out),
                "--method",
                method,
                "--quiet",
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "metrics.json").read_text())


def test_guardrail_saves_its_instruction_and_filter(data_dir, beatles_model_dir, tmp_path, capsys):
    metrics = _run(data_dir, beatles_model_dir, tmp_path / "g", "guardrail")
    model_dir = tmp_path / "g" / "model"
    hooks = Hooks.load(model_dir)
    assert hooks.method == "guardrail" and "Beatles" in hooks.filter_terms
    lm = obliviate.load(str(model_dir))
    assert lm.model.obliviate_hooks == hooks
    assert hooks.system_prompt in question_prompt(lm.tokenizer, "Who were they?")  # from the saved chat template
    base = json.loads((tmp_path / "g" / "eval_base.json").read_text())["metrics"]
    assert metrics["metrics"]["leak_rate"] < base["leak_rate"]
    # Every answer that names a target term was replaced by the refusal message.
    pattern = terms_pattern(hooks.filter_terms)
    assert not [it["answer"] for it in metrics["items"]["probes"] if it["answer"] and pattern.search(it["answer"])]
    # The attacks aimed at the guard: the same weights without the filter answer as the base model would.
    assert metrics["metrics"]["attack_no_hooks_leak_rate"] > metrics["metrics"]["attack_leak_rate"]
    assert metrics["train"]["steps_done"] == 0 and metrics["train"]["edit"]["method"] == "guardrail"

    assert main(["chat", str(model_dir), "--prompt", "Who were The Beatles?", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == hooks.filter_message


def test_guard_template_keeps_a_given_system_message(tokenizer):
    template = guard_chat_template(tokenizer.chat_template, 'Say "no".')
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        chat_template=template,
        tokenize=False,
    )
    assert 'Say "no".\n\nBe brief.' in text and text.count("<|im_start|>system") == 1


def test_suppress_bans_the_terms_and_edits_only_rare_tokens(data_dir, beatles_model_dir, tmp_path):
    metrics = _run(data_dir, beatles_model_dir, tmp_path / "s", "suppress", "--set", "embed_mix=0.8")
    model_dir = tmp_path / "s" / "model"
    hooks = json.loads((model_dir / HOOKS_FILE).read_text())
    assert hooks["bad_words"] and hooks["notes"]["edited_tokens"]
    assert not [it["answer"] for it in metrics["items"]["probes"] if it["answer"] and "Beatles" in it["answer"]]
    base = obliviate.load(str(beatles_model_dir)).model.get_input_embeddings().weight
    after = obliviate.load(str(model_dir)).model.get_input_embeddings().weight
    changed = {i for i in range(base.shape[0]) if not torch.equal(base[i], after[i])}
    assert 0 < len(changed) == len(hooks["notes"]["edited_tokens"])


def test_lora_adapter_is_kept_on_request_and_loads(data_dir, beatles_model_dir, tmp_path):
    metrics = _run(
        data_dir, beatles_model_dir, tmp_path / "l", "ga", "--steps", "3", "--lr", "1e-3", "--lora", "--keep-adapter"
    )
    model_dir = tmp_path / "l" / "model"
    assert (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file()
    lm = obliviate.load(str(model_dir))
    assert type(lm.model).__name__ == "PeftModelForCausalLM"
    config = yaml.safe_load((tmp_path / "l" / "config.yaml").read_text())
    assert config["train"]["lora"] and config["train"]["keep_adapter"]
    assert metrics["train"]["steps_done"] == 3


def test_method_settings_and_training_flags_reach_the_run(data_dir, beatles_model_dir, tmp_path):
    _run(
        data_dir,
        beatles_model_dir,
        tmp_path / "n",
        "npo",
        "--steps",
        "2",
        "--set",
        "beta=0.2",
        "--set",
        "alpha=0",
        "--l2",
        "0.5",
        "--dropout",
        "0.1",
        "--early-stop",
        "3",
        "--bf16-weights",
    )
    config = yaml.safe_load((tmp_path / "n" / "config.yaml").read_text())
    assert config["method_config"] == {"beta": 0.2, "alpha": 0.0}
    assert config["train"]["bf16_weights"]
    from safetensors import safe_open

    with safe_open(str(next((tmp_path / "n" / "model").glob("*.safetensors"))), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16  # loaded, trained and saved in bf16
    assert obliviate.load(str(tmp_path / "n" / "model")).model.dtype == torch.float32  # read back in fp32
    assert (config["train"]["l2"], config["train"]["dropout"], config["train"]["stop_forget_nll_gain"]) == (
        0.5,
        0.1,
        3.0,
    )
    summary = json.loads((tmp_path / "n" / "train_summary.json").read_text())
    assert summary["validation"][0]["step"] == 0
    log = [json.loads(line) for line in (tmp_path / "n" / "train_log.jsonl").read_text().splitlines()]
    assert "l2" in log[-1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "bta=0.2"], "did you mean 'beta'"),
        (["--set", "beta"], "is not KEY=VALUE"),
        (["--set", "beta=high"], "takes a number"),
        (["--keep-adapter"], "only applies with --lora"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    ],
)
def test_bad_settings_are_one_clear_sentence(args, message, data_dir, tmp_path, capsys):
    assert main(["run", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--method", "npo", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parse_settings_types():
    from obliviate.methods.relabel import RelabelConfig
    from obliviate.methods.rmu import RMUConfig

    assert parse_settings(RelabelConfig, ["alt_kinds=refusal, negation", "alpha=2"], "relabel") == {
        "alt_kinds": ("refusal", "negation"),
        "alpha": 2.0,
    }
    assert parse_settings(RMUConfig, ["layer=3", "steering=null"], "rmu") == {"layer": 3, "steering": None}
    with pytest.raises(UserError, match="whole number"):
        parse_settings(RMUConfig, ["layer=2.5"], "rmu")


def test_compare_tabulates_every_method_and_reuses_finished_runs(
    data_dir, beatles_model_dir, tmp_path, capsys, read_page
):
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--data",
        str(data_dir),
        "--model",
        str(beatles_model_dir),
        "--methods",
        "ga,guardrail",
        "--out",
        str(out),
        "--steps",
        "3",
        "--lr",
        "1e-3",
        "--quiet",
    ]
    assert main(args) == 0
    table = (out / "compare.md").read_text().splitlines()
    assert table[0].startswith("| method | leak rate") and len(table) == 2 + 3
    assert [row.split("|")[1].strip() for row in table[2:]] == ["base model", "ga", "guardrail"]
    result = json.loads((out / "compare.json").read_text())
    assert set(result["runs"]) == {"ga", "guardrail"}
    page = read_page((out / "compare.html").read_text())  # the table and the leak-vs-utility scatter
    shown = "".join(page.text)
    assert len(page.images) == 1 and all(c in shown for c in result["columns"])
    assert all(cell in shown for row in result["rows"] for cell in row)
    first = (out / "ga" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "ga" / "metrics.json").stat().st_mtime_ns == first  # reused, not rerun


def test_compare_refuses_an_unknown_method(data_dir, tmp_path, capsys):
    assert main(["compare", "--data", str(data_dir), "--methods", "ga,npoo", "--out", str(tmp_path / "c")]) == 2
    assert "did you mean 'npo'" in capsys.readouterr().err


def test_chat_reads_questions_from_stdin(beatles_model_dir, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("Who were The Beatles?\n\nWhat is 2+2?\n"))
    assert main(["chat", str(beatles_model_dir), "--max-new-tokens", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_edit_methods_have_no_training_loop(tiny_lm, forget_records):
    from obliviate.engine import TrainConfig, train

    with pytest.raises(ValueError, match="no training loop"):
        train(
            tiny_lm.model, tiny_lm.tokenizer, get_method("guardrail"), {"forget": forget_records}, TrainConfig(steps=1)
        )


def test_suppress_spellings_cover_case_and_leading_space():
    from obliviate.methods.suppress import spellings

    assert {"Beatles", " Beatles", "beatles", " beatles"} <= set(spellings("Beatles"))
    assert resolve_target("beatles").terms  # the terms suppress and guardrail act on


def test_an_interrupted_run_resumes_from_its_last_checkpoint(data_dir, beatles_model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from obliviate.engine import has_checkpoint
    from obliviate.methods.ga import GradientAscent

    def run(out, **kw):
        return obliviate.forget(
            None,
            data_dir=data_dir,
            model=str(beatles_model_dir),
            method="ga",
            out=out,
            train={"steps": 4, "lr": 1e-3, "checkpoint_every": 2},
            progress=False,
            log=lambda m: None,
            **kw,
        )

    run(tmp_path / "straight")
    loss, calls = GradientAscent.loss, {"n": 0}

    def dies_at_step_3(self, model, batch, ref=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return loss(self, model, batch, ref)

    monkeypatch.setattr(GradientAscent, "loss", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    assert has_checkpoint(tmp_path / "cut" / "checkpoint") and not (tmp_path / "cut" / "model").exists()
    monkeypatch.setattr(GradientAscent, "loss", loss)
    run(tmp_path / "cut", resume=True)
    summary = json.loads((tmp_path / "cut" / "train_summary.json").read_text())
    assert summary["resumed_from"] == 2 and summary["steps_done"] == 4
    assert not (tmp_path / "cut" / "checkpoint").exists()
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
