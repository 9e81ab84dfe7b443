"""Keep held-out probes held out: near-duplicate detection between probes and training text.

Two checks, both on lowercased word tokens:

- a shared n-gram (8 words by default) between a probe and any training text;
- ROUGE-L F-measure (``rouge-score``) between a probe and any training prompt.

ROUGE-L is only computed where it can reach the threshold: the LCS of two token
sequences is at most their bag-of-words overlap, so pairs whose unigram F1 is
below the threshold are skipped without scoring.
"""

from __future__ import annotations

import re
from collections import Counter

from rouge_score import rouge_scorer


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def ngrams(ws: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def too_close(a: str, b: str, n: int = 6, jaccard: float = 0.6) -> bool:
    """Two questions are too close to keep both if they share an n-gram or most of their words."""
    wa, wb = words(a), words(b)
    if wa == wb or ngrams(wa, n) & ngrams(wb, n):
        return True
    sa, sb = set(wa), set(wb)
    return bool(sa and sb) and len(sa & sb) / len(sa | sb) >= jaccard


def _rouge_bag(text: str) -> Counter:
    # rouge-score's own tokenization (lowercase, runs of [a-z0-9]), so the bound is exact.
    return Counter(re.findall(r"[a-z0-9]+", text.lower()))


def _bag_f1(a: Counter, b: Counter) -> float:
    common = sum((a & b).values())
    if not common:
        return 0.0
    p, r = common / sum(a.values()), common / sum(b.values())
    return 2 * p * r / (p + r)


class Overlap:
    """Index of training texts; `violations(probe)` says which training items a probe is too close to."""

    def __init__(self, n: int = 8, max_rouge_l: float = 0.8):
        self.n, self.max_rouge_l = n, max_rouge_l
        self.scorer = rouge_scorer.RougeScorer(["rougeL"])
        self._grams: dict[tuple[str, ...], set[int]] = {}
        self._prompts: list[tuple[int, str, Counter]] = []

    def add(self, idx: int, prompt: str, body: str = "") -> None:
        """Index training item `idx`: its prompt (ROUGE-L and n-grams) and body text (n-grams)."""
        for text in (prompt, body):
            for g in ngrams(words(text), self.n):
                self._grams.setdefault(g, set()).add(idx)
        if prompt:
            self._prompts.append((idx, prompt, _rouge_bag(prompt)))

    def violations(self, probe: str) -> tuple[set[int], float]:
        """(training items that share an n-gram or reach the ROUGE-L limit, highest ROUGE-L seen)."""
        ws = words(probe)
        hit = set().union(*(self._grams.get(g, set()) for g in ngrams(ws, self.n)))
        bag, best = _rouge_bag(probe), 0.0
        for idx, prompt, pbag in self._prompts:
            if _bag_f1(bag, pbag) < min(best, self.max_rouge_l):
                continue
            score = self.scorer.score(prompt, probe)["rougeL"].fmeasure
            best = max(best, score)
            if score >= self.max_rouge_l:
                hit.add(idx)
        return hit, best
