"""Token log-probabilities and NLL over label-masked batches, checked on hand-made tensors."""

import math
from types import SimpleNamespace

import torch
from torch.testing import assert_close

from obliviate.models.logprobs import (
    answer_logits,
    label_logprobs,
    nll,
    sequence_logprob,
    token_logprobs,
    token_mean_nll,
)


def test_uniform_logits_give_log_quarter_per_counted_token():
    """Uniform logits over a vocab of 4: every counted token has log p = log(1/4) = -1.386294.

    labels [-100, 1, 2, -100] shift to [1, 2, -100]: two counted positions, the last masked
    (its log-prob is zeroed, its mask 0).
    """
    logits = torch.zeros(1, 4, 4)
    labels = torch.tensor([[-100, 1, 2, -100]])
    logp, mask = token_logprobs(logits, labels)
    assert_close(logp, torch.tensor([[math.log(0.25), math.log(0.25), 0.0]]))
    assert_close(mask, torch.tensor([[1.0, 1.0, 0.0]]))


def test_logits_at_t_score_the_label_at_t_plus_1():
    """Vocab 3. Position 0 logits [0, ln 2, 0] -> softmax [1/4, 1/2, 1/4]; label at 1 is token 1 -> ln(1/2).
    Position 1 logits [ln 3, 0, 0] -> softmax [3/5, 1/5, 1/5]; label at 2 is token 0 -> ln(3/5).
    The first label (2) is never scored and the last position's logits (100s) are never used.
    """
    logits = torch.tensor([[[0.0, math.log(2), 0.0], [math.log(3), 0.0, 0.0], [100.0, -100.0, 100.0]]])
    labels = torch.tensor([[2, 1, 0]])
    logp, mask = token_logprobs(logits, labels)
    assert_close(logp, torch.tensor([[math.log(0.5), math.log(0.6)]]))
    assert_close(mask, torch.tensor([[1.0, 1.0]]))


def test_masked_positions_do_not_change_the_result():
    """Changing logits at a position whose next label is -100 changes nothing."""
    labels = torch.tensor([[0, 3, -100, -100]])
    a = torch.zeros(1, 4, 4)
    b = a.clone()
    b[0, 1:] = torch.tensor([9.0, -9.0, 5.0, 1.0])  # positions 1 and 2 predict masked labels
    assert_close(token_logprobs(a, labels), token_logprobs(b, labels))


def test_bf16_logits_are_scored_in_float32():
    logp, _ = token_logprobs(torch.zeros(1, 2, 4, dtype=torch.bfloat16), torch.tensor([[0, 1]]))
    assert logp.dtype == torch.float32
    assert_close(logp, torch.tensor([[math.log(0.25)]]))


def test_token_mean_nll_weighs_every_token_the_same():
    """Sums [-2, -4] over [1, 3] tokens: 6 / 4 = 1.5 (not the mean of per-sequence means, 5/3)."""
    assert_close(token_mean_nll(torch.tensor([-2.0, -4.0]), torch.tensor([1.0, 3.0])), torch.tensor(1.5))


def test_token_mean_nll_of_a_batch_without_answer_tokens_is_zero_not_nan():
    """0 counted tokens: the denominator is clamped to 1, so -0 / 1 = 0."""
    out = token_mean_nll(torch.zeros(2), torch.zeros(2))
    assert torch.isfinite(out)
    assert_close(out, torch.tensor(0.0))


def _fixed_model(logits):
    return lambda input_ids, attention_mask=None: SimpleNamespace(logits=logits)


def test_sequence_logprob_and_nll_on_uniform_logits():
    """Uniform over 4; row 0 counts 2 tokens, row 1 counts 1.
    Sums: [2 ln(1/4), ln(1/4)], lengths [2, 1]; NLL = 3 ln 4 / 3 = ln 4 = 1.386294.
    """
    labels = torch.tensor([[-100, 1, 2], [-100, 3, -100]])
    sub = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3), "labels": labels}
    model = _fixed_model(torch.zeros(2, 3, 4))
    logp, n = sequence_logprob(model, sub)
    assert_close(logp, torch.tensor([2 * math.log(0.25), math.log(0.25)]))
    assert_close(n, torch.tensor([2.0, 1.0]))
    assert_close(nll(model, sub), torch.tensor(math.log(4)))


def test_kl_to_ref_matches_a_hand_computation():
    """KL(p_ref || p) at every labelled position, averaged; zero for the same model."""
    import torch.nn.functional as F

    from obliviate.models.logprobs import kl_to_ref

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": self.logits})()

    torch.manual_seed(0)
    a, b = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    sub = {
        "input_ids": torch.zeros(1, 3, dtype=torch.long),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "labels": torch.tensor([[-100, 2, -100]]),
    }  # only position 0's prediction counts
    p_ref, logp = F.log_softmax(b[0, 0], -1), F.log_softmax(a[0, 0], -1)
    expected = (p_ref.exp() * (p_ref - logp)).sum()
    torch.testing.assert_close(kl_to_ref(Fixed(a), Fixed(b), sub), expected)
    torch.testing.assert_close(kl_to_ref(Fixed(a), Fixed(a), sub), torch.tensor(0.0), atol=1e-6, rtol=0)


def _full_width_logprob(model, sub):
    """The plain computation: full logits with the attention mask, shifted, log_softmax and gather."""
    logits = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits[:, :-1].float()
    labels = sub["labels"][:, 1:]
    mask = labels != -100
    logp = torch.gather(torch.log_softmax(logits, -1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def test_answer_only_head_and_dropped_mask_change_no_value_or_gradient(tiny_lm, forget_records):
    """sequence_logprob runs the head from the first answer token on and drops the mask of a
    right-padded batch; values and gradients equal the plain full-width computation."""
    from obliviate.models.prompts import encode

    model = tiny_lm.model.train()
    sub = encode(tiny_lm.tokenizer, forget_records[:3], 64)
    assert sub["attention_mask"].min() == 0  # the batch is padded
    fast, _ = sequence_logprob(model, sub)
    fast.sum().backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    slow = _full_width_logprob(model, sub)
    slow.sum().backward()
    assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, p in zip(fast_grads, model.parameters()):
        assert_close(a, p.grad, atol=1e-5, rtol=1e-4)
    model.zero_grad()


def test_a_left_padded_batch_keeps_its_mask(tiny_lm, forget_records):
    """Left padding is not covered by causal attention, so the mask is passed and values still match."""
    from obliviate.models.prompts import encode

    model = tiny_lm.model.eval()
    sub = encode(tiny_lm.tokenizer, forget_records[:3], 64)
    n = sub["attention_mask"].sum(-1)
    width = sub["input_ids"].shape[1]
    left = {k: torch.stack([torch.roll(row, int(width - m)) for row, m in zip(v, n)]) for k, v in sub.items()}
    with torch.no_grad():
        assert_close(sequence_logprob(model, left)[0], _full_width_logprob(model, sub), atol=1e-4, rtol=1e-4)


def test_label_logprobs_equal_log_softmax_then_gather():
    """The docstring's naive expression: log_softmax in fp32, gather each label, zero where the label is -100."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    labels = torch.tensor([[4, -100, 0], [6, 2, -100]])
    mask = labels != -100
    naive = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
    for dtype in (torch.float32, torch.bfloat16):
        logp, got_mask = label_logprobs(logits.to(dtype), labels)
        expected = (
            naive
            if dtype == torch.float32
            else (
                torch.log_softmax(logits.to(dtype).float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
                * mask
            )
        )
        assert logp.dtype == torch.float32
        assert_close(logp, expected)
        assert_close(got_mask, mask.float())


def test_answer_logits_equal_the_last_positions_of_the_full_width_logits(tiny_lm, forget_records):
    """The docstring's naive expression: full logits with the mask, shifted, cut to the last K positions; no
    labelled position lies before them."""
    from obliviate.models.prompts import encode

    model = tiny_lm.model.eval()
    sub = encode(tiny_lm.tokenizer, forget_records[:3], 64)
    assert sub["attention_mask"].min() == 0  # padded, so the mask is dropped on the fast path
    with torch.no_grad():
        logits, labels = answer_logits(model, sub)
        full = model(input_ids=sub["input_ids"], attention_mask=sub["attention_mask"]).logits[:, :-1]
    k = labels.shape[1]
    assert k < sub["labels"].shape[1] - 1  # the prompt was cut off
    assert torch.equal(labels, sub["labels"][:, 1:][:, -k:])
    assert (sub["labels"][:, 1:][:, :-k] == -100).all()
    assert_close(logits, full[:, -k:], atol=1e-5, rtol=1e-5)
