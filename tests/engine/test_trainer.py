"""The training loop: a few steps of every method, the divergence guard, determinism, logging."""

import json
import math

import pytest
import torch

from obliviate.engine import TrainConfig, TrainResult, train
from obliviate.methods import METHODS, LossOutput, get_method
from obliviate.methods.ga import GradientAscent


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 3, "lr": 1e-3, "batch_size": 2, "bf16": False, **kw})


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def data(forget_records, retain_records):
    alt = [{"question": r["question"], "answer": a, "kind": k} for r in forget_records
           for k, a in (("negation", "I don't know of them."), ("mismatch", "Paris is in France."), ("refusal", "I can't say."))]
    return {"forget": forget_records, "retain": retain_records, "alt": alt}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_three_steps_of_every_method(name, tiny_lm, data):
    model, tokenizer = tiny_lm.model, tiny_lm.tokenizer
    method = get_method(name)
    before = _params(model)
    seen = []
    loss_fn = method.loss

    def spy(m, batch, ref=None):
        seen.append((m, ref, set(batch)))
        return loss_fn(m, batch, ref)

    method.loss = spy
    result = train(model, tokenizer, method, data, _cfg(), progress=False)

    assert isinstance(result, TrainResult)
    assert result.steps_done == 3 and result.diverged_at is None
    assert math.isfinite(result.last_logs["loss"])
    assert all(math.isfinite(v) for v in result.last_logs.values())
    assert not model.training  # handed back in eval mode

    after = dict(model.named_parameters())
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k].detach())]
    assert not unchanged, f"{name}: parameters that did not move: {unchanged}"

    assert len(seen) == 3 and all(batches == set(method.batches) for _, _, batches in seen)
    refs = {id(ref) for _, ref, _ in seen}
    if method.needs_ref_model:
        ref = seen[0][1]
        assert len(refs) == 1 and ref is not None and ref is not model
        assert not any(p.requires_grad for p in ref.parameters())
        # The reference is the frozen start point: still equal to the weights before training.
        for k, v in ref.named_parameters():
            assert torch.equal(v, before[k]), f"{name}: reference weight {k} moved"
    else:
        assert refs == {id(None)}


def test_gradient_accumulation(tiny_lm, data):
    before = _params(tiny_lm.model)
    result = train(tiny_lm.model, tiny_lm.tokenizer, get_method("gd"), data, _cfg(steps=2, grad_accum=2), progress=False)
    assert result.steps_done == 2 and math.isfinite(result.last_logs["loss"])
    after = dict(tiny_lm.model.named_parameters())
    assert not [k for k, v in before.items() if torch.equal(v, after[k].detach())]


def test_missing_sub_batch_is_refused(tiny_lm, forget_records):
    with pytest.raises(ValueError, match="retain"):
        train(tiny_lm.model, tiny_lm.tokenizer, get_method("gd"), {"forget": forget_records, "retain": []}, _cfg(), progress=False)


def test_same_seed_same_weights(tiny_model_dir, data):
    from obliviate.models.loading import load_model

    runs = []
    for _ in range(2):
        lm = load_model(str(tiny_model_dir))
        train(lm.model, lm.tokenizer, get_method("gd"), data, _cfg(steps=2), progress=False)
        runs.append(_state(lm.model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_log_file_gets_one_json_line_per_step(tiny_lm, data, tmp_path):
    log = tmp_path / "train_log.jsonl"
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(), log_path=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "forget_nll", "seconds"} <= set(r) for r in rows)


class _NaNAtStep(GradientAscent):
    """GA whose loss (or one logged term) is NaN on a chosen call; never registered."""

    name = "nan-at-step"

    def __init__(self, bad_step: int, where: str = "loss"):
        super().__init__()
        self.bad_step, self.where, self.calls = bad_step, where, 0

    def loss(self, model, batch, ref=None) -> LossOutput:
        self.calls += 1
        out = super().loss(model, batch, ref)
        if self.calls == self.bad_step:
            if self.where == "loss":
                return LossOutput(out.loss * float("nan"), out.logs)
            return LossOutput(out.loss, {**out.logs, "extra": float("nan")})
        return out


@pytest.mark.parametrize("where", ["loss", "logs"])
def test_divergence_restores_the_last_snapshot(tiny_lm, data, where):
    model = tiny_lm.model
    start = _state(model)
    result = train(model, tiny_lm.tokenizer, _NaNAtStep(2, where), data, _cfg(steps=5), progress=False)
    assert "nan-at-step" not in METHODS
    assert result.diverged_at == 2
    assert result.restored_step == 0
    assert result.steps_done == 1
    assert all(math.isfinite(v) for v in result.last_logs.values())
    now = model.state_dict()
    assert all(torch.equal(start[k], now[k]) for k in start), "weights differ from the step-0 snapshot"


def test_divergence_restores_a_later_snapshot(tiny_lm, data):
    model = tiny_lm.model
    start = _state(model)
    result = train(model, tiny_lm.tokenizer, _NaNAtStep(3), data, _cfg(steps=5, snapshot_every=2), progress=False)
    assert (result.diverged_at, result.restored_step, result.steps_done) == (3, 2, 2)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert not all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_two_runs_with_different_precision_in_one_process(tiny_lm, data):
    train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(steps=1, bf16=False), progress=False)
    result = train(tiny_lm.model, tiny_lm.tokenizer, get_method("ga"), data, _cfg(steps=1, bf16=True), progress=False)
    assert result.steps_done == 1
