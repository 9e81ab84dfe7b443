"""Relabel, Yao and retain_ft: which records they see, and their losses on a tiny model."""

import torch

from obliviate.methods import get_method
from obliviate.models.logprobs import kl_to_ref, nll
from obliviate.models.prompts import encode

ALT = [{"question": "q", "answer": "a", "kind": k} for k in ("negation", "mismatch", "refusal", "anchored")]


def test_relabel_trains_on_the_chosen_alternative_kinds_only():
    data = get_method("relabel", alt_kinds=("refusal",)).prepare({"alt": ALT, "retain": []})
    assert [r["kind"] for r in data["alt"]] == ["refusal"]
    assert {r["kind"] for r in get_method("relabel").prepare({"alt": ALT})["alt"]} == {"negation", "anchored"}


def test_yao_pairs_forget_prompts_with_random_normal_answers():
    assert [r["kind"] for r in get_method("yao").prepare({"alt": ALT})["alt"]] == ["mismatch"]


def test_losses_are_the_documented_sums(tiny_lm, forget_records, retain_records):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    alt = [{"question": r["question"], "answer": "I don't know."} for r in forget_records]
    batch = {"forget": encode(tok, forget_records), "retain": encode(tok, retain_records), "alt": encode(tok, alt)}
    ref = tiny_lm.model
    with torch.no_grad():
        f, r, a = nll(model, batch["forget"]), nll(model, batch["retain"]), nll(model, batch["alt"])
        kl = kl_to_ref(model, ref, batch["retain"])
        torch.testing.assert_close(get_method("relabel", alpha=2.0).loss(model, batch).loss, a + 2 * r)
        torch.testing.assert_close(get_method("retain_ft").loss(model, batch).loss, r)
        torch.testing.assert_close(get_method("kl", alpha=3.0).loss(model, batch, ref).loss, -f + 3 * kl)
        torch.testing.assert_close(get_method("yao").loss(model, batch, ref).loss, -0.5 * f + a + kl)
    assert abs(kl.item()) < 1e-5  # the model against itself
