"""Run a batch's common token prefix once: the chat template's opening, shared by every prompt.

SmolLM2's template opens every conversation with the same system prompt, 24 of the 41 tokens
of a typical probe prompt. Generation and likelihood scoring run that prefix through the
model once, repeat its key/value cache for the batch, and continue each row from it.
Positions follow from the attention mask, so every row continues at its own positions and
the values are those of the plain pass up to float rounding (tested in fp32). In bf16 the
rounding differs from the plain batch's, as it already does between batch sizes
(docs/PERFORMANCE.md measures both).
"""

from __future__ import annotations

import torch

from obliviate.methods.logprobs import forward_accepts

SHARE_PREFIX = True  # off: every row runs its whole prompt (the benchmark's ablation)
MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth its own pass


def _attention_only(model) -> bool:
    """Whether every layer keeps a plain key/value cache (no state-space or linear-attention layers)."""
    config = model.config
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    types = getattr(config, "layer_types", None)
    return types is None or all(t in ("full_attention", "sliding_attention") for t in types)


def shared_length(model, rows: list[list[int]], limit: int) -> int:
    """Length of the token prefix common to every row, at most `limit`; 0 when sharing does not pay
    or the model's cache cannot be repeated this way."""
    if not SHARE_PREFIX or len(rows) < 2 or not _attention_only(model):
        return 0
    first = rows[0]
    n = min(limit, *map(len, rows))
    shared = next((k for k in range(n) if any(row[k] != first[k] for row in rows)), n)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def cache_name(model) -> str:
    """The forward keyword that takes a key/value cache (transformers renamed it)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def prefix_cache(model, prefix: torch.Tensor, rows: int):
    """The key/value cache of `prefix` ([1, P] token ids), repeated for `rows` rows."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)  # sliding-window layers get their own cache layers
    model(input_ids=prefix, use_cache=True, **{cache_name(model): cache})
    cache.batch_repeat_interleave(rows)
    return cache


def left_padded(rows: list[list[int]], shared: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask laid out as [common prefix | left padding | each row's rest];
    with `shared` = 0, plain left padding. Positions are to come from the mask."""
    width = max(len(row) for row in rows) - shared
    ids = torch.full((len(rows), shared + width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, :shared] = torch.tensor(rows[0][:shared], dtype=torch.long)
    mask[:, :shared] = 1
    for i, row in enumerate(rows):
        ids[i, ids.shape[1] - (len(row) - shared) :] = torch.tensor(row[shared:], dtype=torch.long)
        mask[i, ids.shape[1] - (len(row) - shared) :] = 1
    return ids, mask
