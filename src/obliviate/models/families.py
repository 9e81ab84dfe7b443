"""Where each causal-LM family keeps its decoder layers, MLPs and linear projections.

Methods that train or read named parts of a model (RMU's MLPs, LoRA's target modules) ask
`family_of(model)` instead of assuming Llama's names. A family is matched by the config's
`model_type`; a model of any other type still loads, trains in full and is evaluated, but a
method that needs its layer names raises a UserError naming the supported types.

Parameter names follow `<layers>.<k>.<part>` (e.g. `model.layers.3.mlp.down_proj.weight`,
`transformer.h.3.mlp.c_proj.weight`); a peft model prefixes them with `base_model.model.`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from obliviate.errors import UserError

# Llama's names, which most recent decoders share.
_LLAMA_LORA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # the configs' model_type values of this family
    layers: str  # dotted path from the causal-LM model to its list of decoder layers
    mlp: tuple[str, ...]  # a decoder layer's MLP parameters: the name prefixes that follow `<layers>.<k>.`
    mlp_out: str  # the MLP's output projection, as such a prefix
    lora_targets: tuple[str, ...]  # the attention and MLP projections that get LoRA adapters

    @cached_property
    def layer_param(self) -> re.Pattern:
        """Matches a parameter name of decoder layer k: group 1 is k, group 2 the name within the layer."""
        return re.compile(rf"(?:^|\.){re.escape(self.layers)}\.(\d+)\.(.+)$")

    def layer_part(self, name: str) -> tuple[int, str] | None:
        """(k, name within the layer) for a parameter of decoder layer k, else None."""
        m = self.layer_param.search(name)
        return (int(m.group(1)), m.group(2)) if m else None

    def parts(self, wanted: str) -> tuple[str, ...]:
        """The prefixes that a method's family-neutral choice of parameters names in this family: 'mlp.' is the
        whole MLP, 'mlp.down_proj.' its output projection; any other prefix is taken as written."""
        return {"mlp.": self.mlp, "mlp.down_proj.": (self.mlp_out,)}.get(wanted, (wanted,))

    def mlp_out_module(self, layer):
        """The MLP's output projection within the decoder layer module `layer` (an nn.Linear, or GPT-2's Conv1D)."""
        return layer.get_submodule(self.mlp_out.rstrip("."))


FAMILIES = (
    Family(
        "llama",
        (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "smollm3",
            "olmo",
            "olmo2",
            "granite",
        ),
        "model.layers",
        ("mlp.",),
        "mlp.down_proj.",
        _LLAMA_LORA,
    ),
    Family(
        "phi3",
        ("phi3",),
        "model.layers",
        ("mlp.",),
        "mlp.down_proj.",
        ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    ),
    Family("gpt2", ("gpt2",), "transformer.h", ("mlp.",), "mlp.c_proj.", ("c_attn", "c_proj", "c_fc")),
    Family(
        "opt",
        ("opt",),
        "model.decoder.layers",
        ("fc1.", "fc2."),
        "fc2.",
        ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ),
)


def _model_type(model) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner.config, "model_type", "?")


def find_family(model) -> Family | None:
    """The family of `model` (a transformers causal LM, possibly wrapped by peft), or None when unknown."""
    model_type = _model_type(model)
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def family_of(model, need: str = "this method") -> Family:
    """The family of `model`; UserError, naming `need` and the supported types, for any other model type."""
    family = find_family(model)
    if family is None:
        supported = ", ".join(t for f in FAMILIES for t in f.model_types)
        raise UserError(
            f"{need} needs the layer names of the model, and obliviate does not know them for model type "
            f"{_model_type(model)!r}; use a model of type {supported}, or another method."
        )
    return family
