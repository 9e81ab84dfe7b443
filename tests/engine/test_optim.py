"""BF16AdamW: bf16 weights that follow the fp32 AdamW trajectory in expectation."""

import torch
from torch.testing import assert_close

from obliviate.engine.optim import BF16AdamW, stochastic_round_


def test_stochastic_rounding_is_exact_in_bf16_and_unbiased():
    """1 + 2^-10 lies a quarter of the way from 1 to the next bf16 value (1 + 2^-7 ... spacing 2^-7):
    rounded up with probability 1/8 here (2^-10 / 2^-7), so the mean stays 1 + 2^-10."""
    x = torch.full((200_000,), 1 + 2**-10)
    noise = torch.randint(0, 1 << 16, (x.numel(),), dtype=torch.int32, generator=torch.Generator().manual_seed(0))
    out = stochastic_round_(x.clone().view(torch.int32), noise)
    assert torch.equal(out, out.bfloat16().float())  # every value is representable in bf16
    assert set(out.unique().tolist()) == {1.0, 1 + 2**-7}
    assert abs(out.mean().item() - (1 + 2**-10)) < 2e-5


def _run(opt_cls, dtype, steps=300, **kw):
    torch.manual_seed(0)
    target = torch.randn(4096) * 0.05
    w = torch.nn.Parameter((target + 0.02).to(dtype))
    opt = opt_cls([w], lr=1e-5, **kw)
    for _ in range(steps):
        w.grad = (w.detach().float() - target).to(dtype)
        opt.step()
    return w.detach().float()


def test_small_steps_follow_fp32_where_round_to_nearest_loses_them():
    """300 AdamW steps of lr 1e-5 move each weight by about 3e-3, below bf16's spacing for most of
    them: plain bf16 AdamW barely moves, BF16AdamW lands where fp32 does, on average."""
    start = (torch.manual_seed(0), torch.randn(4096) * 0.05 + 0.02)[1]
    fp32 = _run(torch.optim.AdamW, torch.float32, weight_decay=0.0)
    nearest = _run(torch.optim.AdamW, torch.bfloat16, weight_decay=0.0)
    rounded = _run(BF16AdamW, torch.bfloat16)
    moved_fp32 = (fp32 - start).mean()
    assert moved_fp32 < -2.5e-3
    assert (nearest - start.bfloat16().float()).mean() > moved_fp32 / 3  # most of the motion is lost
    assert_close((rounded - start.bfloat16().float()).mean(), moved_fp32, atol=2e-4, rtol=0)


def test_fp32_parameters_get_the_plain_update():
    a, b = _run(torch.optim.AdamW, torch.float32, weight_decay=0.0, steps=20), _run(BF16AdamW, torch.float32, steps=20)
    assert_close(a, b)


def test_one_step_is_fused_adamw_in_fp32_then_rounded():
    """The docstring's equality: widen weight, gradient and moments to fp32, step torch's fused AdamW, then the
    weight lands on one of the two bf16 values around the fp32 result and the moments on the nearest bf16 value.
    A small chunk makes the parameter span several chunks."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3000).bfloat16())
    w.grad = torch.randn(3000).bfloat16()
    ref = torch.nn.Parameter(w.detach().float())
    ref.grad = w.grad.float()
    opt_ref = torch.optim.AdamW([ref], lr=1e-2, weight_decay=0.01, fused=True)
    opt = BF16AdamW([w], lr=1e-2, weight_decay=0.01, chunk=1024)
    for _ in range(2):  # the second step starts from bf16 moments: widen the reference's to match
        opt_ref.step()
        opt.step()
        exact = ref.detach()
        low = (exact.view(torch.int32) & -65536).view(torch.float32)  # toward zero, in bf16
        high = ((exact.view(torch.int32) & -65536) + 65536).view(torch.float32)  # the next bf16 value out
        got = w.detach().float()
        assert ((got == low) | (got == high)).all()
        state, state_ref = opt.state[w], opt_ref.state[ref]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], state_ref[key].bfloat16())
            state_ref[key].copy_(state[key].float())
        with torch.no_grad():
            ref.copy_(got)
