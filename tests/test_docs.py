"""The documentation site: every page is in the nav, and every object the API page shows has a docstring.

`make docs` (run by CI) builds the site with --strict; these checks say which page or docstring is at fault
without building it.
"""

import importlib
import inspect
import re
from pathlib import Path

import yaml

import obliviate

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _nav_pages(nav) -> set[str]:
    pages = set()
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_every_docs_page_is_in_the_nav():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == _nav_pages(nav)


def _api_objects() -> dict[str, object]:
    names = re.findall(r"^::: ([\w.]+)$", (DOCS / "API.md").read_text(encoding="utf-8"), re.M)
    objects = {}
    for name in names:
        module, _, attr = name.rpartition(".")
        objects[name] = getattr(importlib.import_module(module), attr)
    return objects


def test_every_object_on_the_api_page_has_its_own_docstring():
    for name, obj in _api_objects().items():
        doc = inspect.getdoc(obj) or ""
        generated = inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")  # a dataclass's signature
        assert doc and not generated, f"{name} has no docstring"


def test_every_public_name_is_on_the_api_page():
    shown = list(_api_objects().values())
    missing = [n for n in obliviate.__all__ if not any(getattr(obliviate, n) is o for o in shown)]
    assert not missing
