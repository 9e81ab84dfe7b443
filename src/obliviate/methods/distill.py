"""UNDIAL: self-distillation from the base model with the forget token's logit lowered (Dong et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.logprobs import answer_logits, kl_to_ref, label_logprobs, token_mean_nll


@dataclass
class DistillConfig:
    beta: float = field(
        default=10.0,
        metadata={
            "help": (
                "how far the forget token's logit is lowered in the teacher's distribution "
                "(the UNDIAL paper and open-unlearning search 3, 10, 30)"
            )
        },
    )
    alpha: float = field(
        default=5.0,
        metadata={
            "help": (
                "weight of KL(teacher || student) on retain data (0 disables it; the paper uses none); smaller weights "
                "cost general QA on the embedded model (docs/METHODS.md)"
            )
        },
    )


def adjusted_targets(ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """softmax(z_ref - beta * onehot(y)): the teacher's distribution with the label token's logit lowered by beta.

    `ref_logits` [..., V] and `labels` [...] are already aligned (logits at t, label at t+1); a
    label of -100 lowers nothing.
    """
    onehot = F.one_hot(labels.clamp(min=0), ref_logits.shape[-1]) * (labels != -100).unsqueeze(-1)
    return F.softmax(ref_logits.float() - beta * onehot, dim=-1)


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over labelled positions of CE(target, student) = -sum_v target(v) * log_softmax(z_student)(v),
    target = softmax(z_ref - beta * onehot(y)).

    `logits`, `ref_logits` and `labels` are aligned, as `answer_logits` returns them.
    """
    mask = (labels != -100).float()
    target = adjusted_targets(ref_logits, labels, beta)
    ce = -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return (ce * mask).sum() / mask.sum().clamp(min=1)


@register_method
class Distill(Method):
    name = "distill"
    help = (
        "Self-distillation (UNDIAL): on forget answers match the base model's distribution with the answer token's "
        "logit lowered by beta; on retain match the base model (KL)."
    )
    source = (
        "Dong et al. 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in LLMs "
        "(arXiv:2402.10052)"
    )
    config_class = DistillConfig
    needs_ref_model = True
    batches = ("forget", "retain")
    train_defaults = {"lr": 2e-5, "steps": 20}

    def loss(self, model, batch, ref=None) -> LossOutput:
        sub = batch["forget"]
        logits, labels = answer_logits(model, sub)
        with torch.no_grad():
            ref_logits, _ = answer_logits(ref, sub)
        forget = undial_loss(logits, ref_logits, labels, self.config.beta)
        logp, mask = label_logprobs(logits.detach(), labels)
        logs = {"undial": forget.item(), "forget_nll": token_mean_nll(logp.sum(-1), mask.sum(-1)).item()}
        if not self.config.alpha:
            return LossOutput(forget, logs)
        kl = kl_to_ref(model, ref, batch["retain"])
        logs["retain_kl"] = kl.item()
        return LossOutput(forget + self.config.alpha * kl, logs)
