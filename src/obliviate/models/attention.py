"""Attention implementations obliviate switches to on a CPU, through transformers' AttentionInterface.

Decoding on a CPU: PyTorch's fused attention kernel spends about 1 ms per layer on a batch
of 128 one-token queries (SmolLM2 at 60 cached tokens), more than the layer's key, value
and output projections together. `decode_attention` runs those queries as two batched
products over each key/value head's group of query heads (no repeated keys), in the
precision of transformers' eager attention (scores in the model's dtype, softmax in fp32):
about 0.4 ms. Every other call (prompts, scoring, training, anything on a GPU or with
extras such as soft-capping or attention sinks) goes to transformers' SDPA function
unchanged, and the masks are SDPA's.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_DECODE = "obliviate_cpu_decode"
_EXTRAS = ("softcap", "s_aux", "sinks", "position_bias")


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """One query token per row on a CPU: grouped products; anything else: transformers' SDPA."""
    batch, heads, q_len, dim = query.shape
    groups = key.shape[1]
    mask_ok = attention_mask is None or (attention_mask.dtype == torch.bool and attention_mask.shape[-2] == 1)
    if (q_len != 1 or query.device.type != "cpu" or dropout or heads % groups or not mask_ok
            or any(kwargs.get(k) is not None for k in _EXTRAS)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else dim**-0.5
    q = query.reshape(batch, groups, heads // groups, dim)  # a key/value head's query heads, side by side
    scores = torch.matmul(q, key.transpose(-1, -2)) * scale  # [batch, groups, heads per group, keys]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.reshape(attention_mask.shape[0], 1, 1, -1), float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # [batch, groups, heads per group, dim]
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(CPU_DECODE, decode_attention)
AttentionMaskInterface.register(CPU_DECODE, sdpa_mask)


def set_attention(model, name: str | None):
    """Switch the model's attention implementation to `name`; returns a function that undoes it."""
    before = getattr(model.config, "_attn_implementation", None)
    if not name or before in (None, name) or not hasattr(model, "set_attn_implementation"):
        return lambda: None
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError):  # a model that offers no such implementation keeps its own
        return lambda: None
    return lambda: model.set_attn_implementation(before)


@contextlib.contextmanager
def cpu_decoding(model):
    """`decode_attention` for the duration, on a CPU model that uses SDPA; other models are left as they are."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
    restore = set_attention(model, CPU_DECODE) if on_cpu and sdpa else (lambda: None)
    try:
        yield
    finally:
        restore()
