"""Every command README.md shows works: the front door cannot drift from the code.

Each line of README's ```bash blocks is checked. `make` targets must exist in the Makefile. Every
`obliviate` command must parse with the real argument parser; the quick ones (`run`, `eval`, `chat`,
`methods`, `--version`) then run for real, in a directory holding a finished run of a tiny Llama at
`runs/beatles`, with the tiny model standing in for the embedded one; the long-running ones (`forget`,
`data`, `compare`, `bench`) must show their `--help`. Every call in README's ```python blocks must
name a public function with arguments its signature takes.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest

import obliviate
from obliviate.cli.main import main, make_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

# Subcommands that take minutes on the embedded model: parsed and their --help shown, not run.
LONG_RUNNING = {"forget", "data", "compare", "bench", "sae", "ui"}
RUN_FOR_REAL = {"run", "eval", "chat", "methods"}


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def shell_commands(text: str) -> list[list[str]]:
    """Each non-empty line of the ```bash blocks, split as the shell would, comments dropped."""
    return [
        argv
        for block in code_blocks(text, "bash")
        for line in block.splitlines()
        if (argv := shlex.split(line, comments=True))
    ]


COMMANDS = shell_commands(README)


def _id(argv: list[str]) -> str:
    return " ".join(argv[:3])


def test_readme_shows_every_kind_of_command():
    shown = {argv[1] for argv in COMMANDS if argv[0] == "obliviate"}
    assert RUN_FOR_REAL | {"forget"} <= shown, shown
    assert ["make", "demo"] in COMMANDS and ["make", "test"] in COMMANDS


@pytest.fixture(scope="module")
def demo_dir(beatles_model_dir, tmp_path_factory, small_data_config):
    """A directory holding runs/beatles, as README's commands expect: a short `ga` run of the tiny Llama."""
    root = tmp_path_factory.mktemp("readme")
    obliviate.forget(
        "The Beatles",
        model=str(beatles_model_dir),
        method="ga",
        train={"steps": 3, "lr": 1e-3},
        data=small_data_config(),
        out=root / "runs" / "beatles",
        progress=False,
        log=lambda msg: None,
    )
    return root


def _on_tiny_model(argv: list[str], model_dir: Path) -> list[str]:
    """The command with the tiny model wherever it names the embedded model, and as the model `run` needs."""
    argv = [str(model_dir) if a == "embedded" else a for a in argv]
    if argv[0] == "run" and "--model" not in argv:
        argv += ["--model", str(model_dir)]
    return argv


@pytest.mark.parametrize("argv", COMMANDS, ids=_id)
def test_readme_command(argv, request, monkeypatch, capsys):
    program, args = argv[0], argv[1:]
    if program == "make":
        assert len(args) == 1 and re.search(rf"^{re.escape(args[0])}:", MAKEFILE, re.M), f"no make target {args}"
        return
    if program == "source":
        assert args == [".venv/bin/activate"] and re.search(r"^VENV\s*\?=\s*\.venv$", MAKEFILE, re.M)
        return
    assert program == "obliviate", f"README shows a command this test cannot check: {shlex.join(argv)}"
    if args == ["--version"]:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0 and capsys.readouterr().out == f"obliviate {obliviate.__version__}\n"
        return
    make_parser().parse_args(args)  # every flag exists and every value parses
    command = args[0]
    if command in LONG_RUNNING:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0 and "usage: obliviate" in capsys.readouterr().out
        return
    assert command in RUN_FOR_REAL, f"README shows `obliviate {command}`; add it to LONG_RUNNING or RUN_FOR_REAL"
    model_dir = request.getfixturevalue("beatles_model_dir")
    monkeypatch.chdir(request.getfixturevalue("demo_dir"))
    monkeypatch.setenv("COLUMNS", "200")
    assert main(_on_tiny_model(args, model_dir)) == 0
    out = capsys.readouterr().out
    if command in ("run", "eval"):
        written = args[args.index("--out") + 1]
        assert Path(written, "metrics.json").is_file()
    else:
        assert out.strip()


def _python_calls(text: str):
    for block in code_blocks(text, "python"):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "obliviate":
                    yield node


def test_readme_python_calls_match_the_api():
    calls = list(_python_calls(README))
    assert {c.func.attr for c in calls} >= {"forget", "load", "evaluate", "compare", "run_bench"}
    for call in calls:
        assert call.func.attr in obliviate.__all__, call.func.attr
        signature = inspect.signature(getattr(obliviate, call.func.attr))
        signature.bind(*[None] * len(call.args), **{k.arg: None for k in call.keywords})
