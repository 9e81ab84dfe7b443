"""SimNPO: NPO without a reference model, length-normalized (Fan et al. 2024, arXiv:2410.07163)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import plus_retain, sequence_logprob, token_mean_nll


@dataclass
class SimNPOConfig:
    beta: float = field(
        default=2.5, metadata={"help": "inverse temperature on the length-normalized log-prob (paper: 2.5)"}
    )
    gamma: float = field(default=0.0, metadata={"help": "reward margin (paper: 0 works best on TOFU)"})
    alpha: float = field(default=1.0, metadata={"help": "weight of the retain NLL (0 disables it)"})


def simnpo_loss(logp: torch.Tensor, n_tokens: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(-(beta/|y|) * log pi(y|x) - gamma), with |y| the answer's token count."""
    return -(2.0 / beta) * F.logsigmoid(-(beta / n_tokens.clamp(min=1)) * logp - gamma).mean()


@register_method
class SimNPO(Method):
    name = "simnpo"
    help = (
        "NPO without a reference model: the forget log-prob is length-normalized and compared with a margin; plus "
        "retain NLL."
    )
    source = "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization (arXiv:2410.07163)"
    config_class = SimNPOConfig
    batches = ("forget", "retain")
    train_defaults = {"lr": 5e-5, "steps": 25}

    def loss(self, model, batch, ref=None) -> LossOutput:
        logp, n = sequence_logprob(model, batch["forget"])
        forget = simnpo_loss(logp, n, self.config.beta, self.config.gamma)
        logs = {"simnpo": forget.item(), "forget_nll": token_mean_nll(logp, n).item()}
        return LossOutput(plus_retain(model, batch, forget, logs, self.config.alpha), logs)
