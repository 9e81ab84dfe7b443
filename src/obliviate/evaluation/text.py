"""Text metrics on generated answers: ROUGE-L (rouge-score), distinct-n, repetition and gibberish."""

from __future__ import annotations

import re
from functools import lru_cache

WORD = re.compile(r"[A-Za-z0-9']+")


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_recall(prediction: str, reference: str) -> float | None:
    """ROUGE-L recall of `prediction` against `reference` (None when the reference is empty)."""
    if not WORD.search(reference or ""):
        return None
    return _scorer().score(reference, prediction).get("rougeL").recall


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def distinct_n(texts: list[str], n: int) -> float | None:
    grams = [tuple(ws[i : i + n]) for ws in map(_words, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repeats(text: str, n: int = 3) -> bool:
    """Some word n-gram occurs twice in `text`."""
    ws = _words(text)
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    return len(set(grams)) < len(grams)


def is_gibberish(text: str) -> bool:
    """Not language: under 60 % letters among non-space characters, a word repeated 4+ times in
    a row, or a 'word' longer than 25 letters. Empty answers are not gibberish (they are refusals)."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return False
    if sum(c.isalpha() for c in chars) / len(chars) < 0.6:
        return True
    ws = _words(text)
    if any(len(w) > 25 for w in ws):
        return True
    return any(ws[i] == ws[i + 1] == ws[i + 2] == ws[i + 3] for i in range(len(ws) - 3))
