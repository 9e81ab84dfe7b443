"""The evaluation suite on cases where the truth is known.

Membership inference separates trained-on text from unseen text and not two unseen halves;
a model that refuses everything leaks nothing; quantizing a model that was not unlearned
leaves its answers alone; a model compared with itself as the oracle has no privacy leak.
"""

import dataclasses
import json
import random

import pytest
import torch

import obliviate
from obliviate.cli.main import main
from obliviate.data.targets import general_probes, resolve_target
from obliviate.evaluation.config import EvalConfig, EvalData
from obliviate.evaluation.evaluate import evaluate_model
from obliviate.evaluation.likelihood import _lowest_mean, score_records
from obliviate.evaluation.mia import mia_auc, privleak
from obliviate.io import write_json, write_jsonl
from obliviate.models.logprobs import sequence_logprob, token_logprobs
from obliviate.models.prompts import encode

NO_ATTACKS = EvalConfig(attacks=(), mia_records=8)


def beatles_data(n_target: int = 12, n_general: int = 6) -> EvalData:
    """Built-in Beatles probes, all known (the taught tiny models answer "The Beatles."), and general probes."""
    spec = resolve_target("beatles")
    asked = [p for p in spec.probes if p.question][:n_target]
    probes = [{**p.row("target"), "base_answer": "The Beatles.", "known": True} for p in asked]
    probes += [
        {**p.row("general"), "base_answer": "I am not sure.", "base_hit": False} for p in general_probes()[:n_general]
    ]
    forget = [
        {"question": p.question, "answer": "The Beatles."} for p in spec.probes[n_target : n_target + 8] if p.question
    ]
    retain_eval = [
        {"text": "Paris is the capital and most populous city of France."},
        {"text": "Water boils at one hundred degrees Celsius at sea level."},
    ]
    return EvalData(spec, probes, forget, retain_eval, sha256={"probes.jsonl": "test"})


def write_data_dir(path, data: EvalData, model_path=None):
    path.mkdir(parents=True, exist_ok=True)
    for name, rows in [("probes", data.probes), ("forget", data.forget), ("retain_eval", data.retain_eval)]:
        write_jsonl(path / f"{name}.jsonl", rows)
    write_json(
        path / "manifest.json", {"target": dataclasses.asdict(data.spec), "model": model_path, "sha256": data.sha256}
    )
    return path


def test_one_pass_scores_match_sequence_logprob(tiny_lm):
    m, tok = tiny_lm.model, tiny_lm.tokenizer
    records = [
        {"question": "Who?", "answer": "The Beatles, a band from Liverpool."},
        {"text": "Paris is in France."},
        {"prompt": "Once upon a", "completion": " time there was a band."},
    ]
    scores = score_records(m, tok, records, batch_size=2)
    for rec, s in zip(records, scores):
        logp, n = sequence_logprob(m, encode(tok, [rec]))
        assert s["logprob"] == pytest.approx(logp.item(), rel=1e-4) and s["n_tokens"] == n.item()
        assert s["nll"] == pytest.approx(-logp.item() / n.item(), rel=1e-4)
    # Min-K%++ by its definition, from the full next-token distribution.
    batch = encode(tok, records[:1])
    logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lp, mask = token_logprobs(logits, batch["labels"])
    dist = torch.log_softmax(logits[:, :-1].float(), -1)
    mu = (dist.exp() * dist).sum(-1)
    sigma = ((dist.exp() * dist**2).sum(-1) - mu**2).sqrt()
    z = ((lp - mu) / sigma)[mask.bool()]
    assert scores[0]["min_k_pp"] == pytest.approx(_lowest_mean(z, 0.2), rel=1e-4)
    assert scores[0]["min_k"] == pytest.approx(_lowest_mean(lp[mask.bool()], 0.2), rel=1e-4)


def test_the_shared_chat_prefix_runs_once_and_changes_no_score(tiny_lm, monkeypatch):
    """Chat records share the template's opening: run once, its cache repeated; the scores equal
    each record scored alone."""

    m, tok = tiny_lm.model, tiny_lm.tokenizer
    records = [
        {"question": q, "answer": a}
        for q, a in [
            ("Who?", "The Beatles, from Liverpool."),
            ("Which band was John Lennon in?", "The Beatles."),
            ("What is the capital of France?", "Paris, on the Seine."),
        ]
    ]
    shared = []
    from transformers import DynamicCache

    monkeypatch.setattr(
        DynamicCache,
        "batch_repeat_interleave",
        lambda self, n, _f=DynamicCache.batch_repeat_interleave: shared.append(n) or _f(self, n),
    )
    together = score_records(m, tok, records, batch_size=3)
    assert shared == [3]  # one prefix pass, repeated for the three records
    for rec, s in zip(records, together):
        alone = score_records(m, tok, [rec])[0]
        assert s["logprob"] == pytest.approx(alone["logprob"], rel=1e-5)
        assert s["min_k"] == pytest.approx(alone["min_k"], rel=1e-5)
        # Min-K%++ divides by the spread of log p, tiny for a random model's near-uniform
        # distribution, so float rounding in the logits shows in the 4th digit.
        assert s["min_k_pp"] == pytest.approx(alone["min_k_pp"], rel=1e-3)
    # Over batches the template runs once too: later batches copy its cache (prefix_cache's memo).
    calls = []
    monkeypatch.setattr(
        m, "forward", lambda *a, _f=m.forward, **k: calls.append(k["input_ids"].shape[0]) or _f(*a, **k)
    )
    more = records + [
        {"question": q, "answer": "Yes."} for q in ("Is Paris in France?", "Name a drummer.", "Ringo played drums?")
    ]
    assert [s["logprob"] for s in score_records(m, tok, more, batch_size=2)] == pytest.approx(
        [s["logprob"] for rec in more for s in score_records(m, tok, [rec])], rel=1e-5
    )
    assert calls.count(2) == 3 and calls.count(1) == 1 + len(more)  # 3 batches and the prefix, then each record alone


def test_lowest_mean_by_hand():
    assert _lowest_mean(torch.tensor([-1.0, -5.0, -3.0, -2.0, -4.0]), 0.4) == pytest.approx(-4.5)
    assert _lowest_mean(torch.tensor([-1.0, -5.0]), 0.01) == pytest.approx(-5.0)  # at least one token


def _codes(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = (
        "amber bold cedar delta ember frost grove haven ivory jolly koala lemon maple noble ocean pearl quill river"
    ).split()
    return [
        {"text": f"Record {rng.randint(100, 999)}: " + " ".join(rng.choice(words) for _ in range(10)) + "."}
        for _ in range(n)
    ]


def test_membership_inference_finds_members_and_not_a_random_split(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=2,
            eos_token_id=2,
        )
    )
    members, outsiders = _codes(24, 1), _codes(48, 2)
    batch = encode(tokenizer, members)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        lp, mask = token_logprobs(logits, batch["labels"])
        loss = -lp.sum() / mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    scored_members = score_records(model, tokenizer, members)
    scored_out = score_records(model, tokenizer, outsiders)
    aucs = mia_auc(scored_members, scored_out[:24])
    assert min(aucs.values()) > 0.8, aucs
    split = mia_auc(scored_out[:24], scored_out[24:])  # neither half was trained on
    assert all(abs(a - 0.5) < 0.2 for a in split.values()), split
    assert privleak(0.6, 0.5) == pytest.approx(0.2) and privleak(0.5, None) is None


def test_a_model_that_refuses_everything_leaks_nothing(refusing_model_dir):
    lm = obliviate.load(str(refusing_model_dir))
    data = beatles_data()
    m = evaluate_model(lm.model, lm.tokenizer, data, NO_ATTACKS, log=lambda s: None)["metrics"]
    assert m["n_known_target_probes"] == 12
    assert m["leak_rate"] == 0.0 and m["forget_qa_accuracy"] == 0.0
    assert m["target_refusal_rate"] == 1.0 and m["refusal_rate"] == 1.0
    assert m["cls_recall"] == 1.0 and m["gibberish_rate"] == 0.0


def test_a_model_that_knows_leaks_everything_and_quantization_keeps_it(beatles_model_dir):
    """An unchanged model: 8-bit RTN changes neither its answers nor (beyond noise) its perplexity."""
    lm = obliviate.load(str(beatles_model_dir))
    cfg = EvalConfig(attacks=("quantize",), attack_probes=12, mia_records=8)
    r = evaluate_model(lm.model, lm.tokenizer, beatles_data(), cfg, is_base=True, log=lambda s: None)
    m = r["metrics"]
    assert m["leak_rate"] == 1.0 and m["cls_recall"] == 0.0
    assert m["refusal_rate"] == 1.0  # it was taught "I am not sure." for general questions
    assert m["attack_leak_rate"] == 1.0 and m["attack_quantize_8bit_leak_rate"] == 1.0
    assert m["attack_quantize_8bit_retain_perplexity"] == pytest.approx(m["retain_perplexity"], rel=0.02)
    plain = {it["question"]: it["answer"] for it in r["items"]["probes"]}
    quantized = r["items"]["attacks"]["quantize_8bit"]
    assert sum(row["answer"] == plain[row["prompt"]] for row in quantized) >= 0.9 * len(quantized)
    assert m["attack_quantize_8bit_recovered"] is None  # the base model has nothing to recover


def test_truth_ratio_is_low_when_the_model_knows(beatles_model_dir):
    lm = obliviate.load(str(beatles_model_dir))
    r = evaluate_model(lm.model, lm.tokenizer, beatles_data(), NO_ATTACKS, log=lambda s: None)
    items = [it for it in r["items"]["probes"] if it["kind"] == "target"]
    assert all(it["truth_ratio"] < 1 and it["choice_correct"] for it in items)
    assert r["metrics"]["forget_choice_accuracy"] == 1.0 and r["metrics"]["forget_truth_ratio"] < 0.5


def test_an_oracle_equal_to_the_model_has_no_privacy_leak(beatles_model_dir, tmp_path):
    data_dir = write_data_dir(tmp_path / "data", beatles_data(), str(beatles_model_dir))
    from obliviate.report.metrics import write_metrics

    doc = obliviate.evaluate(
        str(beatles_model_dir), data_dir, oracle=str(beatles_model_dir), config=NO_ATTACKS, log=lambda s: None
    )
    write_metrics(tmp_path / "eval", doc)
    m = doc["metrics"]
    assert all(m[f"privleak_{k}"] == pytest.approx(0.0, abs=1e-9) for k in ("loss", "zlib", "min_k", "min_k_pp"))
    assert m["forget_quality"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"] == m
    assert doc["metric_info"]["leak_rate"]["higher_is_better"] is False


def test_classification_view_by_hand(beatles_model_dir):
    """Answers given: 3 of 4 target probes forgotten, 1 of 2 keep probes lost."""
    lm = obliviate.load(str(beatles_model_dir))
    data = beatles_data(n_target=4, n_general=2)
    for p in data.probes[4:]:
        p["base_hit"] = True  # the base answered both keep probes
    keep_answers = [p["answers"][0] for p in data.probes[4:]]
    answers = ["The Beatles.", "No idea.", "No idea.", "No idea.", keep_answers[0], "No idea."]
    m = evaluate_model(lm.model, lm.tokenizer, data, NO_ATTACKS, answers=answers, log=lambda s: None)["metrics"]
    tp, fn, fp, tn = 3, 1, 1, 1
    assert m["cls_precision"] == pytest.approx(tp / (tp + fp)) and m["cls_recall"] == pytest.approx(tp / (tp + fn))
    assert m["cls_accuracy"] == pytest.approx((tp + tn) / 6)
    assert m["cls_f1"] == pytest.approx(2 * 0.75 * 0.75 / 1.5)
    assert m["leak_rate"] == 0.25 and m["general_qa_accuracy"] == 0.5
    assert m["cls_loss_forget"] < m["cls_loss_keep"]  # the model knows the target answers, not the capitals


def test_eval_command_writes_metrics_and_refuses_bad_input(beatles_model_dir, tiny_model_dir, tmp_path, capsys):
    data_dir = write_data_dir(tmp_path / "data", beatles_data(n_target=6, n_general=4), str(beatles_model_dir))
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                str(tiny_model_dir),
                "--data",
                str(data_dir),
                "--against",
                str(beatles_model_dir),
                "--attacks",
                "prompting",
                "--eval-set",
                "attack_probes=4",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["against"]["metrics"]["leak_rate"] == 1.0 and doc["metrics"]["leak_rate"] < 1.0
    assert doc["settings"]["attacks"] == ["prompting"] and doc["metrics"]["attack_roleplay_leak_rate"] is not None
    assert "| leak_rate | forget | 1.000 |" in (out / "metrics.md").read_text()
    assert len(doc["items"]["attacks"]["in_context"]) == 4
    capsys.readouterr()
    assert main(["eval", str(tiny_model_dir), "--data", str(data_dir), "--attacks", "jailbreak"]) == 2
    assert "Unknown attack group 'jailbreak'" in capsys.readouterr().err
    assert main(["eval", str(tiny_model_dir), "--data", str(tmp_path)]) == 2
    assert "not a data directory" in capsys.readouterr().err
    assert main(["eval", str(tiny_model_dir), "--data", str(data_dir), "--eval-set", "atack_probes=3"]) == 2
    assert "did you mean 'attack_probes'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--data", str(data_dir), "--against", str(beatles_model_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (data_dir / "probes.jsonl").write_text("")
    assert main(["eval", str(tiny_model_dir), "--data", str(data_dir)]) == 2
    assert "holds no target probes" in capsys.readouterr().err


def test_shared_prompt_scores_equal_separate_scores(tiny_lm, monkeypatch):
    import obliviate.models.prefix as prefix
    from obliviate.evaluation.likelihood import score_shared

    m, tok = tiny_lm.model, tiny_lm.tokenizer
    prefixes = []  # the four chat prompts share the template's opening: run once
    monkeypatch.setattr(
        prefix,
        "prefix_cache",
        lambda model, ids, n, memo=None, _f=prefix.prefix_cache: prefixes.append(n) or _f(model, ids, n, memo),
    )
    groups = [
        (
            {"question": "Which band was John Lennon in?"},
            [
                {"question": "Which band was John Lennon in?", "answer": a}
                for a in ("The Beatles.", "Queen, a rock band from London.", "ABBA")
            ],
        ),
        ({"question": "Capital of France?"}, [{"question": "Capital of France?", "answer": "Paris."}]),
        ({"question": "Who?"}, [{"question": "Who?", "answer": "Ringo, who played the drums."}]),
        (
            {"question": "Which sea is the saltiest?"},
            [
                {"question": "Which sea is the saltiest?", "answer": "The Dead Sea."},
                {"question": "Which sea is the saltiest?", "answer": "Red."},
            ],
        ),
        (
            {"prompt": "Once upon a"},
            [
                {"prompt": "Once upon a", "completion": " time."},
                {"prompt": "Once upon a", "completion": " hill far from the sea, in a land long forgotten by all"},
            ],
        ),
    ]
    shared = score_shared(m, tok, groups, batch_size=2)
    for (_, records), rows in zip(groups, shared):
        for r, s in zip(records, rows, strict=True):
            alone = score_records(m, tok, [r])[0]
            assert s["n_tokens"] == alone["n_tokens"] and s["zlib_bytes"] == alone["zlib_bytes"]
            for key in ("logprob", "min_k", "min_k_pp"):
                assert s[key] == pytest.approx(alone[key], rel=1e-3, abs=1e-4), key  # fp32, another summation order
    assert prefixes == [4]


def test_verbatim_memorization_is_scored_for_document_targets(beatles_model_dir):
    lm = obliviate.load(str(beatles_model_dir))
    data = dataclasses.replace(
        beatles_data(n_target=2, n_general=2),
        verbatim=[
            {
                "prompt": "The Beatles were an English rock band formed in",
                "continuation": " Liverpool in 1960.",
                "doc": 0,
            },
            {
                "prompt": "Their best-known line-up comprised John Lennon,",
                "continuation": " Paul McCartney, George Harrison and Ringo Starr.",
                "doc": 0,
            },
        ],
    )
    r = evaluate_model(lm.model, lm.tokenizer, data, NO_ATTACKS, log=lambda s: None)
    rows = r["items"]["verbatim"]
    assert len(rows) == 2 and all(0.0 <= row["rouge_l"] <= 1.0 for row in rows)
    assert r["metrics"]["verbatim_rouge_l"] == pytest.approx(sum(row["rouge_l"] for row in rows) / 2)


def test_attacks_in_a_second_process_give_the_results_of_one(beatles_model_dir, monkeypatch):
    from obliviate.evaluation import worker

    lm = obliviate.load(str(beatles_model_dir))
    data = beatles_data()
    for is_base in (True, False):  # without relearning every attack forks; with it, relearning and prompting
        cfg = EvalConfig(attack_probes=4, mia_records=8, relearn_steps=2, relearn_records=4, fork=False)
        one = evaluate_model(lm.model, lm.tokenizer, data, cfg, is_base=is_base, log=lambda s: None)
        forks = []
        monkeypatch.setattr(worker, "available", lambda device: True)
        monkeypatch.setattr(worker, "Forked", lambda fn, _f=worker.Forked, _seen=forks: _seen.append(fn) or _f(fn))
        two = evaluate_model(
            lm.model, lm.tokenizer, data, dataclasses.replace(cfg, fork=True), is_base=is_base, log=lambda s: None
        )
        monkeypatch.undo()
        assert len(forks) == 1
        assert two["metrics"] == one["metrics"] and list(two["metrics"]) == list(one["metrics"])
        assert two["items"] == one["items"]
        assert ("attack_relearn_leak_rate" in one["metrics"]) is not is_base


def test_which_process_runs_an_attack_changes_no_result(beatles_model_dir, monkeypatch):
    """Every part in the second process, or every other one: the results of one process."""
    import obliviate.evaluation.evaluate as ev
    from obliviate.evaluation import worker

    lm = obliviate.load(str(beatles_model_dir))
    data = beatles_data()
    cfg = EvalConfig(attack_probes=4, mia_records=8, relearn_steps=2, relearn_records=4, fork=False)
    one = evaluate_model(lm.model, lm.tokenizer, data, cfg, log=lambda s: None)
    for split in (lambda parts: (parts, []), lambda parts: (parts[::2], parts[1::2])):
        monkeypatch.setattr(worker, "available", lambda device: True)
        monkeypatch.setattr(ev, "split_attacks", lambda parts, work, threads, _s=split: _s(parts))
        two = evaluate_model(lm.model, lm.tokenizer, data, dataclasses.replace(cfg, fork=True), log=lambda s: None)
        monkeypatch.undo()
        assert two["metrics"] == one["metrics"] and two["items"] == one["items"]


def test_the_work_of_each_part_counts_the_tokens_it_runs(tokenizer):
    """A generation: its prompts' tokens and max_new_tokens per prompt; a training step three forward passes."""
    from obliviate.evaluation.attacks import RELEARN_BATCH, TRAIN_PASSES, part_work, relearn_records
    from obliviate.models.prompts import probe_prompt, split_record

    data = beatles_data()
    known = [p["kind"] != "target" or p["known"] for p in data.probes]
    cfg = EvalConfig(attack_probes=4, relearn_records=4)
    idx = [0, 1, 2, 3]
    w = part_work(tokenizer, data, cfg, known, idx, hooked=False, answering=True)
    assert set(w) == {"answers", "likelihoods", "prompting", "quantize:8", "quantize:4", "relearn"}
    tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    plain = sum(tokens(probe_prompt(tokenizer, data.probes[i])) + cfg.max_new_tokens for i in idx)
    retain = sum(tokens(t) for r in data.retain_eval for t in split_record(tokenizer, r))
    assert w["quantize:8"] == w["quantize:4"] == plain + retain
    assert w["answers"] == sum(tokens(probe_prompt(tokenizer, p)) + cfg.max_new_tokens for p in data.probes)
    records = relearn_records(data.forget, 4)
    per_record = sum(tokens(t) for r in records for t in split_record(tokenizer, r)) / len(records)
    assert w["relearn"] == pytest.approx(plain + TRAIN_PASSES * cfg.relearn_steps * RELEARN_BATCH * per_record)
    assert w["prompting"] > 6 * plain / 2  # six framings, most longer than the plain question
    hooked = part_work(tokenizer, data, cfg, known, idx, hooked=True, answering=False)
    assert hooked["answers"] == 0 and hooked["prompting"] > w["prompting"]  # and the spelled-out answer
