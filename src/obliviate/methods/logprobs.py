"""Shared math: token and sequence log-probabilities and NLL over label-masked batches.

Labels use -100 for positions that carry no loss (prompt, padding). Shifting is
done here once: logits at position t predict the token at t+1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token, and a 0/1 mask of the positions that count. Both [B, T-1]."""
    logits = logits[:, :-1, :].float()
    labels = labels[:, 1:]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask.float()


def sequence_logprob(model, sub: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log p(answer | prompt) per sequence, and answer lengths. Both [B]."""
    logits = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits
    logp, mask = token_logprobs(logits, sub["labels"])
    return logp.sum(-1), mask.sum(-1)


def mean_nll(logp_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Token-averaged NLL over the whole batch (every answer token weighs the same)."""
    return -logp_sum.sum() / n_tokens.sum().clamp(min=1)


def nll(model, sub: dict[str, torch.Tensor]) -> torch.Tensor:
    return mean_nll(*sequence_logprob(model, sub))


def kl_to_ref(model, ref, sub: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-level KL(ref || model) of the next-token distributions, averaged over labelled positions.

    KL(p_ref || p_theta) = sum_v p_ref(v) * (log p_ref(v) - log p_theta(v)); the reference's
    forward pass carries no gradient.
    """
    logits = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits[:, :-1].float()
    with torch.no_grad():
        ref_logits = ref(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits[:, :-1].float()
    mask = (sub["labels"][:, 1:] != -100).float()
    ref_logp = F.log_softmax(ref_logits, dim=-1)
    kl = (ref_logp.exp() * (ref_logp - F.log_softmax(logits, dim=-1))).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def plus_retain(model, batch: dict, loss: torch.Tensor, logs: dict[str, float], alpha: float) -> torch.Tensor:
    """`loss + alpha * NLL(retain)`, logging the retain NLL; `alpha` 0 leaves `loss` as is."""
    if not alpha:
        return loss
    retain = nll(model, batch["retain"])
    logs["retain_nll"] = retain.item()
    return loss + alpha * retain
