"""Does an answer reveal a fact? Word-boundary matching of expected answers or target keywords."""

from __future__ import annotations

import re


def terms_pattern(terms) -> re.Pattern:
    """Case-insensitive pattern for any of `terms` as whole words; terms may start or end with
    punctuation ("C++"), which a plain \\b boundary would never match."""
    alts = sorted({t.lower() for t in terms if t.strip()}, key=len, reverse=True)
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, alts)) + r")(?![a-z0-9])", re.IGNORECASE)


def _contains(text: str, term: str) -> bool:
    return terms_pattern([term]).search(text) is not None


def reveals(answer: str, expected: list[str], keywords: list[str] = (), question: str = "") -> bool:
    """True if `answer` contains one of `expected` that the question does not already contain.

    A probe with no expected answers falls back to the target `keywords`. Either
    way, a term echoed from the question is not knowledge and does not count.
    """
    terms = expected if expected else keywords
    return any(_contains(answer, t) and not _contains(question, t) for t in terms)
