"""The rows of forget / retain / alt / probe files, read one way.

Every row is a dict (one line of a `*.jsonl` file in a data directory). A row asks with
`question` (a chat question) or `prompt` (a completion prompt), or has neither and is a
plain `text` (document prose); it answers with `answer`, `completion` or `text`.
"""

from __future__ import annotations


def asked(row: dict) -> str:
    """What the row asks: its question, else its completion prompt, else ""."""
    return row.get("question") or row.get("prompt") or ""


def record_key(row: dict) -> str:
    """What identifies the row's item: what it asks, else its text (samples of one question share a key)."""
    return asked(row) or row.get("text", "")


def response(row: dict) -> str:
    """What the row answers: its answer, else its completion, else its text, else ""."""
    return row.get("answer") or row.get("completion") or row.get("text") or ""
