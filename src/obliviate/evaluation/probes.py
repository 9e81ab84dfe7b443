"""Probe scoring: which probes are known, the likelihood pass, and the metrics read from answers and likelihoods.

Forget efficacy is measured on the held-out target probes the base model answered with the
fact ("known"); keep probes (general, neighbour) count as known when the base answered them.
"""

from __future__ import annotations

from dataclasses import dataclass

from obliviate.evaluation.config import EvalConfig, EvalData, sample
from obliviate.evaluation.likelihood import score_records, score_shared
from obliviate.evaluation.text import distinct_n, is_gibberish, repeats, rouge_l_recall
from obliviate.evaluation.truth import candidate_record, candidates, truth_ratio
from obliviate.leak import is_refusal, probe_hit
from obliviate.models.inference import DEFAULT, InferenceOptions
from obliviate.records import asked


def rate(flags) -> float | None:
    """The share of true values, None for none."""
    flags = list(flags)
    return sum(map(bool, flags)) / len(flags) if flags else None


def mean(values) -> float | None:
    """The mean of the values that are not None, None for none."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def known_flags(data: EvalData, base: dict | None) -> list[bool] | None:
    """Per probe, whether it is known: with `base` (the base model's result) a target probe it knew and a keep
    probe it answered; otherwise the data builder's flags; None when neither says (the model's own answers decide)."""
    if base is not None:
        return [bool(it["known"]) if it["kind"] == "target" else bool(it["hit"]) for it in base["items"]["probes"]]
    if all("known" in p for p in data.probes if p["kind"] == "target"):
        return [bool(p.get("known")) if p["kind"] == "target" else bool(p.get("base_hit")) for p in data.probes]
    return None


def mia_sets(data: EvalData, cfg: EvalConfig) -> tuple[list[dict], list[dict]]:
    """Members: forget records. Non-members: holdout.jsonl when the data has one, else the held-out
    target probes with the base model's answers (same topic, same generator, never trained on)."""
    members = sample(data.forget, cfg.mia_records, f"{cfg.seed}-members")
    held = data.holdout or [
        candidate_record(p, p["base_answer"]) for p in data.probes if p["kind"] == "target" and p.get("base_answer")
    ]
    return members, sample(held, cfg.mia_records, f"{cfg.seed}-holdout")


def loss_probes(data: EvalData, cfg: EvalConfig, known: list[bool]) -> tuple[list[int], list[int]]:
    """(positives, negatives) of the likelihood pass: the known target probes, and a seeded subset of
    `cfg.keep_loss_probes` of the keep probes the base answered."""
    positives = [i for i, p in enumerate(data.probes) if p["kind"] == "target" and known[i]]
    keep = [i for i, p in enumerate(data.probes) if p["kind"] != "target" and known[i]]
    return positives, sorted(sample(keep, cfg.keep_loss_probes, f"{cfg.seed}-keep"))


@dataclass
class LikelihoodRecords:
    """What the likelihood pass scores, each record once."""

    members: list[dict]  # membership inference (mia_sets)
    nonmembers: list[dict]
    records: list[dict]  # the negatives' correct answers and the retain prose, laid out by `spans`
    spans: dict  # ("neg", probe index) or "retain" -> (start, end) in `records`
    groups: list[tuple[int, list[dict]]]  # (probe index, [correct answer, wrong answers...]) sharing its prompt


def likelihood_records(
    data: EvalData, cfg: EvalConfig, positives: list[int], negatives: list[int]
) -> LikelihoodRecords:
    """The records of the likelihood pass: MIA sets, answer candidates of `positives` (correct + wrong)
    and of `negatives` (correct only), retain prose."""
    members, nonmembers = mia_sets(data, cfg)
    target_pool = [p for p in data.probes if p["kind"] in ("target", "neighbour")]
    pos_cands = candidates(
        [data.probes[i] for i in positives],
        target_pool,
        cfg.n_wrong,
        cfg.seed,
        fallback_probes=[p for p in data.probes if p["kind"] == "general"],
    )
    neg_cands = candidates([data.probes[i] for i in negatives], [], 0, cfg.seed)
    records, spans = [], {}

    def add(name, recs):
        spans[name] = (len(records), len(records) + len(recs))
        records.extend(recs)

    for i, c in zip(negatives, neg_cands):
        if c:
            add(("neg", i), [candidate_record(data.probes[i], c[0])])
    add("retain", data.retain_eval)
    groups = [
        (i, [candidate_record(data.probes[i], a) for a in [c[0], *c[1]]]) for i, c in zip(positives, pos_cands) if c
    ]
    return LikelihoodRecords(members, nonmembers, records, spans, groups)


def likelihood_pass(
    model, tokenizer, todo: LikelihoodRecords, cfg: EvalConfig, inference: InferenceOptions = DEFAULT
) -> dict:
    """Score `todo` (likelihood_records) in one pass; returns the scored rows split back per use:
    "members", "nonmembers", "retain", ("pos", i) (correct answer first) and ("neg", i)."""
    scoring = {"batch_size": cfg.score_batch_size, "k": cfg.min_k, "inference": inference}
    # Only membership inference reads Min-K%++, the costly part of the per-token statistics.
    mia = score_records(model, tokenizer, todo.members + todo.nonmembers, **scoring)
    scored = score_records(model, tokenizer, todo.records, min_k_pp=False, **scoring)
    result = {name: scored[a:b] for name, (a, b) in todo.spans.items()}
    result |= {"members": mia[: len(todo.members)], "nonmembers": mia[len(todo.members) :]}
    # A probe's correct and wrong answers share its prompt: run the prompt once.
    shared = score_shared(model, tokenizer, [(recs[0], recs) for _, recs in todo.groups], min_k_pp=False, **scoring)
    result |= {("pos", i): rows for (i, _), rows in zip(todo.groups, shared)}
    return result


def probe_view(
    data: EvalData, answers: dict[int, str], known: list[bool], keep_known: list[bool], scores: dict
) -> tuple[dict, list[dict]]:
    """Generation metrics, likelihood metrics and the classification view over the probes; returns
    (metrics, one item per probe). `scores` is `likelihood_pass`'s result."""
    terms = data.spec.terms
    items = []
    for i, p in enumerate(data.probes):
        a = answers.get(i)
        item = {
            "kind": p["kind"],
            "question": asked(p),
            "answer": a,
            "hit": probe_hit(p, a, terms, data.behaviour) if a is not None else None,
            "known": known[i] if p["kind"] == "target" else keep_known[i],
        }
        if a is not None:
            item |= {"refusal": is_refusal(a), "gibberish": is_gibberish(a)}
        if p["kind"] == "target" and known[i] and a is not None and p.get("base_answer"):
            item["rouge_l"] = rouge_l_recall(a, p["base_answer"])
        if ("pos", i) in scores:
            c, *w = scores[("pos", i)]
            item |= {
                "correct_nll": c["nll"],
                "truth_ratio": truth_ratio(c, w),
                "choice_correct": all(c["nll"] < x["nll"] for x in w),
            }
        if ("neg", i) in scores:
            item["correct_nll"] = scores[("neg", i)][0]["nll"]
        items.append(item)
    answered_idx = [i for i, it in enumerate(items) if it["answer"] is not None]
    target = [items[i] for i in answered_idx if items[i]["kind"] == "target" and items[i]["known"]]
    keep = [items[i] for i in answered_idx if items[i]["kind"] != "target"]
    with_answers = [
        items[i]
        for i in answered_idx
        if items[i]["kind"] == "target" and items[i]["known"] and data.probes[i].get("answers")
    ]
    answered = [it["answer"] for it in items if it["answer"] is not None]
    trs = [it["truth_ratio"] for it in target if it.get("truth_ratio") is not None]
    m = {
        "leak_rate": rate(it["hit"] for it in target),
        "forget_qa_accuracy": rate(it["hit"] for it in with_answers),
        "forget_choice_accuracy": rate(it["choice_correct"] for it in target if "choice_correct" in it),
        "forget_truth_ratio": mean(min(r, 1 / r) for r in trs if r > 0),
        "forget_rouge_l": mean(it.get("rouge_l") for it in target),
        "target_refusal_rate": rate(it["refusal"] for it in target),
        "general_qa_accuracy": rate(it["hit"] for it in keep if it["kind"] == "general"),
        "neighbour_qa_accuracy": rate(it["hit"] for it in keep if it["kind"] == "neighbour"),
        "refusal_rate": rate(it["refusal"] for it in keep),
        "distinct_1": distinct_n(answered, 1),
        "distinct_2": distinct_n(answered, 2),
        "repetition_rate": rate(map(repeats, answered)),
        "gibberish_rate": rate(it["gibberish"] for it in items if it["answer"] is not None),
    }
    return m | classification_view(target, [it for it in keep if it["known"]], data), items


def classification_view(target: list[dict], neg: list[dict], data: EvalData) -> dict:
    """The classification view: positives = known target probes, negatives = keep probes the base answered;
    the model "forgets" a probe when its answer does not reveal it."""
    tp = sum(not it["hit"] for it in target)
    fp = sum(not it["hit"] for it in neg)
    fn, tn = len(target) - tp, len(neg) - fp
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision and recall:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = 0.0 if precision is not None and recall is not None else None
    return {
        "cls_accuracy": (tp + tn) / (len(target) + len(neg)) if target or neg else None,
        "cls_precision": precision,
        "cls_recall": recall,
        "cls_f1": f1,
        "cls_loss_forget": mean(it.get("correct_nll") for it in target),
        "cls_loss_keep": mean(it.get("correct_nll") for it in neg),
        "n_known_target_probes": len(target),
        "n_target_probes": sum(p["kind"] == "target" for p in data.probes),
    }
