"""Run each prompt token once: a batch's common prefix once, and no padding through the model.

A chat template opens every conversation with the same text (SmolLM2's, a system prompt).
Generation and likelihood scoring run that prefix through the model once, repeat its
key/value cache for the batch, and continue each row from it. Positions follow from the
attention mask, so every row continues at its own positions, and the values must equal those
of the plain left-padded pass up to float rounding (tested in fp32: tests/models/test_generate.py,
tests/evaluation/test_suite.py). In bf16 the rounding differs from the plain batch's, as it
already does between batch sizes (docs/PERFORMANCE.md measures both).

Generation and answer-candidate scoring go further (`prefilled`): a batch's prompts run in
chunks of rows that share a longer opening (an attack's framing text) and have similar
lengths, and the chunks' caches are laid side by side, so a batch mixing short and long
prompts pads neither.

Callers turn all of this off with InferenceOptions.share_prefix (models/inference.py): they
then call neither `shared_length` nor `prefilled`.
"""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from obliviate.models.attention import CPU_INFERENCE
from obliviate.models.logprobs import forward_accepts

MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth its own pass
# Attention whose mask is built for the cache's room (SpareRoomLayer).
ROOMY_ATTENTION = ("sdpa", "eager", CPU_INFERENCE)


def _text_config(model):
    config = model.config
    return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config


def _attention_only(model) -> bool:
    """Whether every layer keeps a plain key/value cache (no state-space or linear-attention layers)."""
    types = getattr(_text_config(model), "layer_types", None)
    return types is None or all(t in ("full_attention", "sliding_attention") for t in types)


def shared_length(model, rows: list[list[int]], limit: int) -> int:
    """Length of the token prefix common to every row, at most `limit`; 0 when sharing does not pay
    or the model's cache cannot be repeated this way."""
    if len(rows) < 2 or not _attention_only(model):
        return 0
    first = rows[0]
    n = min(limit, *map(len, rows))
    shared = next((k for k in range(n) if any(row[k] != first[k] for row in rows)), n)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def cache_name(model) -> str:
    """The forward keyword that takes a key/value cache (transformers renamed it)."""
    return "cache" if forward_accepts(model, "cache") else "past_key_values"


def last_logits_only(model) -> dict:
    """The forward keyword that limits the output head to the last position, where the model takes it."""
    return {"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {}


def prefix_cache(model, prefix: torch.Tensor, rows: int, memo: dict | None = None):
    """The key/value cache of `prefix` ([1, P] token ids), repeated for `rows` rows: the cache each row
    would hold after running `prefix` itself.

    `memo`, a dict kept while the weights stay the same (one call's batches), holds the prefixes
    already run, which are then copied rather than run again.
    """
    key = tuple(prefix[0].tolist())
    single = memo.get(key) if memo is not None else None
    if single is None:
        single = DynamicCache(config=model.config)  # sliding-window layers get their own cache layers
        model(input_ids=prefix, use_cache=True, **{cache_name(model): single}, **last_logits_only(model))
        if memo is not None:
            memo[key] = single
    cache = copy.deepcopy(single) if memo is not None else single
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


def length_batches(
    lengths: list[int], batch_size: int, max_padding: float = 1 / 3, min_rows: int = 32
) -> list[list[int]]:
    """Indices in length order, cut into batches of at most `batch_size`; a batch of `min_rows` or
    more also closes when the next item would make its padded size exceed its real tokens by
    more than `max_padding`."""
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        n = lengths[i]
        if current and (
            len(current) == batch_size
            or (len(current) >= min_rows and (len(current) + 1) * n > (1 + max_padding) * (real + n))
        ):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += n
    return batches + [current] if current else batches


def _common(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _opening_groups(rows: list[list[int]], order: list[int], min_rows: int) -> list[list[int]]:
    """`order` (lexicographic) split into groups of at least `min_rows` rows that share an opening
    MIN_SHARED_PREFIX tokens longer than all of `order` do, recursively; the other rows form one group."""
    base = min(_common(rows[order[0]], rows[i]) for i in order)
    runs, current = [], [order[0]]
    for prev, i in zip(order, order[1:]):
        if _common(rows[prev], rows[i]) >= base + MIN_SHARED_PREFIX:
            current.append(i)
        else:
            runs.append(current)
            current = [i]
    runs.append(current)
    if not any(len(run) >= min_rows for run in runs):
        return [order]
    groups = [g for run in runs if len(run) >= min_rows for g in _opening_groups(rows, run, min_rows)]
    rest = [i for run in runs if len(run) < min_rows for i in run]
    return groups + [rest] if rest else groups


def prefill_chunks(rows: list[list[int]], max_padding: float = 0.25, min_rows: int = 4) -> list[list[int]]:
    """Row indices cut into chunks to run through the model: rows that share a longer opening than
    the others (an attack's framing text, run once per chunk) go together (`_opening_groups`), each
    group in length order, a chunk closing rather than pad what follows its shared prefix by more
    than `max_padding` (`length_batches`)."""
    chunks = []
    for group in _opening_groups(rows, sorted(range(len(rows)), key=rows.__getitem__), min_rows):
        shared = min(_common(rows[group[0]], rows[i]) for i in group)
        lengths = [len(rows[i]) - shared for i in group]
        chunks += [[group[j] for j in batch] for batch in length_batches(lengths, len(group), max_padding, min_rows)]
    return chunks


def can_prefill(model, width: int) -> bool:
    """Whether `prefilled` applies: every layer a plain key/value cache that keeps `width` tokens."""
    window = getattr(_text_config(model), "sliding_window", None)
    return _attention_only(model) and (window is None or width < window)


class SpareRoomLayer(DynamicLayer):
    """A DynamicLayer with room for `spare` more tokens: decoding writes each token in place instead
    of copying the whole cache (torch.cat) at every step. Its written part must equal DynamicLayer's
    after the same updates (tested). Like transformers' static cache, attention reads the whole
    (zero-filled) room and the mask, built for the room's size, hides what is not written yet;
    the room grows by `spare` tokens when full."""

    def __init__(self, spare: int):
        super().__init__()
        self.spare = spare
        self.length = 0

    def _room(self) -> int:
        return self.keys.shape[-2] if self.is_initialized and self.keys.dim() == 4 else 0

    def _room_for(self, end: int) -> int:
        return self._room() if end <= self._room() else end + self.spare

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if (room := self._room_for(end)) != self._room():
            grown = [new.new_zeros((*new.shape[:2], room, new.shape[-1])) for new in (key_states, value_states)]
            if start:
                grown[0][..., :start, :] = self.keys[..., :start, :]
                grown[1][..., :start, :] = self.values[..., :start, :]
            self.keys, self.values = grown
        self.keys[..., start:end, :], self.values[..., start:end, :] = key_states, value_states
        self.length = end
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._room_for(self.length + query_length), 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0:
            self.length = max(0, self.length + tokens_to_remove)
            self.keys[..., self.length :, :] = 0
            self.values[..., self.length :, :] = 0


@torch.inference_mode()
def prefilled(
    model, rows: list[list[int]], pad: int, spare: int = 0, memo: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """Each row's tokens but its last, run through the model in `prefill_chunks`; returns (token ids,
    attention mask, key/value cache) for generate(), which then runs only the last tokens. What the
    model computes from them must equal what it computes from the rows left padded in one batch
    and run whole, up to float rounding (tested).

    A chunk runs in the [shared prefix | left padding | rest] layout with the prefix once
    (`prefix_cache`); its cache goes right-aligned into the batch's, so a row reads
    [left padding | its chunk's layout | last token], and positions follow from the mask.
    The batch's cache keeps room for `spare` tokens per row (`SpareRoomLayer`) where the mask has padding.
    `memo`: see `prefix_cache`.
    """
    device = next(model.parameters()).device
    memo = {} if memo is None else memo
    body = [row[:-1] for row in rows]
    width = max(map(len, body))
    parts = []
    for chunk in prefill_chunks(body):
        sub = [body[i] for i in chunk]
        shared = shared_length(model, sub, min(map(len, sub)) - 1)  # every row keeps a token after the prefix
        ids, mask = left_padded(sub, shared, pad)
        ids, mask = ids.to(device), mask.to(device)
        cache = prefix_cache(model, ids[:1, :shared], len(sub), memo) if shared else DynamicCache(config=model.config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=ids[:, shared:],
            attention_mask=mask,
            position_ids=positions[:, shared:],
            use_cache=True,
            **{cache_name(model): cache},
            **last_logits_only(model),
        )
        parts.append((torch.tensor(chunk, device=device), ids, mask, cache))
    all_ids = torch.full((len(rows), width + 1), pad, dtype=torch.long, device=device)
    all_mask = torch.zeros_like(all_ids)
    for chunk, ids, mask, _ in parts:
        all_ids[chunk, width - ids.shape[1] : width] = ids
        all_mask[chunk, width - mask.shape[1] : width] = mask
    all_ids[:, width] = torch.tensor([row[-1] for row in rows], device=device)
    all_mask[:, width] = 1
    # Layer by layer, so the chunks' caches and the batch's are never held whole at once.
    cache = DynamicCache(config=model.config)
    # Attention reads the whole room and the mask hides what is unwritten, so the room needs attention whose masks
    # cover it, and a mask: model.generate drops an all-ones one (a batch of equal lengths), and would read the room.
    if getattr(model.config, "_attn_implementation", None) in ROOMY_ATTENTION and not bool(all_mask.all()):
        cache.layers = [SpareRoomLayer(spare) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    for layer in range(len(parts[0][3].layers)):
        grids = []
        for kind in ("keys", "values"):
            first = getattr(parts[0][3].layers[layer], kind)
            grid = first.new_zeros((len(rows), first.shape[1], width, first.shape[3]))
            for chunk, ids, _, part in parts:
                grid[chunk, :, width - ids.shape[1] :] = getattr(part.layers[layer], kind)
                setattr(part.layers[layer], kind, None)
            grids.append(grid)
        cache.update(*grids, layer)
    return all_ids, all_mask, cache
