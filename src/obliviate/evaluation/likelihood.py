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
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            mask = labels != -100
            # Vocabulary-sized work only at labelled positions (prompts are often most of a record).
            logp = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
            token_lp = logp.gather(1, labels[mask].unsqueeze(-1)).squeeze(-1)
            probs = logp.exp()
            mu = (probs * logp).sum(-1)
            sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
            z = (token_lp - mu) / sigma
            bounds = [0, *mask.sum(-1).cumsum(0).tolist()]
            for row, i in enumerate(idx):
                lp, zr = token_lp[bounds[row] : bounds[row + 1]], z[bounds[row] : bounds[row + 1]]
                n = lp.numel()
                completion = split_record(tokenizer, records[i])[1]
                out[i] = {
                    "logprob": lp.sum().item(),
                    "n_tokens": n,
                    "nll": -lp.sum().item() / max(n, 1),
                    "min_k": _lowest_mean(lp, k),
                    "min_k_pp": _lowest_mean(zr, k),
                    "zlib_bytes": len(zlib.compress(completion.encode("utf-8"))),
                }
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
