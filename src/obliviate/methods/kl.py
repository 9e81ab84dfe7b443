"""Gradient ascent with a KL-to-base anchor on retain data (TOFU's "KL" baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import kl_to_ref, nll


@dataclass
class KLConfig:
    alpha: float = field(default=1.0, metadata={"help": "weight of KL(base || model) on retain tokens"})


@register_method
class KL(Method):
    name = "kl"
    help = (
        "Gradient ascent on forget answers plus KL(base || model) on retain data, which keeps retain predictions "
        "where they were."
    )
    source = "Maini et al. 2024, TOFU (arXiv:2401.06121), the KL-minimization baseline"
    config_class = KLConfig
    needs_ref_model = True
    batches = ("forget", "retain")
    train_defaults = {"lr": 1e-5, "steps": 15}

    def loss(self, model, batch, ref=None) -> LossOutput:
        forget_nll = nll(model, batch["forget"])
        kl = kl_to_ref(model, ref, batch["retain"])
        return LossOutput(
            -forget_nll + self.config.alpha * kl, {"forget_nll": forget_nll.item(), "retain_kl": kl.item()}
        )
