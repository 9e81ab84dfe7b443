"""Evaluate a model on held-out probes and retain text; the only place reported numbers come from.

One greedy generation pass over all probes (batched), one likelihood pass over
retain text. Leak rate is measured against a base evaluation: only target
probes the base model answered with target knowledge ("known") count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from obliviate.evaluation.leak import probe_hit
from obliviate.io import read_jsonl
from obliviate.methods.logprobs import sequence_logprob
from obliviate.models.generate import answer_probes, generation_copy
from obliviate.models.prompts import encode


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool
    help: str


METRICS = {
    m.name: m
    for m in [
        MetricInfo("leak_rate", False, "share of known held-out target probes whose answer still reveals the target fact"),
        MetricInfo("target_answer_rate", False, "share of all held-out target probes answered with the target fact"),
        MetricInfo("general_qa_accuracy", True, "share of general probes (capitals, general knowledge) answered correctly"),
        MetricInfo("neighbour_qa_accuracy", True, "share of neighbour-topic probes answered correctly"),
        MetricInfo("retain_perplexity", False, "perplexity of held-out retain prose (never trained on)"),
    ]
}


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


@torch.inference_mode()
def perplexity(model, tokenizer, records: list[dict], batch_size: int = 8, max_length: int = 256) -> float:
    """Token-level perplexity over all records' completion tokens."""
    total, count = 0.0, 0.0
    for i in range(0, len(records), batch_size):
        batch = encode(tokenizer, records[i : i + batch_size], max_length)
        logp, n = sequence_logprob(model, {k: v.to(model.device) for k, v in batch.items()})
        total -= logp.sum().item()
        count += n.sum().item()
    return math.exp(total / max(count, 1.0))


def evaluate_model(
    model,
    tokenizer,
    probes: list[dict],
    retain_eval: list[dict],
    keywords: list[str] = (),
    known: list[bool] | None = None,
    max_new_tokens: int = 24,
    behaviour: bool = False,
    answers: list[str] | None = None,
) -> dict:
    """Answer every probe greedily and compute the metrics.

    `known` marks, per probe, whether the base model revealed the fact; without it
    the probes' own ``known`` field (written by the data builder) is used, and
    failing that this model's answers define it. `answers` skips generation (the
    data builder's base answers). `behaviour`: target probes hit when the model
    complies rather than on a fact. Returns {"metrics": {...}, "items": [...]}.
    """
    if answers is None:
        answers = answer_probes(generation_copy(model), tokenizer, probes, max_new_tokens=max_new_tokens)
    items = []
    for p, a in zip(probes, answers):
        hit = probe_hit(p, a, keywords, behaviour)
        items.append({"kind": p["kind"], "question": p.get("question") or p["prompt"], "answer": a, "hit": hit})
    if known is None and all("known" in p for p in probes if p["kind"] == "target"):
        known = [p.get("known", False) for p in probes]
    if known is None:
        known = [it["hit"] for it in items]
    for it, k in zip(items, known):
        it["known"] = bool(k) if it["kind"] == "target" else None

    target = [it for it in items if it["kind"] == "target"]
    metrics = {
        "leak_rate": _rate([it["hit"] for it in target if it["known"]]),
        "target_answer_rate": _rate([it["hit"] for it in target]),
        "general_qa_accuracy": _rate([it["hit"] for it in items if it["kind"] == "general"]),
        "neighbour_qa_accuracy": _rate([it["hit"] for it in items if it["kind"] == "neighbour"]),
        "retain_perplexity": perplexity(model, tokenizer, retain_eval) if retain_eval else None,
        "n_known_target_probes": sum(bool(it["known"]) for it in target),
        "n_target_probes": len(target),
    }
    return {"metrics": metrics, "items": items}


def evaluate(model, data: str | Path, against: dict | None = None, **kwargs) -> dict:
    """Evaluate `model` (a path, hub id or LoadedModel) on the data directory `data`.

    `against` is a base evaluation (the dict this function returns); its answers
    decide which target probes are "known".
    """
    from obliviate.data.targets import TargetSpec
    from obliviate.io import read_json
    from obliviate.models.loading import LoadedModel, load_model

    lm = model if isinstance(model, LoadedModel) else load_model(model)
    data = Path(data)
    spec = TargetSpec(**read_json(data / "manifest.json")["target"])
    known = [it.get("known", it["hit"]) for it in against["items"]] if against else None
    return evaluate_model(
        lm.model, lm.tokenizer, read_jsonl(data / "probes.jsonl"), read_jsonl(data / "retain_eval.jsonl"),
        keywords=spec.terms, known=known, behaviour=spec.kind == "behaviour", **kwargs,
    )
