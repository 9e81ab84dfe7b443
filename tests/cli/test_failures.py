"""Bad inputs and faults through the real command line: one sentence, exit 2, nothing left behind.

Each case prepares what it needs in the test's folder, runs `obliviate`, and checks that the command
exits 2 with one `obliviate: error:` line (never a traceback) and that no file or folder appeared.
docs/RELIABILITY.md lists the same cases with their fixes.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from obliviate.cli.main import main

LONG = "x" * 300


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def broken_models(tiny_model_dir, tmp_path_factory):
    """Copies of the tiny model, each broken one way, and an encoder config that names no architecture."""
    root = tmp_path_factory.mktemp("broken")
    weights = "model.safetensors"

    def copy(name):
        return shutil.copytree(tiny_model_dir, root / name)

    nan = copy("nan")
    state = load_file(nan / weights)
    key = sorted(state)[0]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, nan / weights, metadata={"format": "pt"})
    inf = copy("inf")
    state = load_file(inf / weights)
    state[key] = torch.full_like(state[key], float("inf"))
    save_file(state, inf / weights, metadata={"format": "pt"})
    truncated = copy("truncated")
    data = (truncated / weights).read_bytes()
    (truncated / weights).write_bytes(data[: len(data) // 2])
    garbled = copy("garbled")
    (garbled / weights).write_bytes(b"\xff" * 8 + data[8:])
    bad_config = copy("bad_config")
    (bad_config / "config.json").write_text("{not json")
    encoder = copy("encoder")
    (encoder / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 100}))
    no_config = root / "no_config"
    no_config.mkdir()
    (no_config / "weights.bin").write_bytes(b"0")
    return {"tiny": str(tiny_model_dir), **{p.name: str(p) for p in root.iterdir()}}


def _write(name: str, content: str | bytes = "") -> str:
    path = os.path.abspath(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(
        path, "wb" if isinstance(content, bytes) else "w", encoding=None if isinstance(content, bytes) else "utf-8"
    ) as f:
        f.write(content)
    return name


def _folder(name: str) -> str:
    os.makedirs(name)
    return name


def _dir_with(name: str) -> str:
    return os.path.dirname(_write(name, "{}"))


def _spec(text: str) -> str:
    return _write("spec.yaml", text)


def _run_folder(name: str = "run") -> str:
    _write(f"{name}/config.yaml", "target: The Beatles\nmodel: embedded\nmethod: ga\n")
    _write(f"{name}/data/manifest.json", "{}\n")
    return name


FORGET = ["forget", "The Beatles", "--model", "/does/not/exist", "--out", "run"]

# (id, argv (a callable of the broken models that may write inputs first), what the error line must contain)
CASES = [
    # settings
    ("steps-zero", lambda m: [*FORGET, "--steps", "0"], "--steps"),
    ("steps-negative", lambda m: [*FORGET, "--steps", "-3"], "--steps"),
    ("lr-zero", lambda m: [*FORGET, "--lr", "0"], "--lr"),
    ("lr-nan", lambda m: [*FORGET, "--lr", "nan"], "--lr"),
    ("lr-inf", lambda m: [*FORGET, "--lr", "inf"], "--lr"),
    ("lr-negative", lambda m: [*FORGET, "--lr=-1e-5"], "--lr"),
    ("batch-size-zero", lambda m: [*FORGET, "--batch-size", "0"], "--batch-size"),
    ("grad-accum-zero", lambda m: [*FORGET, "--grad-accum", "0"], "--grad-accum"),
    ("dropout-above-one", lambda m: [*FORGET, "--dropout", "1.5"], "--dropout"),
    ("dropout-nan", lambda m: [*FORGET, "--dropout", "nan"], "--dropout"),
    ("l2-negative", lambda m: [*FORGET, "--l2", "-1"], "--l2"),
    ("l2-inf", lambda m: [*FORGET, "--l2", "inf"], "--l2"),
    ("idk-nan", lambda m: [*FORGET, "--idk", "nan"], "--idk"),
    ("early-stop-nan", lambda m: [*FORGET, "--early-stop", "nan"], "--early-stop"),
    ("checkpoint-every-negative", lambda m: [*FORGET, "--checkpoint-every", "-1"], "--checkpoint-every"),
    ("budget-zero", lambda m: [*FORGET, "--budget", "0"], "--budget"),
    ("budget-inf", lambda m: [*FORGET, "--budget", "inf"], "--budget"),
    ("budget-with-a-method", lambda m: [*FORGET, "--method", "ga", "--budget", "10"], "--budget"),
    ("set-nan", lambda m: [*FORGET, "--method", "npo", "--set", "beta=.nan"], "finite"),
    ("set-inf", lambda m: [*FORGET, "--method", "npo", "--set", "beta=.inf"], "finite"),
    ("set-unknown", lambda m: [*FORGET, "--method", "npo", "--set", "betta=1"], "did you mean 'beta'"),
    ("set-not-a-pair", lambda m: [*FORGET, "--method", "npo", "--set", "beta"], "KEY=VALUE"),
    ("set-with-auto", lambda m: [*FORGET, "--set", "beta=0.1"], "--set"),
    ("keep-adapter-without-lora", lambda m: [*FORGET, "--keep-adapter"], "--lora"),
    ("unknown-attack", lambda m: [*FORGET, "--attacks", "telepathy"], "telepathy"),
    # targets
    ("target-empty", lambda m: ["forget", "", "--out", "run"], "empty"),
    ("target-blank", lambda m: ["forget", "   ", "--out", "run"], "empty"),
    ("target-misspelt-builtin", lambda m: ["forget", "harry_poter", "--out", "run"], "harry_potter"),
    ("spec-missing", lambda m: ["forget", "missing.yaml", "--out", "run"], "does not exist"),
    ("spec-not-yaml", lambda m: ["forget", _spec("name: [unclosed"), "--out", "run"], "not valid YAML"),
    ("spec-a-list", lambda m: ["forget", _spec("- a\n- b\n"), "--out", "run"], "mapping"),
    ("spec-name-a-number", lambda m: ["forget", _spec("name: 123\n"), "--out", "run"], "'name'"),
    ("spec-probes-a-number", lambda m: ["forget", _spec("name: Zorblax\nprobes: 5\n"), "--out", "run"], "'probes'"),
    ("spec-qa-a-number", lambda m: ["forget", _spec("name: Zorblax\nqa: 5\n"), "--out", "run"], "'qa'"),
    ("spec-documents-numbers", lambda m: ["forget", _spec("name: Z\ndocuments: [5]\n"), "--out", "run"], "documents"),
    ("spec-aliases-a-string", lambda m: ["forget", _spec("name: Z\naliases: zz\n"), "--out", "run"], "'aliases'"),
    ("spec-unknown-key", lambda m: ["forget", _spec("name: Z\nkeywrds: [a]\n"), "--out", "run"], "keywords"),
    ("spec-bad-kind", lambda m: ["forget", _spec("name: Z\nkind: opinion\n"), "--out", "run"], "kind"),
    ("spec-missing-document", lambda m: ["forget", _spec("name: Z\ndocuments: [gone.txt]\n")], "does not exist"),
    # documents and QA files, checked before the model is loaded or anything written
    ("docs-missing", lambda m: [*FORGET, "--docs", "missing.txt"], "does not exist"),
    ("docs-empty", lambda m: [*FORGET, "--docs", _write("empty.txt", "")], "empty"),
    ("docs-binary", lambda m: [*FORGET, "--docs", _write("bin.txt", b"\x00\x01text")], "binary"),
    ("docs-not-utf8", lambda m: [*FORGET, "--docs", _write("latin.txt", "caf\xe9".encode("latin-1"))], "UTF-8"),
    ("docs-pdf", lambda m: [*FORGET, "--docs", _write("paper.pdf", "%PDF")], "unsupported type"),
    ("docs-a-folder", lambda m: [*FORGET, "--docs", os.path.dirname(_write("folder.txt/x", "x"))], "not a file"),
    ("docs-bad-jsonl", lambda m: [*FORGET, "--docs", _write("d.jsonl", "{oops\n")], "not valid JSON"),
    ("docs-jsonl-no-text", lambda m: [*FORGET, "--docs", _write("d.jsonl", '{"body": "x"}\n')], "'text'"),
    ("qa-csv", lambda m: [*FORGET, "--qa", _write("qa.csv", "q,a\n")], "must be .jsonl"),
    ("qa-no-answer", lambda m: [*FORGET, "--qa", _write("qa.jsonl", '{"question": "q"}\n')], '"answer"'),
    ("qa-not-objects", lambda m: [*FORGET, "--qa", _write("qa.jsonl", "[1, 2]\n")], "JSON object"),
    # models
    ("model-missing", lambda m: FORGET, "/does/not/exist"),
    ("model-a-text-file", lambda m: [*FORGET[:2], "--model", _write("notes.txt", "hi"), "--out", "run"], "not a model"),
    ("model-no-config", lambda m: [*FORGET[:2], "--model", m["no_config"], "--out", "run"], "config.json"),
    ("model-config-not-json", lambda m: [*FORGET[:2], "--model", m["bad_config"], "--out", "run"], "bad_config"),
    ("model-encoder", lambda m: [*FORGET[:2], "--model", m["encoder"], "--out", "run"], "not a causal"),
    ("model-truncated", lambda m: [*FORGET[:2], "--model", m["truncated"], "--out", "run"], "Could not load"),
    ("model-garbled", lambda m: [*FORGET[:2], "--model", m["garbled"], "--out", "run"], "Could not load"),
    ("model-nan-weights", lambda m: [*FORGET[:2], "--model", m["nan"], "--out", "run"], "NaN"),
    ("model-inf-weights", lambda m: [*FORGET[:2], "--model", m["inf"], "--out", "run"], "infinite"),
    ("chat-nan-weights", lambda m: ["chat", m["nan"], "--prompt", "hi"], "NaN"),
    ("chat-zero-tokens", lambda m: ["chat", m["nan"], "--max-new-tokens", "0"], "--max-new-tokens"),
    # output folders
    ("out-a-file", lambda m: [*FORGET[:4], "--out", _write("notes.md", "mine")], "is a file"),
    ("out-under-a-file", lambda m: [*FORGET[:4], "--out", _write("f.md", "mine") + "/run"], "is a file"),
    ("out-not-a-run", lambda m: [*FORGET[:4], "--out", os.path.dirname(_write("mine/thesis.tex", "x"))], "not an"),
    (
        "out-not-a-run-overwrite",
        lambda m: [*FORGET, "--overwrite", "--out", os.path.dirname(_write("m/t", "x"))],
        "not",
    ),
    ("out-holds-a-run", lambda m: [*FORGET[:4], "--out", _run_folder()], "--resume"),
    ("out-name-too-long", lambda m: [*FORGET[:4], "--out", LONG], "too long"),
    ("resume-no-folder", lambda m: [*FORGET, "--resume", "--out", "typo"], "no run to resume"),
    ("resume-empty-folder", lambda m: [*FORGET, "--resume", "--out", _folder("e")], "no run"),
    (
        "data-holds-data",
        lambda m: ["data", "beatles", "--out", os.path.dirname(_write("d/manifest.json", "{}"))],
        "data",
    ),
    ("eval-no-data", lambda m: ["eval", m["tiny"], "--data", "nowhere"], "nowhere"),
]


def _tree(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case, argv, message", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_gets_one_sentence_and_leaves_nothing(case, argv, message, broken_models, tmp_path, capfd):
    args = argv(broken_models)
    before = _tree(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors (a flag's type) exit 2 the same way
        code = e.code
    assert code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("obliviate: error:"), err
    assert message in lines[0], lines[0]
    assert _tree(tmp_path) == before, "the failed command left files behind"


def test_at_least_forty_bad_inputs_are_covered():
    assert len(CASES) >= 40


def test_an_unwritable_obliviate_home_is_refused_before_converting(tmp_path, monkeypatch, capsys):
    """The embedded model is converted into $OBLIVIATE_HOME once; a home that cannot be written is
    refused before the conversion starts, not after it."""
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("OBLIVIATE_HOME", str(tmp_path / "file" / "home"))
    assert main(["forget", "The Beatles", "--out", "run"]) == 2
    line = capsys.readouterr().err.strip()
    assert "$OBLIVIATE_HOME" in line and "Traceback" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_read_only_out_folder_is_refused_up_front(tmp_path, monkeypatch, capsys):
    """os.access stands in for a folder without write permission (the tests may run as root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    assert main(["forget", "The Beatles", "--model", "/nope", "--out", str(ro / "run")]) == 2
    assert "is not writable" in capsys.readouterr().err
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("errno_name, words", [("EACCES", "permission denied"), ("ENOSPC", "no space left")])
def test_an_os_error_while_writing_is_one_sentence(errno_name, words, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A fault-injecting writer: the first file the run writes fails as a full disk or a denied write would."""
    import errno

    import obliviate.pipeline.run as run

    def fail(path, text):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), str(path))

    monkeypatch.setattr(run, "write_text", fail)
    out = tmp_path / "run"
    assert main(["forget", "The Beatles", "--model", str(tiny_model_dir), "--method", "ga", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_very_long_target_name_gets_a_short_default_folder(tmp_path, capsys):
    from obliviate.pipeline.run import SLUG_CHARS, slug

    name = "The Very Long Name " * 30
    assert len(slug(name)) <= SLUG_CHARS and slug(name) != slug(name + "!x")
    assert main(["forget", name, "--model", "/does/not/exist"]) == 2
    assert "/does/not/exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_only_an_unfinished_runs_config_does_not_block_a_retry(tmp_path, capsys):
    """A run that stopped before its data stage finished leaves config.yaml alone: the retry is not refused
    as 'already holds a run' (here it gets as far as the model), and a failed start leaves no config behind."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("target: The Beatles\n")
    assert main(["forget", "The Beatles", "--model", "/does/not/exist", "--out", str(out)]) == 2
    line = capsys.readouterr().err
    assert "/does/not/exist" in line and "already holds" not in line
    assert os.listdir(out) == [], "a config.yaml with nothing else is not a run, so it is not left behind"


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_live_run_is_never_touched_by_a_second_one(flag, tmp_path, capsys):
    """Two runs on one folder: while one holds it, a second is refused in one sentence that names the
    holder, and --overwrite does not delete the live run's files."""
    from obliviate.io import run_lock

    out = tmp_path / _run_folder()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with run_lock(out):
        assert main(["forget", "The Beatles", "--model", "/does/not/exist", "--out", str(out), flag]) == 2
        line = capsys.readouterr().err.strip()
        assert f"in use by another obliviate run (process {os.getpid()})" in line and "\n" not in line
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".obliviate.lock"} == before
