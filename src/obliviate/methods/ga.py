"""Gradient ascent: raise the NLL of the forget answers (Jang et al. 2023, arXiv:2210.01504)."""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import nll


@dataclass
class GAConfig:
    pass  # no knobs: learning rate and steps belong to the engine


def ga_loss(forget_nll):
    """loss = -NLL(forget). Unbounded below: run few steps, or prefer npo."""
    return -forget_nll


@register_method
class GradientAscent(Method):
    name = "ga"
    help = "Gradient ascent on the forget answers; fast, but unbounded and hard on utility."
    source = "Jang et al. 2023, Knowledge Unlearning for Mitigating Privacy Risks (arXiv:2210.01504)"
    config_class = GAConfig
    batches = ("forget",)
    train_defaults = {"lr": 1e-5, "steps": 8}

    def loss(self, model, batch, ref=None) -> LossOutput:
        forget = nll(model, batch["forget"])
        return LossOutput(ga_loss(forget), {"forget_nll": forget.item()})
