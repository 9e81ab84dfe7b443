"""Adaptive RMU: RMU whose steering strength follows each forget input's own activation norm
(Dang et al. 2025, On Effects of Steering Latent Representation for Large Language Model Unlearning,
AAAI 2025, arXiv:2408.06223).

RMU (methods/rmu.py) pushes the layer-l activations of forget answers toward c * u, one fixed c for all
inputs. Dang et al. show that the push only lowers the model's confidence when c is large against the
activation it replaces, and that activation norms grow with depth and differ from input to input, so a
fixed c is too weak for some inputs and layers. Adaptive RMU sets the target per forget input x to

    beta * ||h_l^frozen(x)|| * u,

with h_l^frozen the frozen (reference) model's layer-l activation. Here ||h_l^frozen(x)|| is the mean, over
the answer tokens of x (the tokens RMU steers), of the per-token norms. Everything else is RMU's: the
layer, the unit direction u, the trained MLPs of layers l-2..l, the retain MSE to the frozen activations.

Why it is here for durability: misdirecting a representation removes more than lowering answer
probabilities does (RMU keeps more of its leak cut under relearning than NPO on the embedded model, see
docs/METHODS.md), and a target scaled per input leaves no forget input close to where it started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from obliviate.methods.base import LossOutput, register_method
from obliviate.methods.rmu import RMU, layer_output

_PAPER = "Dang et al. 2025, arXiv:2408.06223"


@dataclass
class AdaptiveRMUConfig:
    layer: int | None = field(
        default=None,
        metadata={
            "help": (
                "decoder layer l (0-based) whose output is steered; the MLPs of layers l-2..l are trained. "
                f"Default: 7/32 of the depth, as in RMU ({_PAPER} also works at later layers)"
            )
        },
    )
    beta: float = field(
        default=5.0,
        metadata={
            "help": (
                "beta: the target's norm as a multiple of the frozen model's layer-l activation norm on the same "
                f"forget input ({_PAPER}: 5 on Zephyr-7B and Mistral-7B)"
            )
        },
    )
    alpha: float = field(
        default=100.0,
        metadata={
            "help": (
                f"weight of the retain MSE to the frozen activations ({_PAPER}: 1200 on Zephyr-7B); as in RMU, raise "
                "it if general answers degrade, lower it if the forget answers survive"
            )
        },
    )
    params: str = field(
        default="mlp.",
        metadata={
            "help": (
                "which parameters of the trained layers move, as the name that follows `layers.<k>.`: "
                "'mlp.' or 'mlp.down_proj.' (the WMDP reference code); both name the same parts in every supported "
                "family (GPT-2's mlp.c_proj, OPT's fc1/fc2)"
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the random direction u"})
    # RMU.setup's fixed c: set, so that setup does not measure one; the target's norm is chosen per input in loss.
    steering: ClassVar[float] = 0.0


def input_norms(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row b: the mean over masked positions t of ||h[b, t]||, [B] (0 for a row with none).

    `h` [B, T, D]; `mask` [B, T].
    """
    mask = mask.float()
    return (h.float().norm(dim=-1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@register_method
class AdaptiveRMU(RMU):
    name = "adaptive_rmu"
    help = (
        "RMU with the steering strength set per forget input to beta times the frozen model's activation "
        "norm on that input; trains three MLPs only."
    )
    source = (
        "Dang et al. 2025, On Effects of Steering Latent Representation for Large Language Model "
        "Unlearning (AAAI 2025, arXiv:2408.06223)"
    )
    config_class = AdaptiveRMUConfig
    train_defaults = {"lr": 2e-4, "steps": 30}

    def loss(self, model, batch, ref=None) -> LossOutput:
        f = batch["forget"]
        with torch.no_grad():
            norms = input_norms(layer_output(ref, f, self.layer), f["labels"] != -100)
        # RMU's target is steering * u; a [B, 1, 1] steering makes it one target per forget input.
        self.steering = self.config.beta * norms[:, None, None]
        out = super().loss(model, batch, ref)
        out.logs["steering"] = self.steering.mean().item()
        return out
