"""Inference-time edits that travel with a saved model: banned token sequences and an output filter.

Methods that change no weights (`guardrail`) or not only weights (`suppress`) save
their edits as `obliviate_hooks.json` next to the Hugging Face files.
`obliviate.load` (models.loading.load_model) reattaches them, so a reloaded model
behaves like the one that was evaluated:

- `bad_words` are token sequences generation may not complete (transformers'
  `bad_words_ids`: the last token of a sequence gets -inf after its prefix);
- `filter_terms` replaces a generated answer that names one of the terms with
  `filter_message` (obliviate's generate() applies it);
- a system prompt is not a hook: `guardrail` writes it into the tokenizer's chat
  template, so any Hugging Face consumer of the saved directory gets it too;
- `clamps` are forward hooks on one layer's output that set chosen sparse-autoencoder
  features to a fixed value wherever they fire (`sae`; see `FeatureClamp`). They act on
  every forward pass (generation, likelihoods, training), so they are switched off only
  where hooks are ignored on purpose (`clamps_off`, generate's `use_hooks=False`).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from obliviate.errors import UserError
from obliviate.io import read_json, write_json

HOOKS_FILE = "obliviate_hooks.json"


@dataclass
class Hooks:
    method: str
    bad_words: list[list[int]] = field(default_factory=list)
    filter_terms: list[str] = field(default_factory=list)
    filter_message: str = "I can't help with that."
    system_prompt: str | None = None  # recorded for the report; lives in the chat template
    clamps: list[dict] = field(default_factory=list)  # FeatureClamp.spec() of each clamped site
    notes: dict = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        write_json(Path(directory) / HOOKS_FILE, asdict(self))

    @classmethod
    def load(cls, directory: str | Path) -> Hooks | None:
        path = Path(directory) / HOOKS_FILE
        if not path.is_file():
            return None
        try:
            return cls(**read_json(path))
        except (TypeError, ValueError, KeyError) as e:
            raise UserError(
                f"{path} is not a valid obliviate hooks file ({e}); re-save the model with obliviate."
            ) from None

    def filter(self, answer: str) -> str:
        if not self.filter_terms:
            return answer
        from obliviate.leak import terms_pattern

        return self.filter_message if terms_pattern(self.filter_terms).search(answer) else answer


class FeatureClamp:
    """A forward hook on one layer's output `x` that clamps chosen SAE features where they fire.

    For each chosen feature i, with encoder row e_i, bias c_i, the SAE's input centring b and
    decoder row d_i: a_i = ReLU(e_i . (x - b) + c_i); wherever a_i > 0,
    x <- x + (value_i - a_i) d_i, i.e. feature i's contribution is replaced by value_i
    (Farrell et al. 2024's conditional clamp). The feature is read from its own pre-activation,
    without the TopK competition among all features, so only the chosen rows travel with the
    model. Its tensors are cast to the output's dtype and device at each call, so the hook keeps
    working on a bf16 or deep copy of the model.
    """

    def __init__(self, layer: int, site: str, features, W_enc, b_enc, b_dec, W_dec, value):
        self.layer, self.site, self.features = layer, site, list(features)
        t = lambda v: torch.as_tensor(v, dtype=torch.float32)  # noqa: E731
        self.W_enc, self.b_enc, self.b_dec, self.W_dec, self.value = map(t, (W_enc, b_enc, b_dec, W_dec, value))
        self.enabled = True

    def spec(self) -> dict:
        """A JSON-able description; FeatureClamp(**spec) rebuilds the hook."""
        r = lambda v: [round(x, 6) for x in v.tolist()]  # noqa: E731
        return {
            "layer": self.layer,
            "site": self.site,
            "features": self.features,
            "W_enc": [r(row) for row in self.W_enc],
            "b_enc": r(self.b_enc),
            "b_dec": r(self.b_dec),
            "W_dec": [r(row) for row in self.W_dec],
            "value": r(self.value),
        }

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        w_enc, b_enc, b_dec, w_dec, value = (v.to(x.device, x.dtype) for v in self._tensors())
        a = torch.relu((x - b_dec) @ w_enc.T + b_enc)  # [..., n]
        delta = torch.where(a > 0, value - a, torch.zeros_like(a))
        return x + delta @ w_dec

    def _tensors(self):
        return self.W_enc, self.b_enc, self.b_dec, self.W_dec, self.value

    def __call__(self, module, args, output):
        if not self.enabled:
            return None
        from obliviate.models.sae import output_tensor, replace_output

        return replace_output(output, self.clamp(output_tensor(output)))


def feature_clamps(model) -> list[FeatureClamp]:
    """The FeatureClamp hooks registered on `model`'s modules (found anew, so deep copies have their own)."""
    return [h for m in model.modules() for h in m._forward_hooks.values() if isinstance(h, FeatureClamp)]


@contextlib.contextmanager
def clamps_off(model):
    """Switch `model`'s feature clamps off inside the block (as a consumer that ignores hooks would run it)."""
    clamps = [c for c in feature_clamps(model) if c.enabled]
    for c in clamps:
        c.enabled = False
    try:
        yield
    finally:
        for c in clamps:
            c.enabled = True


def attach(model, hooks: Hooks) -> None:
    """Make obliviate's generate() apply `hooks` for `model` and register its feature clamps as forward
    hooks; attaching again replaces them."""
    from obliviate.models.sae import site_module

    for m in model.modules():
        for key in [k for k, h in m._forward_hooks.items() if isinstance(h, FeatureClamp)]:
            del m._forward_hooks[key]
    for spec in hooks.clamps:
        clamp = FeatureClamp(**spec)
        site_module(model, clamp.layer, clamp.site).register_forward_hook(clamp)
    model.obliviate_hooks = hooks


def hooks_of(model) -> Hooks | None:
    return getattr(model, "obliviate_hooks", None)


def guard_chat_template(template: str, system_prompt: str) -> str:
    """`template` with `system_prompt` put first in the system message (added when there is none)."""
    quoted = '"' + system_prompt.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    prefix = (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {quoted} + '\\n\\n' + messages[0]['content']}}]"
        " + messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {quoted}}}] + messages -%}}"
        "{%- endif -%}"
    )
    return prefix + template
