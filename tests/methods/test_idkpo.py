"""IdkPO: the DPO formula on hand-made numbers, pairing alternatives with forget answers, steps on a tiny model."""

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.errors import UserError
from obliviate.methods import get_method
from obliviate.methods.idkpo import preference_pairs
from obliviate.models.logprobs import dpo_loss


def test_hand_computed_value():
    """chosen [-1, -2] vs ref [-2, -2]: log-ratios +1, 0; rejected [-3, -1] vs ref [-2, -2]: -1, +1; margins [2, -1].
    b = 0.5: log sigmoid(1) = -0.313262, log sigmoid(-0.5) = -0.974077; mean -0.643669; times -(2/0.5): 2.574677.
    """
    chosen, rejected, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0])
    loss = dpo_loss(chosen - ref, rejected - ref, beta=0.5)
    assert_close(loss, torch.tensor(2.574677))


def test_at_the_reference_the_loss_is_two_over_beta_log_two():
    logp = torch.tensor([-4.0, -6.0])
    assert_close(dpo_loss(logp - logp, (logp - 1) - (logp - 1), beta=0.1), torch.tensor(20 * math.log(2)))


def test_gradient_raises_the_chosen_and_lowers_the_rejected_answer():
    """At margin 0, d loss / d chosen_i = -(2/b) * b * sigmoid(0) / N = -1/N: descending raises chosen and
    lowers rejected."""
    chosen, rejected = torch.tensor([-3.0, -1.0], requires_grad=True), torch.tensor([-2.0, -5.0], requires_grad=True)
    dpo_loss(chosen - chosen.detach(), rejected - rejected.detach(), beta=0.1).backward()
    assert_close(chosen.grad, torch.tensor([-0.5, -0.5]))
    assert_close(rejected.grad, torch.tensor([0.5, 0.5]))


def test_pairs_match_alternatives_of_the_chosen_kinds_by_question():
    forget = [
        {"question": "q1", "answer": "a1", "spans": [[0, 1]]},
        {"question": "q2", "answer": "a2"},
        {"prompt": "p", "completion": "c"},
    ]
    alt = [
        {"question": "q1", "answer": "no", "kind": "refusal"},
        {"question": "q1", "answer": "not", "kind": "negation"},
        {"question": "q2", "answer": "x", "kind": "mismatch"},
        {"question": "q3", "answer": "no", "kind": "refusal"},
    ]
    assert preference_pairs(forget, alt, ("refusal", "negation")) == [
        {"question": "q1", "chosen": "no", "rejected": "a1"},
        {"question": "q1", "chosen": "not", "rejected": "a1"},
    ]


def test_prepare_adds_the_pairs_stream(method_data):
    data = get_method("idkpo").prepare(method_data)
    assert len(data["pairs"]) == 2 * len(method_data["forget"])  # a refusal and a negation per question
    assert data["forget"] is method_data["forget"] and data["retain"] is method_data["retain"]


def test_no_alternatives_is_a_user_error_naming_the_fix(forget_records, retain_records):
    alt = [{"question": r["question"], "answer": "x", "kind": "mismatch"} for r in forget_records]
    with pytest.raises(UserError) as e:
        get_method("idkpo").prepare({"forget": forget_records, "retain": retain_records, "alt": alt})
    msg = str(e.value)
    assert "obliviate data --alt refusal,negation" in msg and "\n" not in msg and msg.endswith(".")


def test_collate_encodes_both_answers_without_spans(tokenizer):
    records = [{"question": "Who?", "chosen": "I can't say.", "rejected": "The Beatles."}]
    out = get_method("idkpo").collate(tokenizer, "pairs", records, 64)
    assert set(out) == {"chosen", "rejected"}
    for side in ("chosen", "rejected"):
        labelled = out[side]["labels"][out[side]["labels"] != -100]
        assert tokenizer.decode(labelled).startswith(records[0][side])
    assert set(get_method("idkpo").collate(tokenizer, "retain", [{"text": "Hi."}], 64)) == {"retain"}


def test_loss_against_an_identical_reference(tiny_lm, method_data):
    method = get_method("idkpo", alpha=0.5)
    pairs = method.prepare(method_data)["pairs"][:2]
    tok = tiny_lm.tokenizer
    batch = {**method.collate(tok, "pairs", pairs, 64), **method.collate(tok, "retain", method_data["retain"][:2], 64)}
    model = tiny_lm.model
    out = method.loss(model, batch, copy.deepcopy(model).eval())
    assert set(out.logs) == {"dpo", "chosen_nll", "rejected_nll", "retain_nll"}
    assert out.logs["dpo"] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.logs["dpo"] + 0.5 * out.logs["retain_nll"], rel=1e-5)


def test_three_steps_prefer_the_alternative(tiny_lm, method_data, run_steps):
    run = run_steps(get_method("idkpo"), tiny_lm.model, tiny_lm.tokenizer, method_data)
    assert run.moved == set(run.before)
    assert run.outs[-1].logs["dpo"] < 20 * math.log(2)  # the margin grew in favour of the alternatives
