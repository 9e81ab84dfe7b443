"""LLM Unlearning (Yao et al. 2023): ascent on harmful answers, random normal answers, KL to the base."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.methods.base import LossOutput, Method, only_alt_kinds, register_method
from obliviate.models.logprobs import kl_to_ref, nll


@dataclass
class YaoConfig:
    forget_weight: float = field(
        default=0.5, metadata={"help": "weight of gradient ascent on the forget answers (paper: 0.5)"}
    )
    random_weight: float = field(
        default=1.0, metadata={"help": "weight of NLL of forget prompts -> random normal answers (paper: 1)"}
    )
    kl_weight: float = field(
        default=1.0, metadata={"help": "weight of KL(base || model) on normal (retain) data (paper: 1)"}
    )


@register_method
class Yao(Method):
    name = "yao"
    help = (
        "Gradient ascent on forget answers + NLL of forget prompts paired with random normal answers + KL to the base "
        "on retain data."
    )
    source = "Yao et al. 2023, Large Language Model Unlearning (arXiv:2310.10683); paper lr 2e-6"
    config_class = YaoConfig
    needs_ref_model = True
    batches = ("forget", "alt", "retain")
    train_defaults = {"lr": 1e-5, "steps": 15}

    def prepare(self, data):
        return only_alt_kinds(data, ("mismatch",))

    def loss(self, model, batch, ref=None) -> LossOutput:
        c = self.config
        forget_nll = nll(model, batch["forget"])
        random_nll = nll(model, batch["alt"])
        kl = kl_to_ref(model, ref, batch["retain"])
        loss = -c.forget_weight * forget_nll + c.random_weight * random_nll + c.kl_weight * kl
        return LossOutput(
            loss, {"forget_nll": forget_nll.item(), "random_nll": random_nll.item(), "retain_kl": kl.item()}
        )
