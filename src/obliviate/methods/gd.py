"""Gradient difference: ascend on forget, descend on retain (Liu et al. 2022; Maini et al. 2024, TOFU)."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import nll


@dataclass
class GDConfig:
    alpha: float = field(
        default=2.0,
        metadata={
            "help": "weight of the retain NLL term (the best of those tried on the embedded model, docs/METHODS.md)"
        },
    )


def gd_loss(forget_nll, retain_nll, alpha: float):
    """loss = -NLL(forget) + alpha * NLL(retain)."""
    return -forget_nll + alpha * retain_nll


@register_method
class GradientDifference(Method):
    name = "gd"
    help = "Gradient ascent on forget plus ordinary training on retain data."
    source = "Liu et al. 2022, Continual Learning and Private Unlearning (arXiv:2203.12817); TOFU (arXiv:2401.06121)"
    config_class = GDConfig
    batches = ("forget", "retain")
    train_defaults = {"lr": 2e-5, "steps": 25}

    def loss(self, model, batch, ref=None) -> LossOutput:
        forget, retain = nll(model, batch["forget"]), nll(model, batch["retain"])
        return LossOutput(
            gd_loss(forget, retain, self.config.alpha), {"forget_nll": forget.item(), "retain_nll": retain.item()}
        )
