"""Shared math: token and sequence log-probabilities and NLL over label-masked batches.

Labels use -100 for positions that carry no loss (prompt, padding). Shifting is
done here once: logits at position t predict the token at t+1.

Training forwards go through `answer_logits`, which does two things that change no
number but cost less (docs/PERFORMANCE.md): only the positions from the first answer
token on go through the output head (the vocabulary-sized product; prompts are often
most of a record), and a right-padded batch is run without its attention mask, since
causal attention never lets a token see the padding to its right (PyTorch's attention
then takes its causal fast path).
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F


@functools.cache
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def forward_accepts(model, name: str) -> bool:
    """Whether the model's forward takes keyword `name` (a peft model passes its kwargs to the base model)."""
    inner = model if isinstance(model, torch.nn.Module) else model.model  # a thin wrapper that holds `.model`
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return name in _forward_params(type(inner))


def right_padded(mask: torch.Tensor) -> bool:
    """True when every row of a 0/1 attention mask is ones followed by zeros."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def answer_logits(model, sub: dict[str, torch.Tensor], **forward_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each labelled token and those labels, aligned: [B, K, V] and [B, K].

    Must equal the last K positions of the naive, full-width expression:

        logits = model(input_ids, attention_mask=attention_mask).logits[:, :-1][:, -K:]
        labels = labels[:, 1:][:, -K:]

    K covers every position from the batch's first labelled token to the end; positions
    without a loss keep the label -100. It is cheaper because the head runs on those K + 1
    positions only and a right-padded batch goes without its mask (see the module docstring).
    `forward_kwargs` go to the model (a key/value cache).
    """
    labels = sub["labels"]
    width = labels.shape[1]
    labelled = (labels != -100).any(0)
    first = int(labelled.float().argmax()) if bool(labelled.any()) else width - 1
    keep = width - max(first - 1, 0)
    inputs = {"input_ids": sub["input_ids"], **forward_kwargs}
    mask = sub.get("attention_mask")
    if mask is not None and not right_padded(mask):
        inputs["attention_mask"] = mask
    if keep < width and forward_accepts(model, "logits_to_keep"):
        logits = model(**inputs, logits_to_keep=keep).logits
    else:
        logits = model(**inputs).logits[:, width - keep :]
    return logits[:, :-1], labels[:, width - keep + 1 :]


def label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each position of aligned logits [B, K, V] and labels [B, K] (0 where the
    label is -100), and the 0/1 mask of positions that count.

    Must equal the naive expression, in fp32 whatever the logits' dtype:

        mask = (labels != -100)
        log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask

    Cross-entropy computes the same without keeping the [B, K, V] log-softmax for the backward pass.
    """
    logp = -F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
    return logp.view(labels.shape), (labels != -100).float()


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token from full-width logits, and the mask of positions that count.
    Both [B, T-1]."""
    return label_logprobs(logits[:, :-1], labels[:, 1:])


def sequence_logprob(model, sub: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log p(answer | prompt) per sequence, and answer lengths. Both [B]."""
    logp, mask = label_logprobs(*answer_logits(model, sub))
    return logp.sum(-1), mask.sum(-1)


def ref_logprob(ref, sub: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference model's summed answer log-prob per sequence: precomputed by the engine
    (sub["ref_logprob"], see Method.ref_logprob_subs) or computed now, without gradient."""
    if "ref_logprob" in sub:
        return sub["ref_logprob"]
    with torch.no_grad():
        return sequence_logprob(ref, sub)[0]


def token_mean_nll(logp_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """-sum(logp_sum) / sum(n_tokens): the NLL per answer token over the whole batch (every answer token
    weighs the same, not every sequence); 0 for a batch without answer tokens."""
    return -logp_sum.sum() / n_tokens.sum().clamp(min=1)


def nll(model, sub: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's token-mean NLL of the batch's answers (`token_mean_nll` of `sequence_logprob`)."""
    return token_mean_nll(*sequence_logprob(model, sub))


def dpo_loss(chosen_logratio: torch.Tensor | None, rejected_logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2/beta) * mean log sigmoid(beta * (chosen_logratio - rejected_logratio)).

    Each log-ratio is log pi(y|x) - log pi_ref(y|x) over sequence-summed log-probs; y_w is the
    chosen answer, y_l the rejected one (Rafailov et al. 2023, scaled by 2/beta as in
    open-unlearning). With no chosen side (None) this is NPO's loss,
    -(2/beta) * mean log sigmoid(-beta * rejected_logratio) (Zhang et al. 2024).
    """
    margin = -rejected_logratio if chosen_logratio is None else chosen_logratio - rejected_logratio
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def kl_to_ref(model, ref, sub: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-level KL(ref || model) of the next-token distributions, averaged over labelled positions.

    KL(p_ref || p_theta) = sum_v p_ref(v) * (log p_ref(v) - log p_theta(v)); the reference's
    forward pass carries no gradient.
    """
    logits, labels = answer_logits(model, sub)
    with torch.no_grad():
        ref_logits, _ = answer_logits(ref, sub)
    mask = (labels != -100).float()
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - F.log_softmax(logits.float(), dim=-1))).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def plus_retain(model, batch: dict, loss: torch.Tensor, logs: dict[str, float], alpha: float) -> torch.Tensor:
    """`loss + alpha * NLL(retain)`, logging the retain NLL; `alpha` 0 leaves `loss` as is."""
    if not alpha:
        return loss
    retain = nll(model, batch["retain"])
    logs["retain_nll"] = retain.item()
    return loss + alpha * retain
