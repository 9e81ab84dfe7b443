"""obliviate: make a pretrained language model forget something, and prove it.

The public API is imported on first use (PEP 562), so `import obliviate` and the command
line load only what they need.
"""

from __future__ import annotations

import importlib

# name -> (module, attribute)
_API = {
    "forget": ("obliviate.pipeline", "forget"),
    "compare": ("obliviate.pipeline", "compare"),
    "evaluate": ("obliviate.pipeline", "evaluate"),
    "load_model": ("obliviate.models.loading", "load_model"),
    # obliviate.load(path): a saved run's model with its hooks (guardrail, suppress) reattached
    "load": ("obliviate.models.loading", "load_model"),
    "run_bench": ("obliviate.bench.benchmark", "run_bench"),
}
_VERSION = ("obliviate.version", "__version__")

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API and name != "__version__":
        raise AttributeError(f"module 'obliviate' has no attribute {name!r}")
    module, attr = _API.get(name, _VERSION)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
