"""Negative preference optimization (Zhang et al. 2024, arXiv:2404.05868)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import dpo_loss, plus_retain, ref_logprob, sequence_logprob, token_mean_nll


@dataclass
class NPOConfig:
    beta: float = field(
        default=0.1, metadata={"help": "inverse temperature; small beta behaves like gradient ascent (paper: 0.1)"}
    )
    alpha: float = field(
        default=30.0,
        metadata={
            "help": (
                "weight of the token-averaged retain NLL (0 disables it). The NPO term is summed over the "
                "forget answer's tokens, so the retain weight must grow with answer length to balance it; "
                "the default keeps general QA near the base model's on the embedded model (docs/METHODS.md)"
            )
        },
    )


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(-beta * (log pi(y|x) - log pi_ref(y|x))), over sequence-summed log-probs:
    DPO with the forget answer as the rejected side and no chosen side.

    Bounded below by 0, so unlike gradient ascent it slows down once the forget
    answers are unlikely instead of driving the model to collapse.
    """
    return dpo_loss(None, logp - ref_logp, beta)


@register_method
class NPO(Method):
    name = "npo"
    help = "Negative preference optimization on forget answers, relative to the base model, plus retain NLL."
    source = "Zhang et al. 2024, Negative Preference Optimization (arXiv:2404.05868)"
    config_class = NPOConfig
    needs_ref_model = True
    ref_logprob_subs = ("forget",)
    batches = ("forget", "retain")
    train_defaults = {"lr": 3e-5, "steps": 22}

    def loss(self, model, batch, ref=None) -> LossOutput:
        logp, n = sequence_logprob(model, batch["forget"])
        forget = npo_loss(logp, ref_logprob(ref, batch["forget"]), self.config.beta)
        logs = {"npo": forget.item(), "forget_nll": token_mean_nll(logp, n).item()}
        return LossOutput(plus_retain(model, batch, forget, logs, self.config.alpha), logs)
