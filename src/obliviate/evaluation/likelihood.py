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

from obliviate.methods.logprobs import answer_logits, forward_accepts, right_padded
from obliviate.models.prefix import cache_name, left_padded, length_batches, prefix_cache, shared_length
from obliviate.models.prompts import encode, split_record


def _lowest_mean(values: torch.Tensor, k: float) -> float:
    n = max(1, math.ceil(k * values.numel()))
    return torch.topk(values, n, largest=False).values.mean().item() if values.numel() else float("nan")


@torch.inference_mode()
def score_records(model, tokenizer, records: list[dict], *, batch_size: int = 16, max_length: int = 256,
                  k: float = 0.2, bf16: bool = False, min_k_pp: bool = True) -> list[dict]:
    """Per record: {"logprob", "n_tokens", "nll", "min_k", "min_k_pp", "zlib_bytes"} (log-probs in nats).

    `min_k_pp=False` leaves Min-K%++ out (None), which skips most of the vocabulary-sized work.
    `bf16` runs the pass under bf16 autocast (CPU or GPU). Records are batched in
    length order, and a batch closes early rather than pad by more than a quarter; the
    result is in the input order.
    """
    # Records that open alike (a chat template) are batched together, so their common prefix runs
    # once; within that, in length order (characters stand in for tokens).
    texts = [split_record(tokenizer, r) for r in records]
    openings = collections.Counter(t[0][:48] for t in texts)
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for i, t in enumerate(texts):
        groups[t[0][:48] if openings[t[0][:48]] > 1 else ""].append(i)
    batches = [[members[j] for j in batch] for _, members in sorted(groups.items())
               for batch in length_batches([sum(map(len, texts[i])) for i in members], batch_size, 0.25, min_rows=4)]
    out: list[dict | None] = [None] * len(records)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        for idx in batches:
            batch = {k_: v.to(device) for k_, v in encode(tokenizer, [records[i] for i in idx], max_length).items()}
            with autocast:
                # The head runs from the first answer token on, like training's (methods.logprobs),
                # and the records' common prefix runs once (models.prefix).
                logits, labels = _shared_prefix_logits(model, batch)
            mask = labels != -100
            # Vocabulary-sized work only at labelled positions (prompts are often most of a record).
            token_lp, z = _token_stats(logits[mask], labels[mask], min_k_pp)
            bounds = [0, *mask.sum(-1).cumsum(0).tolist()]
            for row, i in enumerate(idx):
                out[i] = _row_stats(token_lp[bounds[row] : bounds[row + 1]],
                                    z[bounds[row] : bounds[row + 1]] if z is not None else None,
                                    split_record(tokenizer, records[i])[1], k)
    finally:
        model.train(was_training)
    return out


def _shared_prefix_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """answer_logits with the batch's common token prefix run once (models.prefix)."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    labelled = (labels != -100).any(0)
    first_label = int(labelled.float().argmax()) if bool(labelled.any()) else 0
    # The prefix stops before the first labelled position and leaves every row a token.
    limit = min(int(mask.sum(-1).min()), first_label) - 1
    shared = shared_length(model, ids[:, : max(limit, 0)].tolist(), max(limit, 0)) if right_padded(mask) else 0
    if not shared:
        return answer_logits(model, batch)
    cache = prefix_cache(model, ids[:1, :shared], ids.shape[0])
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


def _token_stats(logits: torch.Tensor, labels: torch.Tensor, spread: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
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
def score_shared(model, tokenizer, groups: list[tuple[dict, list[dict]]], *, batch_size: int = 16, k: float = 0.2,
                 max_length: int = 256, min_k_pp: bool = True) -> list[list[dict]]:
    """score_records for records that share a prompt, running each prompt once.

    `groups` holds (any record with the prompt, [records with that prompt, ...]), e.g. a
    question with its correct and wrong answers. The prompts go through the model once,
    left-padded, and their key/value cache is repeated for each record's completion, which
    continues at the right positions. The values equal score_records' (tested). Groups are
    batched in the order of their longest completion, so completions pad little.
    """
    from transformers import DynamicCache

    cache_arg = cache_name(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encode_ = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    all_prompts = [encode_(split_record(tokenizer, g[0])[0]) for g in groups]
    all_comps = [[encode_(split_record(tokenizer, r)[1]) for r in g[1]] for g in groups]
    order = sorted(range(len(groups)), key=lambda i: max(map(len, all_comps[i]), default=0))
    out: list[list[dict] | None] = [None] * len(groups)
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            prompts, comps = [all_prompts[i] for i in chunk], [all_comps[i] for i in chunk]
            # Layout [common prefix | left padding | rest of the prompt]: the prefix runs once (models.prefix).
            shared = shared_length(model, prompts, min(map(len, prompts)) - 1)
            lc_max = max(len(c) for cs in comps for c in cs)
            p_ids, p_mask = left_padded(prompts, shared, pad)
            p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
            if shared:
                cache = prefix_cache(model, p_ids[:1, :shared].to(device), len(chunk))
            else:
                cache = DynamicCache(config=model.config)
            first = model(input_ids=p_ids[:, shared:].to(device), attention_mask=p_mask.to(device),
                          position_ids=p_pos[:, shared:].to(device), use_cache=True, **{cache_arg: cache},
                          **({"logits_to_keep": 1} if forward_accepts(model, "logits_to_keep") else {})).logits[:, -1]
            owner = torch.tensor([i for i, cs in enumerate(comps) for _ in cs])
            flat = [c for cs in comps for c in cs]
            c_ids = torch.full((len(flat), lc_max), pad, dtype=torch.long)
            c_mask = torch.zeros_like(c_ids)
            for j, ids in enumerate(flat):
                c_ids[j, : len(ids)] = torch.tensor(ids)
                c_mask[j, : len(ids)] = 1
            cache.batch_select_indices(owner.to(device))
            mask = torch.cat([p_mask[owner], c_mask], dim=1)
            pos = p_mask[owner].sum(-1, keepdim=True) + torch.arange(lc_max)
            logits = model(input_ids=c_ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           use_cache=True, **{cache_arg: cache}).logits
            # A completion's first token is predicted by its prompt's last position, the rest by the
            # completion's own positions: per-token values go into one [completions, length] grid.
            c_ids, keep = c_ids.to(device), c_mask.bool().to(device)
            lp0, z0 = _token_stats(first[owner.to(device)], c_ids[:, 0], min_k_pp)
            lp_rest, z_rest = _token_stats(logits[:, :-1][keep[:, 1:]], c_ids[:, 1:][keep[:, 1:]], min_k_pp)
            grids = []
            for v0, rest in ((lp0, lp_rest), (z0, z_rest)):
                grid = torch.zeros(c_ids.shape, dtype=torch.float32, device=device)
                if v0 is not None:
                    grid[:, 0] = v0
                    grid[:, 1:][keep[:, 1:]] = rest
                grids.append(grid)
            lengths = keep.sum(-1).tolist()
            records = [r for i in chunk for r in groups[i][1]]
            rows = iter([_row_stats(grids[0][j, :n], grids[1][j, :n] if min_k_pp else None, split_record(tokenizer, r)[1], k)
                         for j, (r, n) in enumerate(zip(records, lengths))])
            for i in chunk:
                out[i] = [next(rows) for _ in groups[i][1]]
    finally:
        model.train(was_training)
    return out


def perplexity(scores: list[dict]) -> float | None:
    """Token-level perplexity over scored records (every token weighs the same)."""
    n = sum(s["n_tokens"] for s in scores)
    return math.exp(-sum(s["logprob"] for s in scores) / n) if n else None


def mean_nll(scores: list[dict]) -> float | None:
    n = sum(s["n_tokens"] for s in scores)
    return -sum(s["logprob"] for s in scores) / n if n else None
