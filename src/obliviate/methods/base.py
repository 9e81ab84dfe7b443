"""The method contract: a config dataclass, a few flags, and one loss function.

A method never touches the optimizer, devices or distributed code; the engine
does. Methods register themselves by name; `get_method` is how everyone else
finds them, with a "did you mean" for typos.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from obliviate.errors import UserError


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)  # each term, detached, for the progress bar and log


class Method:
    name: ClassVar[str]
    help: ClassVar[str]
    source: ClassVar[str]
    config_class: ClassVar[type]
    needs_ref_model: ClassVar[bool] = False
    # Which sub-batches of the {"forget": ..., "retain": ...} batch the loss reads.
    batches: ClassVar[tuple[str, ...]] = ("forget",)

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.config_class()

    def prepare(self, data: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """Choose the records the loss sees (e.g. which kinds of alternative answers); default: all."""
        return data

    def loss(self, model, batch: dict[str, dict[str, torch.Tensor]], ref=None) -> LossOutput:
        raise NotImplementedError


def only_alt_kinds(data: dict[str, list[dict]], kinds: tuple[str, ...]) -> dict[str, list[dict]]:
    """`data` with its "alt" records narrowed to `kinds`."""
    return {**data, "alt": [r for r in data.get("alt", []) if r.get("kind") in kinds]}


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, **overrides) -> Method:
    """Instantiate a registered method, overriding config fields by keyword."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"Unknown method {name!r}; {hint}choose one of: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise UserError(f"Method {name!r} has no setting {sorted(unknown)[0]!r}; its settings are: {', '.join(sorted(fields))}.")
    return cls(cls.config_class(**overrides))
