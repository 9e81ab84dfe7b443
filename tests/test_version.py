"""One version: the package metadata, `obliviate.__version__`, `obliviate --version` and the newest changelog entry."""

import re
import tomllib
from pathlib import Path

import pytest

import obliviate
from obliviate.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def test_package_cli_and_changelog_agree_on_the_version(capsys):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert obliviate.__version__ == version
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"obliviate {version}\n"
    # Keep a Changelog: "## [Unreleased]" first, then "## [X.Y.Z] - YYYY-MM-DD", newest first.
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    released = [(v, date) for v, date in headings if v != "Unreleased"]
    assert released, "CHANGELOG.md has no released version"
    assert released[0][0] == version and released[0][1], released[0]
