"""Relabelling: fine-tune forget questions onto alternative answers, plus retain NLL."""

from __future__ import annotations

from dataclasses import dataclass, field

from obliviate.methods.base import LossOutput, Method, only_alt_kinds, register_method
from obliviate.models.logprobs import nll, plus_retain


@dataclass
class RelabelConfig:
    alt_kinds: tuple[str, ...] = field(
        default=("guardrail", "negation", "other_subject", "anchored"),
        metadata={
            "help": (
                "which alternative answers of alt.jsonl to train on: guardrail, negation, other_subject, anchored, "
                "refusal, mismatch"
            )
        },
    )
    alpha: float = field(default=1.0, metadata={"help": "weight of the retain NLL (0 disables it)"})


@register_method
class Relabel(Method):
    name = "relabel"
    help = (
        "Fine-tune the forget questions onto alternative answers (guardrail, negations, other subjects, anchored "
        "terms, refusals) plus retain NLL."
    )
    source = (
        "the synthetic-data seed (guardrail answers) and the Beatles notebook seed (negation / other-band datasets)"
    )
    config_class = RelabelConfig
    batches = ("alt", "retain")
    train_defaults = {"lr": 2e-5, "steps": 15}

    def prepare(self, data):
        return only_alt_kinds(data, tuple(self.config.alt_kinds))

    def loss(self, model, batch, ref=None) -> LossOutput:
        alt = nll(model, batch["alt"])
        logs = {"alt_nll": alt.item()}
        return LossOutput(plus_retain(model, batch, alt, logs, self.config.alpha), logs)
