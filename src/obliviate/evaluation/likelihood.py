"""One forward pass per batch for every likelihood metric: NLL, perplexity and the membership scores.

For each record (question + answer, prompt + completion, or raw text) the loss is taken
on the completion tokens only, as in training. From a single pass we keep the summed
log-probability, the token count, Min-K% (mean of the lowest k% token log-probs) and
Min-K%++ (the same over token log-probs standardized by the mean and spread of log p
under the model's own next-token distribution).
"""

from __future__ import annotations

import contextlib
import math
import zlib

import torch
import torch.nn.functional as F

from obliviate.methods.logprobs import answer_logits
from obliviate.models.prompts import encode, split_record


def _lowest_mean(values: torch.Tensor, k: float) -> float:
    n = max(1, math.ceil(k * values.numel()))
    return torch.topk(values, n, largest=False).values.mean().item() if values.numel() else float("nan")


@torch.inference_mode()
def score_records(model, tokenizer, records: list[dict], *, batch_size: int = 16, max_length: int = 256,
                  k: float = 0.2, bf16: bool = False) -> list[dict]:
    """Per record: {"logprob", "n_tokens", "nll", "min_k", "min_k_pp", "zlib_bytes"} (log-probs in nats).

    `bf16` runs the pass under bf16 autocast (CPU or GPU). Records are batched in
    length order, so padding is small; the result is in the input order.
    """
    order = sorted(range(len(records)), key=lambda i: sum(map(len, split_record(tokenizer, records[i]))))
    out: list[dict | None] = [None] * len(records)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = {k_: v.to(device) for k_, v in encode(tokenizer, [records[i] for i in idx], max_length).items()}
            with autocast:
                # The head runs from the first answer token on, like training's (methods.logprobs).
                logits, labels = answer_logits(model, batch)
            mask = labels != -100
            # Vocabulary-sized work only at labelled positions (prompts are often most of a record).
            token_lp, z = _token_stats(logits[mask], labels[mask])
            bounds = [0, *mask.sum(-1).cumsum(0).tolist()]
            for row, i in enumerate(idx):
                out[i] = _row_stats(token_lp[bounds[row] : bounds[row + 1]], z[bounds[row] : bounds[row + 1]],
                                    split_record(tokenizer, records[i])[1], k)
    finally:
        model.train(was_training)
    return out


def _row_stats(token_lp: torch.Tensor, z: torch.Tensor, completion: str, k: float) -> dict:
    n = token_lp.numel()
    return {
        "logprob": token_lp.sum().item(),
        "n_tokens": n,
        "nll": -token_lp.sum().item() / max(n, 1),
        "min_k": _lowest_mean(token_lp, k),
        "min_k_pp": _lowest_mean(z, k),
        "zlib_bytes": len(zlib.compress(completion.encode("utf-8"))),
    }


def _token_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and Min-K%++ z-score of each label token, from the logits that predict it ([N, V], [N])."""
    logp = F.log_softmax(logits.float(), dim=-1)
    token_lp = logp.gather(1, labels.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    mu = (probs * logp).sum(-1)
    sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
    return token_lp, (token_lp - mu) / sigma


@torch.inference_mode()
def score_shared(model, tokenizer, groups: list[tuple[dict, list[dict]]], *, batch_size: int = 16, k: float = 0.2,
                 max_length: int = 256) -> list[list[dict]]:
    """score_records for records that share a prompt, running each prompt once.

    `groups` holds (any record with the prompt, [records with that prompt, ...]), e.g. a
    question with its correct and wrong answers. The prompts go through the model once,
    left-padded, and their key/value cache is repeated for each record's completion, which
    continues at the right positions. The values equal score_records' (tested).
    """
    import inspect

    from transformers import DynamicCache

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model forwards **kwargs
    cache_arg = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[dict]] = []
    try:
        for start in range(0, len(groups), batch_size):
            chunk = groups[start : start + batch_size]
            prompts = [tokenizer(split_record(tokenizer, g[0])[0], add_special_tokens=False)["input_ids"] for g in chunk]
            comps = [[tokenizer(split_record(tokenizer, r)[1], add_special_tokens=False)["input_ids"] for r in g[1]] for g in chunk]
            lp_max, lc_max = max(map(len, prompts)), max(len(c) for cs in comps for c in cs)
            p_ids = torch.full((len(chunk), lp_max), pad, dtype=torch.long)
            p_mask = torch.zeros_like(p_ids)
            for i, ids in enumerate(prompts):
                p_ids[i, lp_max - len(ids) :] = torch.tensor(ids)
                p_mask[i, lp_max - len(ids) :] = 1
            p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache()
            first = model(input_ids=p_ids.to(device), attention_mask=p_mask.to(device), position_ids=p_pos.to(device),
                          use_cache=True, **{cache_arg: cache}).logits[:, -1]
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
            pred = torch.cat([first[owner.to(device)].unsqueeze(1), logits[:, :-1]], dim=1)  # what predicts each completion token
            keep = c_mask.bool().to(device)
            token_lp, z = _token_stats(pred[keep], c_ids.to(device)[keep])
            bounds = [0, *keep.sum(-1).cumsum(0).tolist()]
            rows = [_row_stats(token_lp[bounds[j] : bounds[j + 1]], z[bounds[j] : bounds[j + 1]],
                               split_record(tokenizer, r)[1], k) for j, r in enumerate(r for g in chunk for r in g[1])]
            it = iter(rows)
            out += [[next(it) for _ in g[1]] for g in chunk]
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
