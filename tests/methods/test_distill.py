"""Distill (UNDIAL): adjusted teacher targets and the loss on hand-made logits, and a few steps on a tiny model."""

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.methods import get_method
from obliviate.methods.distill import adjusted_targets, undial_loss
from obliviate.models.logprobs import kl_to_ref, nll
from obliviate.models.prompts import encode


def test_adjusted_targets_lower_only_the_label_token():
    """Teacher logits [0, 0, ln 2] (softmax [1/4, 1/4, 1/2]); label 2 lowered by ln 2 gives [0, 0, 0]: uniform 1/3.
    A label of -100 leaves the teacher's distribution as it is."""
    ref = torch.tensor([[0.0, 0.0, math.log(2)], [0.0, 0.0, math.log(2)]])
    out = adjusted_targets(ref, torch.tensor([2, -100]), beta=math.log(2))
    assert_close(out, torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]]))


def test_hand_computed_value():
    """Labels [-100, 2, -100]: only position 0 (predicting label 2) counts.
    Target as above: uniform 1/3. Student logits [ln 2, 0, 0]: softmax [1/2, 1/4, 1/4].
    CE = -(1/3)(ln 1/2 + 2 ln 1/4) = (5/3) ln 2 = 1.155245.
    Position 1's logits (predicting a masked label) do not matter.
    """
    ref = torch.tensor([[[0.0, 0.0, math.log(2)], [9.0, 1.0, 2.0], [0.0, 0.0, 0.0]]])
    student = torch.tensor([[[math.log(2), 0.0, 0.0], [-5.0, 4.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 2, -100]])
    aligned = lambda s: undial_loss(s[:, :-1], ref[:, :-1], labels[:, 1:], beta=math.log(2))  # noqa: E731
    assert_close(aligned(student), torch.tensor(5 / 3 * math.log(2)))
    student[0, 1] = torch.tensor([1.0, 2.0, 3.0])
    assert_close(aligned(student), torch.tensor(1.155245))


def test_gradient_is_student_minus_target():
    """d CE / d z = softmax(z) - target: zero once the student matches the adjusted teacher."""
    ref = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 1]])
    target = adjusted_targets(ref[:, :1], labels[:, 1:], beta=10.0)
    student = target.log().clone().requires_grad_(True)
    undial_loss(student, ref[:, :1], labels[:, 1:], beta=10.0).backward()
    assert_close(student.grad, torch.zeros(1, 1, 3), atol=1e-6, rtol=0)
    assert target[0, 0, 1] < 1e-4  # the label's probability is pushed far down


def test_method_sums_the_terms(tiny_lm, forget_records, retain_records):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    ref = copy.deepcopy(model).eval()
    batch = {"forget": encode(tok, forget_records), "retain": encode(tok, retain_records)}
    out = get_method("distill", alpha=2.0).loss(model, batch, ref)
    assert set(out.logs) == {"undial", "forget_nll", "retain_kl"}
    assert abs(out.logs["retain_kl"]) < 1e-5  # student == teacher
    with torch.no_grad():
        kl = kl_to_ref(model, ref, batch["retain"])
    assert out.loss.item() == pytest.approx(out.logs["undial"] + 2.0 * kl.item(), rel=1e-5)


def test_three_steps_make_the_forget_answers_less_likely(tiny_lm, method_data, run_steps):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    forget = encode(tok, method_data["forget"])
    with torch.no_grad():
        before = nll(model, forget).item()
    run = run_steps(get_method("distill"), model, tok, method_data)
    assert run.moved == set(run.before)
    with torch.no_grad():
        assert nll(model, forget).item() > before
