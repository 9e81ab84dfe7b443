"""The quantization attack: round-to-nearest (RTN) integer quantization of the linear weights.

Zhang et al. 2024 (Catastrophic Failure of LLM Unlearning via Quantization, arXiv:2410.16454)
found that 4-bit quantization brings back most of what gradient unlearning removed: the
updates are small, and rounding snaps many weights back to the base model's grid points.
`quantize_rtn` is the simplest such quantizer and needs no calibration data: symmetric,
per output row (or per group of `group_size` input columns), dequantized back to float so
the model runs as before. Embeddings and the output head stay in full precision, as
weight-only quantizers commonly leave them.
"""

from __future__ import annotations

import copy

import torch
from transformers.pytorch_utils import Conv1D


@torch.no_grad()
def rtn(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """w -> scale * clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1), scale = max|w| / (2^(b-1) - 1)
    per row, or per `group_size` consecutive columns of a row."""
    if bits < 2:
        raise ValueError(f"bits must be at least 2, got {bits}")
    rows, cols = weight.shape
    w = weight.float()
    if group_size and cols % group_size == 0:
        w = w.reshape(rows, cols // group_size, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax)
    return (q * scale).reshape(rows, cols).to(weight.dtype)


def quantize_rtn(model, bits: int, group_size: int | None = 128):
    """A copy of `model` whose linear layers' weights went through `rtn` (the output head excepted).

    GPT-2's projections are transformers' Conv1D, a linear layer that stores its weight as [in, out]: it is
    quantized transposed, so that the groups run along its input columns as in nn.Linear's [out, in]."""
    out = copy.deepcopy(model)
    head = out.get_output_embeddings()
    for module in out.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            module.weight.data.copy_(rtn(module.weight.data, bits, group_size))
        elif isinstance(module, Conv1D):
            module.weight.data.copy_(rtn(module.weight.data.T, bits, group_size).T)
    return out.eval()
