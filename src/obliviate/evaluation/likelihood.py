"""One forward pass per batch for every likelihood metric: NLL, perplexity and the membership scores.

For each record (question + answer, prompt + completion, or raw text) the loss is taken
on the completion tokens only, as in training. From a single pass we keep the summed
log-probability, the token count, Min-K% (mean of the lowest k% token log-probs) and
Min-K%++ (the same over token log-probs standardized by the mean and spread of log p
under the model's own next-token distribution).
"""

from __future__ import annotations

import collections
import contextlib
import math
import zlib

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from obliviate.models.attention import cpu_inference
from obliviate.models.inference import DEFAULT, InferenceOptions
from obliviate.models.logprobs import answer_logits, right_padded
from obliviate.models.prefix import cache_name, can_prefill, length_batches, prefilled, prefix_cache, shared_length
from obliviate.models.prompts import encode, pad_id, split_record


def _lowest_mean(values: torch.Tensor, k: float) -> float:
    n = max(1, math.ceil(k * values.numel()))
    return torch.topk(values, n, largest=False).values.mean().item() if values.numel() else float("nan")


@torch.inference_mode()
def score_records(
    model,
    tokenizer,
    records: list[dict],
    *,
    batch_size: int = 16,
    max_length: int = 256,
    k: float = 0.2,
    bf16: bool = False,
    min_k_pp: bool = True,
    inference: InferenceOptions = DEFAULT,
) -> list[dict]:
    """Per record: {"logprob", "n_tokens", "nll", "min_k", "min_k_pp", "zlib_bytes"} (log-probs in nats).

    `min_k_pp=False` leaves Min-K%++ out (None), which skips most of the vocabulary-sized work.
    `bf16` runs the pass under bf16 autocast (CPU or GPU). Records are batched in
    length order, and a batch closes early rather than pad by more than a quarter; the
    result is in the input order. A batch's common prefix runs once (`inference.share_prefix`), which
    must give each record's values alone up to float rounding (tested).
    """
    # Records that open alike (a chat template) are batched together, so their common prefix runs
    # once; within that, in length order (characters stand in for tokens).
    texts = [split_record(tokenizer, r) for r in records]
    openings = collections.Counter(t[0][:48] for t in texts)
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, t in enumerate(texts):
        groups[t[0][:48] if openings[t[0][:48]] > 1 else ""].append(i)
    batches = [
        [members[j] for j in batch]
        for _, members in sorted(groups.items())
        for batch in length_batches([sum(map(len, texts[i])) for i in members], batch_size, 0.25, min_rows=4)
    ]
    out: list[dict | None] = [None] * len(records)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    memo: dict = {}  # prefixes already run (models.prefix.prefix_cache)
    try:
        with cpu_inference(model, inference.cpu_attention):
            for idx in batches:
                batch = {k_: v.to(device) for k_, v in encode(tokenizer, [records[i] for i in idx], max_length).items()}
                with autocast:
                    # The head runs from the first answer token on, like training's (models.logprobs),
                    # and the records' common prefix runs once (models.prefix).
                    logits, labels = _shared_prefix_logits(model, batch, memo, inference.share_prefix)
                mask = labels != -100
                # Vocabulary-sized work only at labelled positions (prompts are often most of a record).
                token_lp, z = _token_stats(logits[mask], labels[mask], min_k_pp)
                bounds = [0, *mask.sum(-1).cumsum(0).tolist()]
                for row, i in enumerate(idx):
                    out[i] = _row_stats(
                        token_lp[bounds[row] : bounds[row + 1]],
                        z[bounds[row] : bounds[row + 1]] if z is not None else None,
                        texts[i][1],
                        k,
                    )
    finally:
        model.train(was_training)
    return out


def _shared_prefix_logits(
    model, batch: dict[str, torch.Tensor], memo: dict, share: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """answer_logits(model, batch), with the batch's common token prefix run once (models.prefix) when `share`."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    labelled = (labels != -100).any(0)
    first_label = int(labelled.float().argmax()) if bool(labelled.any()) else 0
    # The prefix stops before the first labelled position and leaves every row a token.
    limit = max(min(int(mask.sum(-1).min()), first_label) - 1, 0)
    shared = shared_length(model, ids[:, :limit].tolist(), limit) if share and right_padded(mask) else 0
    if not shared:
        return answer_logits(model, batch)
    cache = prefix_cache(model, ids[:1, :shared], ids.shape[0], memo)
    rest = {"input_ids": ids[:, shared:], "attention_mask": mask[:, shared:], "labels": labels[:, shared:]}
    return answer_logits(model, rest, use_cache=True, **{cache_name(model): cache})


def _row_stats(token_lp: torch.Tensor, z: torch.Tensor | None, completion: str, k: float) -> dict:
    n = token_lp.numel()
    return {
        "logprob": token_lp.sum().item(),
        "n_tokens": n,
        "nll": -token_lp.sum().item() / max(n, 1),
        "min_k": _lowest_mean(token_lp, k),
        "min_k_pp": _lowest_mean(z, k) if z is not None else None,
        "zlib_bytes": len(zlib.compress(completion.encode("utf-8"))),
    }


def _token_stats(
    logits: torch.Tensor, labels: torch.Tensor, spread: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob and Min-K%++ z-score of each label token, from the logits that predict it ([N, V], [N]).

    Without `spread` only the log-probs, in one fused pass (the z-score needs the mean and spread
    of log p over the vocabulary, the costliest part)."""
    if not spread:
        return -F.cross_entropy(logits.float(), labels, reduction="none"), None
    logp = F.log_softmax(logits.float(), dim=-1)
    token_lp = logp.gather(1, labels.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    return token_lp, (token_lp - mu) / sigma


@torch.inference_mode()
def score_shared(
    model,
    tokenizer,
    groups: list[tuple[dict, list[dict]]],
    *,
    batch_size: int = 16,
    k: float = 0.2,
    max_length: int = 256,
    min_k_pp: bool = True,
    inference: InferenceOptions = DEFAULT,
) -> list[list[dict]]:
    """score_records for records that share a prompt, running each prompt once.

    `groups` holds (any record with the prompt, [records with that prompt, ...]), e.g. a
    question with its correct and wrong answers. Every prompt but its last token goes through
    the model once (models.prefix.prefilled: unpadded, common openings once); then the
    completions, in length order and `batch_size` groups' worth at a time, each continue its
    prompt's cache from the prompt's last token, whose logits predict the completion's first
    token. The values must equal score_records' up to float rounding (tested). With
    `inference.share_prefix` off, this is score_records.
    """
    encode_ = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompts = [encode_(split_record(tokenizer, g[0])[0]) for g in groups]
    parts = [(g, r, split_record(tokenizer, r)[1]) for g, (_, records) in enumerate(groups) for r in records]
    flat = [(g, completion, encode_(completion)) for g, _, completion in parts]
    plain = not inference.share_prefix or not flat or min(map(len, prompts)) < 2
    if plain or not can_prefill(model, max(map(len, prompts))):
        scores = iter(
            score_records(
                model,
                tokenizer,
                [r for _, r, _ in parts],
                batch_size=batch_size,
                k=k,
                max_length=max_length,
                min_k_pp=min_k_pp,
                inference=inference,
            )
        )
        return [[next(scores) for _ in records] for _, records in groups]
    was_training = model.training
    model.eval()
    try:
        with cpu_inference(model, inference.cpu_attention):
            rows = max(1, batch_size * len(flat) // len(groups))  # `batch_size` groups' worth of completions
            scores = iter(_score_completions(model, tokenizer, prompts, flat, rows, k, min_k_pp))
    finally:
        model.train(was_training)
    return [[next(scores) for _ in records] for _, records in groups]


def _score_completions(
    model,
    tokenizer,
    prompts: list[list[int]],
    flat: list[tuple[int, str, list[int]]],
    batch_size: int,
    k: float,
    min_k_pp: bool,
) -> list[dict]:
    """score_shared's passes: the prompts once, then (prompt index, completion, its token ids) in batches."""
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    out: list[dict] = [{}] * len(flat)
    p_ids, p_mask, p_cache = prefilled(model, prompts, pad)
    width = p_ids.shape[1] - 1  # cached columns; the last holds each prompt's last token
    for idx in length_batches([len(c) for _, _, c in flat], batch_size, max_padding=math.inf):
        owner = torch.tensor([flat[i][0] for i in idx], device=device)
        length = 1 + max(len(flat[i][2]) for i in idx)
        ids = torch.full((len(idx), length), pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            tokens = [prompts[flat[i][0]][-1], *flat[i][2]]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        cache = DynamicCache(config=model.config)
        for layer, part in enumerate(p_cache.layers):
            cache.update(part.keys.index_select(0, owner), part.values.index_select(0, owner), layer)
        past = p_mask[owner, :width]
        logits = model(
            input_ids=ids,
            attention_mask=torch.cat([past, mask], dim=1),
            position_ids=past.sum(-1, keepdim=True) + torch.arange(length, device=device),
            use_cache=True,
            **{cache_name(model): cache},
        ).logits
        keep = mask[:, 1:].bool()
        token_lp, z = _token_stats(logits[:, :-1][keep], ids[:, 1:][keep], min_k_pp)
        bounds = [0, *keep.sum(-1).cumsum(0).tolist()]
        for row, i in enumerate(idx):
            out[i] = _row_stats(
                token_lp[bounds[row] : bounds[row + 1]],
                z[bounds[row] : bounds[row + 1]] if z is not None else None,
                flat[i][1],
                k,
            )
    return out


def perplexity(scores: list[dict]) -> float | None:
    """Token-level perplexity over scored records (every token weighs the same)."""
    n = sum(s["n_tokens"] for s in scores)
    return math.exp(-sum(s["logprob"] for s in scores) / n) if n else None


def mean_record_nll(scores: list[dict]) -> float | None:
    """Token-level mean NLL (nats) over scored records (every token weighs the same): log(perplexity)."""
    n = sum(s["n_tokens"] for s in scores)
    return -sum(s["logprob"] for s in scores) / n if n else None
