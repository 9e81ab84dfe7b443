"""Attention implementations obliviate switches to on a CPU, through transformers' AttentionInterface.

`cpu_attention` computes the small attention products of decoding and scoring on a CPU (few
queries against the cache) as two batched matrix products over each key/value head's group of
query heads, with no copy of the key/value heads per query head, in the precision of
transformers' eager attention (scores in the model's dtype, softmax in fp32). It must equal
transformers' SDPA attention (`sdpa_attention_forward`) on the same inputs up to float
rounding (tests/models/test_attention.py). Longer products (queries × keys above
`GROUPED_MAX`, where the fused kernel is faster), anything on a GPU and attention with extras
(soft-capping, sinks, dropout) go to transformers' SDPA function unchanged; the masks are
SDPA's. docs/PERFORMANCE.md has the timings.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_INFERENCE = "obliviate_cpu"
GROUPED_MAX = 64 * 128  # queries × keys per row up to which the grouped products run; longer ones go to SDPA
_EXTRAS = ("softcap", "s_aux", "sinks", "position_bias")


def cpu_attention(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs
) -> tuple[torch.Tensor, None]:
    """Small attention products on a CPU as grouped matrix products; anything else: transformers' SDPA.

    Equals `sdpa_attention_forward(module, query, key, value, attention_mask, ...)` up to float rounding, except
    that a query with no key to attend gets a finite output (eager attention's convention) rather than NaN."""
    batch, heads, q_len, dim = query.shape
    groups, k_len = key.shape[1], key.shape[2]
    mask_ok = attention_mask is None or (attention_mask.dtype == torch.bool and attention_mask.shape[1] == 1)
    if (
        q_len * k_len > GROUPED_MAX
        or query.device.type != "cpu"
        or dropout
        or heads % groups
        or not mask_ok
        or (attention_mask is None and q_len > 1)
        or any(kwargs.get(k) is not None for k in _EXTRAS)
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    per_group = heads // groups
    scale = scaling if scaling is not None else dim**-0.5
    q = query.reshape(batch, groups, per_group * q_len, dim)  # a key/value head's query heads, side by side
    scores = (torch.matmul(q, key.transpose(-1, -2)) * scale).view(batch, groups, per_group, q_len, k_len)
    if attention_mask is not None:
        # The dtype's lowest value rather than -inf, as eager attention does: a row with no key to
        # attend (a padding position) stays finite.
        mask = attention_mask.reshape(attention_mask.shape[0], 1, 1, q_len, k_len)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs.view(batch, groups, per_group * q_len, k_len), value)
    return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(CPU_INFERENCE, cpu_attention)
AttentionMaskInterface.register(CPU_INFERENCE, sdpa_mask)


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
def cpu_inference(model, enabled: bool = True):
    """`cpu_attention` for the duration, on a CPU model that uses SDPA; other models, or `enabled=False`
    (InferenceOptions.cpu_attention), leave the model as it is."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
    restore = set_attention(model, CPU_INFERENCE) if enabled and on_cpu and sdpa else (lambda: None)
    try:
        yield
    finally:
        restore()
