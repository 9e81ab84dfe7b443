"""AdamW for bf16 weights: moments kept in bf16, weight updates rounded stochastically.

With bf16 weights a plain optimizer loses small updates: a step of 1e-5 on a weight of
0.02 is below half of bf16's spacing there (about 1.2e-4), so round-to-nearest undoes it
every time. Stochastic rounding rounds up with probability equal to the remainder's share
of the spacing, so the expected weight follows the fp32 trajectory (Zamirai et al. 2020,
"Revisiting BFloat16 Training", arXiv:2010.06192).

Each parameter is updated in chunks: the chunk's weight, gradient and moments are widened
to fp32, PyTorch's fused AdamW kernel updates them, and the results are written back
(weight stochastically rounded, moments to nearest). The fp32 copies are one chunk at a
time, so memory stays at bf16 weights + bf16 gradients + two bf16 moments: 2 bytes x 4
per parameter, half of fp32 weights with their gradients and moments.

torchao's `_AdamW(bf16_stochastic_round=True)` and bitsandbytes' `AdamW8bit` do the same
job; this one reuses PyTorch's fused kernel and needs neither package. Their step times side
by side: benchmarks/optimizer_step.py, docs/PERFORMANCE.md.
"""

from __future__ import annotations

import torch


def stochastic_round_(bits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Round fp32 values, given as their int32 view `bits`, to bf16 precision in place: add uniform
    16-bit noise below the kept bits and truncate. Returns the fp32 view, exact in bf16."""
    bits.add_(noise[: bits.numel()].view_as(bits)).bitwise_and_(-65536)
    return bits.view(torch.float32)


def _fused_adamw_(w, g, m, v, step: torch.Tensor, group: dict) -> None:
    """PyTorch's fused AdamW kernel on one tensor of each kind, with a parameter group's settings (in place)."""
    beta1, beta2 = group["betas"]
    torch._fused_adamw_(
        [w],
        [g],
        [m],
        [v],
        [],
        [step],
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        amsgrad=False,
        maximize=False,
    )


class BF16AdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) over bf16 parameters; see the module docstring.

    Each step must equal, for a bf16 parameter, `torch.optim.AdamW(fused=True)` stepped on fp32
    copies of its weight, gradient and moments, followed by rounding: the weight to one of the two
    bf16 values around the fp32 result (stochastically), the moments to the nearest bf16 value.
    Parameters of another floating type (fp32 LoRA adapters on a bf16 base) get exactly the plain
    fused update. `chunk` elements are widened to fp32 at a time: the extra memory is four fp32
    chunks (1 MB each at the default), and the step's noise is drawn once at that length.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        seed: int = 0,
        chunk: int = 1 << 18,
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._gen = torch.Generator().manual_seed(seed)
        self.chunk = chunk

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        # One draw of noise per step, shared by every chunk: fresh noise per element would cost
        # more than the update itself, and chunks of different tensors need no independent noise.
        noise = {"cpu": torch.randint(0, 1 << 16, (self.chunk,), dtype=torch.int32, generator=self._gen)}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, device=p.device)  # fused kernels read it where the weights are
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                if p.dtype != torch.bfloat16:  # e.g. fp32 LoRA adapters on a bf16 base: the plain fused update
                    _fused_adamw_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
                    continue
                flat = [t.view(-1) for t in (p, p.grad, state["exp_avg"], state["exp_avg_sq"])]
                if str(p.device) not in noise:
                    noise[str(p.device)] = noise["cpu"].to(p.device)
                for start in range(0, flat[0].numel(), self.chunk):
                    w, g, m, v = (t[start : start + self.chunk] for t in flat)
                    w32, g32, m32, v32 = w.float(), g.float(), m.float(), v.float()
                    _fused_adamw_(w32, g32, m32, v32, state["step"].clone(), group)
                    w.copy_(stochastic_round_(w32.view(torch.int32), noise[str(p.device)]))
                    m.copy_(m32)
                    v.copy_(v32)
        return loss
