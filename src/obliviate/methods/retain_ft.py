"""Fine-tuning on retain data only: forgetting by overwriting (the LLM Unlearning Project seed's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import nll


@dataclass
class RetainFTConfig:
    pass


@register_method
class RetainFT(Method):
    name = "retain_ft"
    help = "Fine-tune on retain data only (NLL); never sees the forget set. The weakest baseline."
    source = "the LLM Unlearning Project seed's fine-tuning baseline; TOFU (Maini et al. 2024) 'retain fine-tuning'"
    config_class = RetainFTConfig
    batches = ("retain",)
    train_defaults = {"lr": 2e-5, "steps": 15}

    def loss(self, model, batch, ref=None) -> LossOutput:
        retain = nll(model, batch["retain"])
        return LossOutput(retain, {"retain_nll": retain.item()})
