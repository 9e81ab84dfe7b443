"""The import graph runs one way: each layer imports only itself and the layers below it.

Layers, lowest first (docs/ARCHITECTURE.md): the foundation modules, then the pipeline's
stages in order. Every import counts, function-local ones included.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "obliviate"

LAYERS = [
    {"errors", "io", "malloc", "records", "leak", "version"},
    {"models"},
    {"data"},
    {"methods"},
    {"engine"},
    {"evaluation"},
    {"report"},
    {"bench"},
    {"pipeline"},
    {"cli", "ui"},
    {"__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _part(dotted: str) -> str | None:
    """The top-level part of obliviate a dotted module name lies in (None outside obliviate)."""
    parts = dotted.split(".")
    if parts[0] != "obliviate":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported obliviate module) for every import in `path`, including function-local ones."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "obliviate":  # `from obliviate import malloc` imports obliviate.malloc
                found += [(node.lineno, f"obliviate.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if _part(name) is not None]


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_part_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in modules()}
    assert parts <= set(RANK), f"give {sorted(parts - set(RANK))} a layer in LAYERS and docs/ARCHITECTURE.md"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers(path):
    own = RANK[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
    upward = [f"line {line}: {name}" for line, name in imports(path) if RANK[_part(name)] > own]
    assert not upward, f"{path.relative_to(PACKAGE)} imports a higher layer: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The check itself: a models module importing the evaluation is caught, function-local or not."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from obliviate.evaluation.text import distinct_n\nfrom obliviate import malloc\n")
    found = dict((name, line) for line, name in imports(bad))
    assert found == {"obliviate.evaluation.text": 2, "obliviate.malloc": 3}
    assert RANK[_part("obliviate.evaluation.text")] > RANK["models"]


def test_importing_obliviate_loads_no_stage():
    """`import obliviate` is light: the API is imported on first use."""
    import subprocess
    import sys

    code = "import sys, obliviate; print(sorted(m for m in sys.modules if m.startswith('obliviate.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_test_files_have_unique_names():
    """Test folders are not packages, so pytest imports each file by its name: two of one name break collection."""
    names = [p.name for p in Path(__file__).parent.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
