"""Attention for CPU inference: the grouped products give SDPA's values, and the switch is undone."""

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from obliviate.models.attention import CPU_INFERENCE, GROUPED_MAX, cpu_attention, cpu_inference


class _Module(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def test_one_token_queries_match_sdpa_with_a_padding_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 6, 1, 16), torch.randn(5, 2, 9, 16), torch.randn(5, 2, 9, 16)
    mask = torch.ones(5, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., :4] = False
    mask[3, ..., 2:5] = False  # a hole, as in the [prefix | padding | rest] layout
    for m in (mask, None):
        fast, _ = cpu_attention(_Module(), q, k, v, m, scaling=0.25)
        ref, _ = sdpa_attention_forward(_Module(), q, k, v, m, scaling=0.25)
        assert fast.shape == ref.shape == (5, 1, 6, 16)
        torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_several_queries_match_sdpa_and_a_row_with_nothing_to_attend_stays_finite():
    torch.manual_seed(0)
    q, k, v = torch.randn(4, 6, 5, 16), torch.randn(4, 2, 8, 16), torch.randn(4, 2, 8, 16)
    mask = torch.ones(4, 1, 5, 8, dtype=torch.bool).tril(3)  # 3 cached keys, then causal
    mask[1, ..., :4] = False  # left padding: row 1's first query has no key to attend
    fast, _ = cpu_attention(_Module(), q, k, v, mask, scaling=0.25)
    ref, _ = sdpa_attention_forward(_Module(), q, k, v, mask, scaling=0.25)
    assert fast.isfinite().all()
    attended = mask.any(-1).squeeze(1)  # [batch, queries]
    torch.testing.assert_close(fast[attended], ref[attended], rtol=1e-5, atol=1e-5)


def test_long_products_and_unmasked_prompts_go_to_sdpa(monkeypatch):
    import obliviate.models.attention as attention

    calls = []
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: calls.append(a[1].shape) or (None, None))
    q, k = torch.randn(1, 6, 3, 16), torch.randn(1, 2, 3, 16)
    cpu_attention(_Module(), q, k, k, None, scaling=0.25)  # causal without a mask: SDPA's is_causal
    long_q, long_k = torch.randn(1, 6, 128, 16), torch.randn(1, 2, GROUPED_MAX // 128 + 1, 16)
    cpu_attention(
        _Module(), long_q, long_k, long_k, torch.ones(1, 1, 128, long_k.shape[2], dtype=torch.bool), scaling=0.25
    )
    assert calls == [q.shape, long_q.shape]


def test_generation_switches_attention_and_back(tiny_lm):
    model = tiny_lm.model
    before = model.config._attn_implementation
    with cpu_inference(model):
        assert model.config._attn_implementation == (CPU_INFERENCE if before == "sdpa" else before)
    assert model.config._attn_implementation == before
