"""WHP: generic labels and loss on hand-made logits, the reinforced model it asks for, anchored answers, a few steps."""

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.engine import TrainConfig, fine_tune, train
from obliviate.methods import get_method
from obliviate.methods.whp import generic_logits, whp_loss
from obliviate.models.logprobs import nll
from obliviate.models.prompts import encode


def test_generic_logits_subtract_what_the_reinforced_model_boosts():
    """ref [1, 2, 0], reinforced [1, 3, -1]: ReLU(diff) = [0, 1, 0]; alpha 5: [1, 2 - 5, 0] = [1, -3, 0].
    The base's favourite token (1) was the one reinforcement boosted, so the generic choice is token 0."""
    out = generic_logits(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([1.0, 3.0, -1.0]), alpha=5.0)
    assert_close(out, torch.tensor([1.0, -3.0, 0.0]))


def test_hand_computed_loss():
    """Labels [-100, 1, -100]: only position 0 counts. Generic label 0 (as above); uniform student logits: CE = ln 3.
    The answer's own token there is 1, so the share relabelled is 1. Position 1's logits do not matter."""
    ref = torch.tensor([[[1.0, 2.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    reinforced = torch.tensor([[[1.0, 3.0, -1.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]])
    student = torch.zeros(1, 3, 3)
    student[0, 1] = torch.tensor([4.0, -4.0, 1.0])
    loss, changed = whp_loss(student, ref, reinforced, torch.tensor([[-100, 1, -100]]), alpha=5.0)
    assert_close(loss, torch.tensor(math.log(3)))
    assert_close(changed, torch.tensor(1.0))


def test_without_reinforcement_the_label_is_the_base_prediction():
    ref = torch.tensor([[[0.0, 3.0, 1.0], [0.0, 0.0, 0.0]]])
    student = torch.tensor([[[0.0, math.log(2), 0.0], [0.0, 0.0, 0.0]]])  # softmax [1/4, 1/2, 1/4]
    loss, changed = whp_loss(student, ref, ref.clone(), torch.tensor([[-100, 1]]), alpha=5.0)
    assert_close(loss, torch.tensor(math.log(2)))
    assert_close(changed, torch.tensor(0.0))


def test_prepare_attaches_anchored_answers_by_question(method_data):
    data = get_method("whp").prepare(method_data)
    assert all(r["anchored"] == "A band from a northern city." for r in data["forget"])
    assert "anchored" not in method_data["forget"][0]  # the caller's records are not modified
    assert "anchored" not in get_method("whp", anchored_weight=0.0).prepare(method_data)["forget"][0]
    no_alt = get_method("whp").prepare({**method_data, "alt": []})
    assert not any("anchored" in r for r in no_alt["forget"])


def test_collate_adds_an_anchored_sub_batch_only_when_there_are_anchored_answers(tokenizer):
    method = get_method("whp")
    plain = {"question": "Who?", "answer": "The Beatles.", "spans": [[4, 11]]}
    out = method.collate(tokenizer, "forget", [plain], 64)
    assert set(out) == {"forget"}
    assert tokenizer.decode(out["forget"]["labels"][out["forget"]["labels"] != -100]).startswith(
        "The Beatles."
    )  # spans off
    out = method.collate(tokenizer, "forget", [plain, {**plain, "anchored": "A band."}], 64)
    assert set(out) == {"forget", "anchored"} and out["anchored"]["input_ids"].shape[0] == 1


def test_the_reinforced_model_is_asked_for_on_whole_forget_answers(method_data):
    """One fine-tune, named "reinforced", on the forget records with their spans off, with the reinforce settings."""
    method = get_method("whp", reinforce_steps=7, reinforce_lr=1e-3, reinforce_batch_size=3, seed=5)
    forget = [{**r, "spans": [[0, 3]]} for r in method_data["forget"]]
    data = method.prepare({**method_data, "forget": forget})
    (spec,) = method.fine_tunes(data)
    assert (spec.name, spec.steps, spec.lr, spec.batch_size, spec.seed) == ("reinforced", 7, 1e-3, 3, 5)
    assert spec.records == [{k: v for k, v in r.items() if k != "spans"} for r in data["forget"]]
    assert "spans" in data["forget"][0]  # the method's own records keep theirs


def test_the_engine_reinforces_a_frozen_copy_that_fits_the_forget_answers_better(tiny_lm, forget_records):
    """`fine_tune` (what the engine runs for each asked-for model) leaves the model as it was."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = get_method("whp", reinforce_steps=3, reinforce_lr=1e-3).fine_tunes({"forget": forget_records})[0]
    reinforced = fine_tune(model, tok, spec, TrainConfig(bf16=False, checkpoint_every=0))
    assert reinforced is not model and not reinforced.training
    assert not any(p.requires_grad for p in reinforced.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    batch = encode(tok, forget_records)
    with torch.no_grad():
        assert nll(reinforced, batch) < nll(model, batch)


def test_train_hands_the_reinforced_model_to_setup(tiny_lm, method_data):
    method = get_method("whp", reinforce_steps=2, reinforce_lr=1e-3)
    start = copy.deepcopy(tiny_lm.model)
    cfg = TrainConfig(steps=1, lr=1e-3, batch_size=2, bf16=False, checkpoint_every=0)
    train(tiny_lm.model, tiny_lm.tokenizer, method, method_data, cfg, progress=False)
    reinforced = method.reinforced
    assert reinforced is not tiny_lm.model and not reinforced.training
    assert not any(p.requires_grad for p in reinforced.parameters())
    moved = [n for n, p in reinforced.named_parameters() if not torch.equal(p, dict(start.named_parameters())[n])]
    assert moved  # trained away from the starting weights


def test_loss_sums_the_logged_terms(tiny_lm, method_data):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    method = get_method("whp", anchored_weight=2.0, retain_weight=0.5)
    data = method.prepare(method_data)
    method.reinforced = copy.deepcopy(model).eval()
    batch = {
        **method.collate(tok, "forget", data["forget"][:2], 64),
        **method.collate(tok, "retain", data["retain"][:2], 64),
    }
    out = method.loss(model, batch, copy.deepcopy(model).eval())
    assert set(out.logs) == {"whp_ce", "relabelled", "anchored_nll", "retain_nll"}
    expected = out.logs["whp_ce"] + 2.0 * out.logs["anchored_nll"] + 0.5 * out.logs["retain_nll"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_three_steps(tiny_lm, method_data, run_steps):
    run = run_steps(
        get_method("whp", reinforce_steps=2, reinforce_lr=1e-3), tiny_lm.model, tiny_lm.tokenizer, method_data
    )
    assert run.moved == set(run.before)
    assert all("anchored_nll" in out.logs for out in run.outs)
