"""Sharpness-aware NPO: the forget loss minimised at its worst nearby weights, so that a few relearning steps
cannot climb back (Fan et al. 2025, ICML, arXiv:2502.05374).

Fan et al. cast robustness to relearning as a min-max problem,

    min_theta  max_{||delta|| <= rho}  l_f(theta + delta)  +  alpha * l_r(theta),

the forget loss l_f (here NPO) kept low at every weight within rho of theta, which is where a relearning
attacker's first fine-tuning steps go. One first-order step of the inner maximisation is sharpness-aware
minimisation (SAM, Foret et al. 2021, arXiv:2010.01412): delta = rho * g / ||g|| with g = grad l_f(theta),
and the update follows grad l_f at theta + delta. The retain term is taken at theta, as in the paper. NPO is
the main unlearning loss the paper smooths on WMDP and MUSE, and this project's default gradient method, so
NPO+SAM is the smallest step from it toward knowledge that stays gone under relearning.

Methods never see the optimizer, so `loss` does SAM's two passes itself: it takes g with `autograd.grad`
over the trained parameters (those with requires_grad: the adapter under LoRA), moves them to theta + delta,
takes l_f's gradient there, puts the saved weights back bit for bit, and returns `surrogate`: its value is
l_f(theta) (what is logged) and its gradient the perturbed one. The engine's backward, gradient accumulation,
clipping and autocast then see an ordinary loss. Cost per step: two forward-backward passes of the forget
batch instead of one, and a copy of the trained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from obliviate.methods.base import LossOutput, register_method
from obliviate.methods.npo import NPO, NPOConfig, npo_loss
from obliviate.models.logprobs import plus_retain, ref_logprob, sequence_logprob, token_mean_nll

_PAPER = "Fan et al. 2025, arXiv:2502.05374"


@dataclass
class SAMNPOConfig(NPOConfig):
    rho: float = field(
        default=0.05,
        metadata={
            "help": (
                f"radius of the weight perturbation, the L2 norm of delta over all trained parameters ({_PAPER}; "
                "SAM: Foret et al. 2021, arXiv:2010.01412). 0 is plain NPO. The scale is absolute, so it depends on "
                "the model: on the embedded model the first-order step raises the forget loss at 0.05 but already "
                "overshoots its peak at 0.2"
            )
        },
    )


def sharpness_aware(loss_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], rho: float):
    """(l(theta), l(theta + delta), grad l(theta + delta)) for delta = rho * g / ||g||, g = grad l(theta).

    `loss_fn` computes l at the parameters' current values; it is called twice. ||g|| is the L2 norm over
    all of `params` together; a parameter `loss_fn` does not reach has gradient 0. Values come back
    detached. The parameters hold exactly their starting values on return, also when `loss_fn` raises.
    rho == 0 or g == 0 skips the second pass: the gradient returned is g.
    """
    loss = loss_fn()
    grads = _grad(loss, params)
    norm = torch.sqrt(sum(g.float().pow(2).sum() for g in grads))
    if rho == 0 or norm == 0:
        return loss.detach(), loss.detach(), grads
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_((g.float() * (rho / norm)).to(p.dtype))
        del grads  # the perturbation is in the weights; free its memory before the second pass
        perturbed = loss_fn()
        return loss.detach(), perturbed.detach(), _grad(perturbed, params)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def _grad(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def surrogate(value: torch.Tensor, params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """A scalar equal to `value` whose gradient w.r.t. each of `params` is the matching entry of `grads`:
    value + d - d.detach() with d = sum_i <p_i, g_i>, so d - d.detach() is exactly 0 and d/dp_i = g_i."""
    dot = sum((p * g.to(p.dtype)).sum() for p, g in zip(params, grads))
    return value.detach() + dot - dot.detach()


@register_method
class SAMNPO(NPO):
    name = "sam_npo"
    help = (
        "NPO whose forget loss is minimised at the worst weights within rho (sharpness-aware), so that "
        "relearning a few forget answers does not bring the rest back; plus retain NLL."
    )
    source = (
        "Fan et al. 2025, Towards LLM Unlearning Resilient to Relearning Attacks: A Sharpness-Aware "
        "Minimization Perspective and Beyond (ICML 2025, arXiv:2502.05374)"
    )
    config_class = SAMNPOConfig
    train_defaults = {"lr": 3e-5, "steps": 22}

    def loss(self, model, batch, ref=None) -> LossOutput:
        f = batch["forget"]
        ref_logp = ref_logprob(ref, f)
        logs: dict[str, float] = {}

        def forget_loss() -> torch.Tensor:
            logp, n = sequence_logprob(model, f)
            logs.setdefault("forget_nll", token_mean_nll(logp, n).item())  # the first call's: at theta
            return npo_loss(logp, ref_logp, self.config.beta)

        params = [p for p in model.parameters() if p.requires_grad]
        npo, perturbed, grads = sharpness_aware(forget_loss, params, self.config.rho)
        logs.update(npo=npo.item(), npo_perturbed=perturbed.item())
        forget = surrogate(npo, params, grads)
        return LossOutput(plus_retain(model, batch, forget, logs, self.config.alpha), logs)
