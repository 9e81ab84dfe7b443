"""Answer candidates for likelihood metrics: the truth ratio and multiple-choice accuracy.

TOFU's truth ratio compares how likely a model finds wrong answers against the right one:
R = mean_w P(w | q)^(1/|w|) / P(c | q)^(1/|c|). A model that knows the fact has R << 1;
one that cannot tell them apart has R near 1. Probes may carry their own
``paraphrased_answer`` and ``perturbed_answers`` (the oracle benchmark writes them);
otherwise the correct answer is the base model's own answer up to the end of the sentence
that states the fact, and each wrong answer is that same sentence with the fact swapped for
another probe's expected answer (other people, places, titles of the same topic and its
neighbours, drawn with a fixed seed): same words, same length, only the fact differs.
"""

from __future__ import annotations

import math
import random
import re


def _match(probe: dict):
    base = probe.get("base_answer") or ""
    for a in probe.get("answers") or []:
        m = re.search(r"(?<![A-Za-z0-9])" + re.escape(a) + r"(?![A-Za-z0-9])", base, re.IGNORECASE)
        if m:
            return m
    return None


def display_answer(probe: dict) -> str | None:
    """The probe's expected answer in natural case: as it appears in the base answer, else title-cased."""
    answers = probe.get("answers") or []
    if not answers:
        return None
    m = _match(probe)
    if m:
        return m.group(0)
    return answers[0] if any(c.isupper() for c in answers[0]) else answers[0].title()


def candidates(
    probes: list[dict], pool_probes: list[dict], n_wrong: int = 3, seed: int = 0, fallback_probes: list[dict] = ()
) -> list[tuple[str, list[str]] | None]:
    """(correct, [wrong, ...]) per probe, or None for a probe without an expected answer.

    Wrong answers come from `pool_probes`' answers, and from `fallback_probes`' when the pool
    has fewer than `n_wrong` that differ from the probe's own answers.
    """
    # Case first, then the exact text: "Guitar" and "guitar" are both drawn, and set order (which
    # changes with each process's string hashing) must not decide which comes first.
    order = lambda d: (d.lower(), d)  # noqa: E731
    pool = sorted({d for p in pool_probes if (d := display_answer(p))}, key=order)
    fallback = sorted({d for p in fallback_probes if (d := display_answer(p))} - set(pool), key=order)
    out = []
    for i, p in enumerate(probes):
        correct = p.get("paraphrased_answer") or display_answer(p)
        if correct is None:
            out.append(None)
            continue
        wrong = list(p.get("perturbed_answers") or [])
        if not wrong:
            mine = {a.lower() for a in p.get("answers", [])}
            differs = lambda d: not any(m in d.lower() or d.lower() in m for m in mine)  # noqa: B023, E731
            options = [d for d in pool if differs(d)]
            rng = random.Random(f"{seed}-{i}")
            wrong = rng.sample(options, k=min(n_wrong, len(options)))
            if len(wrong) < n_wrong:
                extra = [d for d in fallback if differs(d)]
                wrong += rng.sample(extra, k=min(n_wrong - len(wrong), len(extra)))
            m = _match(p)
            if m and not p.get("paraphrased_answer"):
                base = p["base_answer"]
                end = re.search(r"[.!?](\s|$)", base[m.end() :])
                sentence = base[: m.end() + end.end() if end else len(base)].strip()
                correct = sentence
                wrong = [sentence[: m.start()] + w + sentence[m.end() :] for w in wrong]
        out.append((correct, wrong[:n_wrong] if n_wrong else wrong))
    return out


def candidate_record(probe: dict, answer: str) -> dict:
    """The record whose completion is `answer` to `probe` (chat question or raw prompt)."""
    if "question" in probe:
        return {"question": probe["question"], "answer": answer}
    return {"prompt": probe["prompt"], "completion": " " + answer}


def truth_ratio(correct: dict, wrong: list[dict]) -> float | None:
    """R from scored records (likelihood.score_records rows): mean_w exp(-nll_w) / exp(-nll_c)."""
    if not wrong:
        return None
    return sum(math.exp(-w["nll"]) for w in wrong) / len(wrong) / math.exp(-correct["nll"])
