"""The command line: bad input exits 2 with one 'obliviate: error:' line, and never touches an existing run."""

import os

import pytest

from obliviate.cli.main import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out (runs/...) lands in the test's own directory


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("obliviate: error:"), err
    return lines[0]


@pytest.mark.parametrize("target", ["", "   "])
def test_empty_target(target, capsys, tmp_path):
    assert main(["forget", target]) == 2
    assert "empty" in _error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_missing_model_path(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["forget", "The Beatles", "--model", "/does/not/exist", "--out", str(out), "--quiet"]) == 2
    assert "/does/not/exist" in _error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("flag", [["--steps", "0"], ["--steps", "-3"], ["--lr", "0"], ["--lr=-1e-5"]])
def test_non_positive_numbers(flag, capsys):
    assert main(["forget", "The Beatles", *flag]) == 2
    assert flag[0].split("=")[0] in _error_line(capsys)


def test_unknown_method_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["forget", "The Beatles", "--method", "npx"])
    assert e.value.code == 2
    assert "npo" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["forget", "--help"])
    assert e.value.code == 0
    assert "--overwrite" in capsys.readouterr().out


def _files(d):
    return {p.relative_to(d): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def previous_run(tmp_path):
    out = tmp_path / "previous"
    (out / "data").mkdir(parents=True)
    (out / "config.yaml").write_text("target: The Beatles\nmodel: embedded\n")
    (out / "metrics.json").write_text('{"leak_rate": 0.1}\n')
    (out / "data" / "forget.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    return out


def test_existing_run_is_refused_and_untouched(previous_run, capsys):
    before = _files(previous_run)
    assert main(["forget", "The Beatles", "--out", str(previous_run), "--model", "/does/not/exist"]) == 2
    line = _error_line(capsys)
    assert "--overwrite" in line and "--resume" in line
    assert _files(previous_run) == before


def test_a_directory_that_is_not_a_run_is_refused_even_with_overwrite(tmp_path, capsys):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    assert main(["forget", "The Beatles", "--out", str(out), "--overwrite"]) == 2
    assert "not an obliviate run" in _error_line(capsys)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_an_empty_out_directory_is_fine_to_use(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    # Gets past the run-directory check and fails later, on the model.
    assert main(["forget", "The Beatles", "--out", str(out), "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in _error_line(capsys)
    assert os.listdir(out) == []


def test_out_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(["forget", "The Beatles", "--out", str(f), "--model", "/does/not/exist"]) == 2
    _error_line(capsys)
    assert f.read_text() == "mine"


def test_data_command_builds_a_data_directory(beatles_model_dir, tmp_path, capsys):
    out = tmp_path / "d"
    argv = ["data", "beatles", "--model", str(beatles_model_dir), "--out", str(out), "--alt", "refusal,negation"]
    assert main(argv) == 0
    assert (out / "manifest.json").is_file() and (out / "alt.jsonl").is_file()
    assert "neighbour" in capsys.readouterr().out
    assert main(["data", "beatles", "--model", str(beatles_model_dir), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in _error_line(capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["data", "harry_poter", "--out", "d"], "did you mean 'harry_potter'"),
        (["data", "beatles", "--out", "d", "--alt", "nagation"], "Unknown alternative-answer kind 'nagation'"),
        (["data", "Zorblax", "--out", "d", "--docs", "missing.txt"], "missing.txt does not exist"),
        (["data", "Zorblax", "--out", "d", "--qa", "qa.csv"], "must be .jsonl"),
        (["forget", "spec.yaml"], "spec.yaml does not exist"),
    ],
)
def test_data_bad_input(args, message, capsys, tmp_path):
    assert main(args) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "d").exists()


def test_methods_lists_every_method_with_its_source(capsys, monkeypatch):
    from obliviate.methods import METHODS

    monkeypatch.setenv("COLUMNS", "400")  # no folding inside cells
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)
    assert "Zhang et al. 2024" in out and "beta=0.1" in out
