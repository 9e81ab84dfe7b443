"""RMU: steer one layer's activations on forget text toward a fixed random direction (Li et al. 2024, WMDP).

"Layer l" is the l-th decoder layer, 0-based, and its activation is that layer's output (the
residual stream after it), which `output_hidden_states=True` returns as `hidden_states[l + 1]`
(index 0 is the embeddings). The last entry of `hidden_states` is the final norm's output, not
the last layer's, so l must be below the last layer. Only the MLPs of layers l-2, l-1 and l
are trained.

Which tokens count: on forget, the answer tokens only (labels != -100, so `spans` narrow it
further); the paper uses every token of its forget documents, but our forget prompts share the
chat template with the retain prompts, and pushing those shared positions to c*u would fight the
retain term head-on. On retain, every real token (attention mask), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from obliviate.errors import UserError
from obliviate.methods.base import LossOutput, Method, register_method
from obliviate.models.families import family_of
from obliviate.models.prompts import encode

_NORM_RECORDS = 16  # forget records on which the activation norm behind the default c is measured


@dataclass
class RMUConfig:
    layer: int | None = field(
        default=None,
        metadata={
            "help": (
                "decoder layer l (0-based) whose output is steered; the MLPs of layers l-2..l are trained. "
                "Default: 7/32 of the depth, the paper's layer 7 of Zephyr-7B's 32"
            )
        },
    )
    steering: float | None = field(
        default=None,
        metadata={
            "help": (
                "c, the norm of the target activation c*u (paper: 6.5 on Zephyr-7B). Default: scale x the mean "
                "norm of the frozen model's layer-l activations on forget answer tokens, since norms differ per model"
            )
        },
    )
    scale: float = field(
        default=4.0,
        metadata={
            "help": (
                "c as a multiple of the mean activation norm when steering is unset (our choice; the paper fixes c "
                "per model): WMDP reports that c must be large against the activations' norm, and 4x puts the forget "
                "target well outside the usual activations"
            )
        },
    )
    alpha: float = field(
        default=100.0,
        metadata={
            "help": (
                "weight of the retain MSE to the frozen activations (paper: 1200 on Zephyr-7B with c = 6.5). Both "
                "terms are per-element MSEs, so their balance depends on c^2 and the model's activation scale: "
                "raise alpha if general answers degrade, lower it if the forget answers survive"
            )
        },
    )
    params: str = field(
        default="mlp.",
        metadata={
            "help": (
                "which parameters of the trained layers move, as the name that follows `layers.<k>.`: "
                "'mlp.' (the paper) or 'mlp.down_proj.' (the WMDP reference code); both name the same parts in "
                "every supported family (GPT-2's mlp.c_proj, OPT's fc1/fc2)"
            )
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the random direction u"})


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of ||h - target||^2 / (positions * hidden size): the per-element MSE over
    counted tokens.

    `h` [B, T, D]; `target` broadcasts to it ([D] or [B, T, D]); `mask` [B, T].
    """
    sq = (h.float() - target.float()).pow(2).sum(-1)
    mask = mask.float()
    return (sq * mask).sum() / (mask.sum().clamp(min=1) * h.shape[-1])


def rmu_loss(forget_h, forget_mask, target, retain_h, retain_ref_h, retain_mask, alpha: float):
    """mse(h_forget, c*u) + alpha * mse(h_retain, h_ref_retain), each a `masked_mse`; returns (loss, forget, retain)."""
    forget = masked_mse(forget_h, target, forget_mask)
    retain = masked_mse(retain_h, retain_ref_h, retain_mask)
    return forget + alpha * retain, forget, retain


def layer_output(model, sub: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """The output of decoder layer `layer` (0-based), [B, T, D]."""
    out = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"], output_hidden_states=True)
    return out.hidden_states[layer + 1]


@register_method
class RMU(Method):
    name = "rmu"
    help = (
        "Representation misdirection: push one layer's activations on forget answers toward a scaled random direction "
        "and keep retain activations equal to the base model's; trains three MLPs only."
    )
    source = (
        "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use with Unlearning (arXiv:2403.03218)"
    )
    config_class = RMUConfig
    needs_ref_model = True
    batches = ("forget", "retain")
    train_defaults = {"lr": 2e-4, "steps": 30}

    def setup(self, model, tokenizer, data, ref, tuned=None):
        """Chooses the layer, draws u and measures c. Raises UserError for a layer the model does not have, or a
        model family whose layer names obliviate does not know (models.families)."""
        c = self.config
        family = family_of(model, f"The {self.name} method")
        self.parts = family.parts(c.params)
        self.layer_part = family.layer_part
        n = model.config.num_hidden_layers
        layer = c.layer if c.layer is not None else n * 7 // 32
        if not 0 <= layer < n - 1:
            raise UserError(
                f"RMU's layer must be between 0 and {n - 2} for this {n}-layer model, got {layer}; "
                "set `layer` to one of them."
            )
        self.layer = layer
        self.updated = set(range(max(layer - 2, 0), layer + 1))
        # Uniform in [0, 1) then normalised, as in the WMDP reference code.
        u = torch.rand(model.config.hidden_size, generator=torch.Generator().manual_seed(c.seed))
        self.direction = u / u.norm()
        self.steering = (
            c.steering
            if c.steering is not None
            else c.scale * self._mean_norm(ref if ref is not None else model, tokenizer, data["forget"][:_NORM_RECORDS])
        )

    def _mean_norm(self, model, tokenizer, records: list[dict]) -> float:
        device = next(model.parameters()).device
        sub = {k: v.to(device) for k, v in encode(tokenizer, records).items()}
        with torch.no_grad():
            h = layer_output(model, sub, self.layer).float()
        mask = sub["labels"] != -100
        return h[mask].norm(dim=-1).mean().item()

    def trainable(self, name: str) -> bool:
        """The chosen parameters of layers l-2..l; everything until `setup` has chosen the layers."""
        if not hasattr(self, "updated"):
            return True
        found = self.layer_part(name)
        return found is not None and found[0] in self.updated and found[1].startswith(self.parts)

    def loss(self, model, batch, ref=None) -> LossOutput:
        f, r = batch["forget"], batch["retain"]
        forget_h = layer_output(model, f, self.layer)
        retain_h = layer_output(model, r, self.layer)
        with torch.no_grad():
            retain_ref_h = layer_output(ref, r, self.layer)
        target = self.steering * self.direction.to(forget_h.device)
        loss, forget, retain = rmu_loss(
            forget_h, f["labels"] != -100, target, retain_h, retain_ref_h, r["attention_mask"].bool(), self.config.alpha
        )
        return LossOutput(loss, {"forget_mse": forget.item(), "retain_mse": retain.item()})
