"""The method contract: a config dataclass, a few flags, and one loss function.

A method never touches the optimizer, devices or distributed code; the engine
does. A method that needs a model trained before its own loop (WHP's reinforced
model) describes it as a `FineTune` and the engine trains it. Methods register
themselves by name (`register_method`); `get_method` is how everyone else finds
them, with a "did you mean" for typos.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from obliviate.errors import UserError
from obliviate.models.prompts import encode


@dataclass
class LossOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)  # each term, detached, for the progress bar and log


@dataclass
class FineTune:
    """A model a method needs before its own loop: a copy of the starting model fine-tuned on `records`
    with plain NLL (retain_ft's loss), by the engine's loop with the run's settings but these steps,
    learning rate, batch size and seed. The engine hands it to `Method.setup` as `tuned[name]`, frozen
    and in eval mode."""

    name: str
    records: list[dict]
    steps: int
    lr: float
    batch_size: int
    seed: int


class Method:
    """An unlearning method: a config dataclass and a loss over a batch; the engine owns the rest.

    A subclass sets `name`, `help`, `source` and `config_class` (a dataclass whose fields carry help
    text), registers itself with `register_method`, and implements `loss`. The other hooks
    (`prepare`, `fine_tunes`, `setup`, `trainable`, `collate`) have defaults that fit most methods.
    A method never sees the optimizer, the device or the checkpoints.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    source: ClassVar[str]
    config_class: ClassVar[type]
    needs_ref_model: ClassVar[bool] = False
    # Sub-batches whose reference log-probs (summed over each answer) are all the loss needs from the
    # reference model; each must hold one row per drawn record. The engine computes them once before
    # the first step and passes them as sub["ref_logprob"] (read them with logprobs.ref_logprob), so
    # no reference copy is kept and no reference pass runs per step.
    ref_logprob_subs: ClassVar[tuple[str, ...]] = ()
    # Which sub-batches of the {"forget": ..., "retain": ...} batch the loss reads.
    batches: ClassVar[tuple[str, ...]] = ("forget",)
    # Engine settings (steps, lr, ...) tuned for this method on the embedded model; see docs/METHODS.md.
    train_defaults: ClassVar[dict[str, Any]] = {}
    # False for methods that edit the model once instead of training it (see EditMethod).
    trains: ClassVar[bool] = True

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.config_class()

    def prepare(self, data: dict[str, list[dict]]) -> dict[str, list[dict]]:
        """Choose the records the loss sees (e.g. which kinds of alternative answers); default: all.

        The engine draws `batch_size` records per step from each list named in `batches`.
        """
        return data

    def fine_tunes(self, data: dict[str, list[dict]]) -> list[FineTune]:
        """The models to fine-tune from the starting model before the first step (after `prepare`);
        default: none. The engine trains each and passes them to `setup`."""
        return []

    def setup(self, model, tokenizer, data: dict[str, list[dict]], ref, tuned: dict[str, Any] | None = None) -> None:
        """Called once by the engine before the first step (after `prepare`, before the optimizer):
        compute anything derived from the starting model, e.g. a random direction. `ref` is the
        reference model (None unless `needs_ref_model`); `tuned` holds the models asked for in
        `fine_tunes`, by name."""

    def trainable(self, name: str) -> bool:
        """Whether the parameter called `name` is trained; default: all of them. Under LoRA the
        names are the adapter's (`...layers.5.mlp.down_proj.lora_A.default.weight`)."""
        return True

    def collate(self, tokenizer, name: str, records: list[dict], max_length: int) -> dict[str, dict[str, torch.Tensor]]:
        """Turn the records drawn from stream `name` into one or more named sub-batches;
        default: one sub-batch of the same name (prompt tokens masked to -100 in labels)."""
        return {name: encode(tokenizer, records, max_length)}

    def loss(self, model, batch: dict[str, dict[str, torch.Tensor]], ref=None) -> LossOutput:
        """The loss of one step on `batch` (sub-batches named as in `batches`), with each term in `logs`.

        `ref` is the reference model when `needs_ref_model` (else None). Raises NotImplementedError
        here: every training method implements it.
        """
        raise NotImplementedError


class EditMethod(Method):
    """A method that changes the model once, with no training loop: `edit` instead of `loss`.

    It may change weights in place and returns the inference-time hooks (models.hooks)
    that are saved with the model and reattached by `obliviate.load`.
    """

    trains = False
    batches = ()

    def edit(self, model, tokenizer, data: dict[str, list[dict]], target):
        """Edit `model` (and `tokenizer`) in place for `target` (a TargetSpec); return Hooks or None."""
        raise NotImplementedError


def only_alt_kinds(data: dict[str, list[dict]], kinds: tuple[str, ...]) -> dict[str, list[dict]]:
    """`data` with its "alt" records narrowed to `kinds`."""
    return {**data, "alt": [r for r in data.get("alt", []) if r.get("kind") in kinds]}


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add `cls` to METHODS under `cls.name`; raises ValueError for a name taken twice."""
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
        raise UserError(
            f"Method {name!r} has no setting {sorted(unknown)[0]!r}; its settings are: {', '.join(sorted(fields))}."
        )
    return cls(cls.config_class(**overrides))


def parse_settings(config_class: type, pairs: list[str], what: str) -> dict[str, Any]:
    """Turn ["beta=0.2", "alt_kinds=refusal,negation"] into typed overrides of `config_class`'s fields.

    Values are read as YAML scalars (numbers, true/false, null); a field whose default is a
    tuple takes a comma-separated list. `what` names the settings in error messages.
    """
    import yaml

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"Setting {pair!r} is not KEY=VALUE; write it like --set beta=0.2.")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{what} has no setting {key!r}; {hint}its settings are: {', '.join(sorted(fields))}.")
        kinds = _field_types(config_class, key)
        if tuple in kinds:
            out[key] = tuple(v.strip() for v in raw.split(",") if v.strip())
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if value is None and type(None) in kinds:
            pass
        elif bool in kinds:
            if not isinstance(value, bool):
                raise UserError(f"Setting {key!r} takes true or false, got {raw!r}.")
        elif kinds & {int, float}:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(f"Setting {key!r} takes a number, got {raw!r}.")
            if float not in kinds and not float(value).is_integer():
                raise UserError(f"Setting {key!r} takes a whole number, got {raw!r}.")
            if not math.isfinite(value):
                raise UserError(f"Setting {key!r} takes a finite number, got {raw!r}.")
            value = float(value) if float in kinds else int(value)
        elif str in kinds:
            value = raw
        out[key] = value
    return out


def _field_types(config_class: type, name: str) -> set[type]:
    """The plain types a config field accepts: {int, NoneType} for `int | None`, {tuple} for tuple[str, ...]."""
    import typing

    hint = typing.get_type_hints(config_class)[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {typing.get_origin(a) or a for a in args}
