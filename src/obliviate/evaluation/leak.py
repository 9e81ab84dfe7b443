"""Does an answer reveal a fact? Word-boundary matching of expected answers or target keywords."""

from __future__ import annotations

import re


def _contains(text: str, term: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(term.lower()) + r"(?![a-z0-9])", text.lower()) is not None


def reveals(answer: str, expected: list[str], keywords: list[str] = (), question: str = "") -> bool:
    """True if `answer` contains one of `expected`.

    A probe with no expected answers falls back to the target `keywords`, counting
    only those the question itself does not contain (echoing the question is not
    knowledge).
    """
    if expected:
        return any(_contains(answer, e) for e in expected)
    return any(_contains(answer, k) and not _contains(question, k) for k in keywords)
