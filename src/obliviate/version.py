"""The version of obliviate: the package metadata (pyproject.toml), `obliviate --version` and the newest
CHANGELOG.md entry must all equal it (tests/test_version.py)."""

__version__ = "0.1.0"
