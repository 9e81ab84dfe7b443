"""Sharpness-aware NPO: the SAM gradient on hand-made parameters, the surrogate loss, and the method on a tiny
model against a perturbation done by hand (weights restored, rho 0 is NPO, autocast, frozen parameters, LoRA)."""

import copy
import math

import pytest
import torch
from torch.testing import assert_close

from obliviate.engine import TrainConfig, train
from obliviate.methods import get_method
from obliviate.methods.npo import npo_loss
from obliviate.methods.sam_npo import sharpness_aware, surrogate
from obliviate.models.logprobs import nll, ref_logprob, sequence_logprob
from obliviate.models.prompts import encode


def _quadratic():
    """a = [3], b = [[4]] (two tensors, one norm over both), l = (a^2 + b^2) / 2."""
    a = torch.tensor([3.0], requires_grad=True)
    b = torch.tensor([[4.0]], requires_grad=True)
    return a, b, lambda: 0.5 * (a.pow(2).sum() + b.pow(2).sum())


def test_sam_gradient_on_a_quadratic():
    """g = (a, b) = (3, 4), ||g|| = 5; rho 0.5: delta = 0.5 * (3, 4) / 5 = (0.3, 0.4).
    At theta + delta = (3.3, 4.4): gradient (3.3, 4.4), l = (10.89 + 19.36) / 2 = 15.125; l(theta) = 12.5."""
    a, b, loss = _quadratic()
    value, perturbed, grads = sharpness_aware(loss, [a, b], rho=0.5)
    assert_close(grads[0], torch.tensor([3.3]))
    assert_close(grads[1], torch.tensor([[4.4]]))
    assert_close((value, perturbed), (torch.tensor(12.5), torch.tensor(15.125)))
    assert not value.requires_grad and not perturbed.requires_grad
    assert torch.equal(a.detach(), torch.tensor([3.0])) and torch.equal(b.detach(), torch.tensor([[4.0]]))


def test_rho_zero_is_the_plain_gradient():
    a, b, loss = _quadratic()
    value, perturbed, grads = sharpness_aware(loss, [a, b], rho=0.0)
    assert_close((grads[0], grads[1]), (torch.tensor([3.0]), torch.tensor([[4.0]])))
    assert value.item() == perturbed.item() == 12.5


def test_a_parameter_the_loss_does_not_reach_gets_zero():
    """c is unused: its gradient is 0 and it takes no part in ||g||, so a and b move as above."""
    a, b, loss = _quadratic()
    c = torch.tensor([7.0, 7.0], requires_grad=True)
    _, _, grads = sharpness_aware(loss, [a, c, b], rho=0.5)
    assert_close(grads, [torch.tensor([3.3]), torch.zeros(2), torch.tensor([[4.4]])])


def test_weights_are_restored_when_the_second_pass_raises():
    a, b, loss = _quadratic()
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 2:
            assert_close(a.detach(), torch.tensor([3.3]))  # the second pass sees the perturbed weights
            raise RuntimeError("out of memory")
        return loss()

    with pytest.raises(RuntimeError):
        sharpness_aware(failing, [a, b], rho=0.5)
    assert torch.equal(a.detach(), torch.tensor([3.0])) and torch.equal(b.detach(), torch.tensor([[4.0]]))


def test_surrogate_has_the_value_and_the_given_gradient():
    """surrogate(12.5, (a, b), (3.3, 4.4)): value 12.5, d/da = 3.3, d/db = 4.4, whatever a and b are."""
    a, b, _ = _quadratic()
    s = surrogate(torch.tensor(12.5), [a, b], [torch.tensor([3.3]), torch.tensor([[4.4]])])
    assert s.item() == 12.5
    s.backward()
    assert_close((a.grad, b.grad), (torch.tensor([3.3]), torch.tensor([[4.4]])))


@pytest.fixture
def batch(tokenizer, forget_records, retain_records):
    return {"forget": encode(tokenizer, forget_records), "retain": encode(tokenizer, retain_records)}


def _grads(model, loss) -> dict[str, torch.Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)}


def _npo_term(model, ref, batch, beta=0.1):
    return npo_loss(sequence_logprob(model, batch["forget"])[0], ref_logprob(ref, batch["forget"]), beta)


def test_method_gradient_equals_sam_done_by_hand(tiny_lm, batch):
    """Expected: grad NPO at theta + rho * g / ||g|| (a perturbed copy), plus alpha * grad NLL(retain) at theta."""
    model = tiny_lm.model
    ref = copy.deepcopy(model).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rho, alpha = 0.5, 2.0

    g = _grads(model, _npo_term(model, ref, batch))
    norm = math.sqrt(sum(v.pow(2).sum().item() for v in g.values()))
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.add_(g[n] * (rho / norm))
    at_moved = _grads(moved, _npo_term(moved, ref, batch))
    retain = _grads(model, nll(model, batch["retain"]))

    out = get_method("sam_npo", rho=rho, alpha=alpha).loss(model, batch, ref)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters()), "weights not restored"
    model.zero_grad()
    out.loss.backward()
    for n, p in model.named_parameters():
        assert_close(p.grad, at_moved[n] + alpha * retain[n], atol=1e-6, rtol=1e-4)
    # The value is the unperturbed one: 20 ln 2 at the reference, plus alpha * retain NLL.
    assert out.logs["npo"] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert out.logs["npo_perturbed"] > out.logs["npo"]
    assert out.loss.item() == pytest.approx(out.logs["npo"] + alpha * out.logs["retain_nll"], rel=1e-5)


def test_rho_zero_gives_npos_gradient(tiny_lm, batch):
    model = tiny_lm.model
    ref = copy.deepcopy(model).eval()
    npo = _grads(model, get_method("npo", alpha=1.0).loss(model, batch, ref).loss)
    sam = _grads(model, get_method("sam_npo", rho=0.0, alpha=1.0).loss(model, batch, ref).loss)
    for n in npo:
        assert_close(sam[n], npo[n])


def test_only_trainable_parameters_move_under_bf16_autocast(tiny_lm, batch):
    """Frozen parameters are neither perturbed nor given a gradient; weights stay exact under autocast."""
    model = tiny_lm.model
    ref = copy.deepcopy(model).eval()
    for n, p in model.named_parameters():
        p.requires_grad_("mlp" in n)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = get_method("sam_npo", rho=0.5).loss(model, batch, ref)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_parameters() if "mlp" in n}


def test_trains_with_lora_bf16_and_accumulation(tiny_lm, forget_records, retain_records):
    data = {"forget": forget_records, "retain": retain_records}
    cfg = TrainConfig(steps=2, lr=1e-3, batch_size=2, grad_accum=2, lora=True, lora_r=4, checkpoint_every=0)
    result = train(tiny_lm.model, tiny_lm.tokenizer, get_method("sam_npo", rho=0.5), data, cfg, progress=False)
    assert result.steps_done == 2 and result.diverged_at is None
    assert all(math.isfinite(v) for v in result.last_logs.values())
