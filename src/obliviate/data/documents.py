"""A target's own material: documents to forget (txt / md / jsonl) and question/answer pairs (jsonl).

Files are streamed line by line, so a very large file is never read whole: passages
are cut as the text goes by and reading stops once enough have been collected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from obliviate.errors import UserError
from obliviate.io import json_line

DOC_SUFFIXES = (".txt", ".md", ".jsonl")


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"The {what} {path} does not exist; check the path.")
    if not path.is_file():
        raise UserError(f"The {what} {path} is not a file; pass a file, not a directory.")
    with open(path, "rb") as f:
        head = f.read(8192)
    if not head.strip():
        raise UserError(f"The {what} {path} is empty; give a file with text in it.")
    if b"\0" in head:
        raise UserError(f"The {what} {path} looks binary (it contains NUL bytes); give a UTF-8 text file.")


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError:
        raise UserError(f"The {what} {path} is not UTF-8 text; convert it to UTF-8 (e.g. with iconv).") from None


def _jsonl_texts(path: Path, what: str, field: str = "text") -> Iterator[str]:
    for lineno, line in _lines(path, what):
        if not line.strip():
            continue
        row = json_line(path, lineno, line)
        if not isinstance(row.get(field), str):
            raise UserError(
                f'{path}, line {lineno} has no {field!r} string; each line must be like {{"{field}": "..."}}.'
            )
        yield row[field]


def _paragraphs(path: Path, what: str) -> Iterator[str]:
    """Blank-line separated paragraphs of a text or markdown file, markup stripped."""
    buf: list[str] = []
    for _, line in _lines(path, what):
        line = line.strip()
        if path.suffix == ".md":
            line = re.sub(r"^(#+|[-*>]|\d+\.)\s*", "", line)
            line = re.sub(r"[*_`]+", "", line)
        if line:
            buf.append(line)
        elif buf:
            yield " ".join(buf)
            buf = []
    if buf:
        yield " ".join(buf)


def read_passages(paths: list[str], words_per_passage: int = 80, max_passages: int = 2000) -> list[dict]:
    """Passages of about `words_per_passage` words (cut on sentence ends) from every document.

    Returns rows {"text", "doc"}; raises UserError for a missing, empty, binary or
    malformed file, an unsupported suffix, or documents that hold no text at all.
    """
    out: list[dict] = []
    for p in paths:
        path = Path(p)
        if path.suffix.lower() not in DOC_SUFFIXES:
            raise UserError(
                f'The document {path} has an unsupported type; give .txt, .md or .jsonl (one {{"text": ...}} per line).'
            )
        _check_readable(path, "document")
        pieces = _jsonl_texts(path, "document") if path.suffix.lower() == ".jsonl" else _paragraphs(path, "document")
        cur: list[str] = []
        n_before = len(out)
        for piece in pieces:
            for sentence in re.split(r"(?<=[.!?])\s+", piece.strip()):
                cur.append(sentence)
                if sum(len(c.split()) for c in cur) >= words_per_passage:
                    out.append({"text": " ".join(cur), "doc": path.name})
                    cur = []
            if len(out) >= max_passages:
                break
        if cur and len(out) < max_passages:
            out.append({"text": " ".join(cur), "doc": path.name})
        if len(out) == n_before:
            raise UserError(f"The document {path} holds no text; give a file with prose in it.")
        if len(out) >= max_passages:
            break
    return out


def read_qa(path: str) -> list[dict]:
    """Question/answer pairs from a jsonl file: one {"question": ..., "answer": ...} per line."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise UserError(f'The QA file {path} must be .jsonl with one {{"question": ..., "answer": ...}} per line.')
    _check_readable(path, "QA file")
    rows = []
    for lineno, line in _lines(path, "QA file"):
        if not line.strip():
            continue
        row = json_line(path, lineno, line)
        if not (
            isinstance(row.get("question"), str)
            and isinstance(row.get("answer"), str)
            and row["question"].strip()
            and row["answer"].strip()
        ):
            raise UserError(f'{path}, line {lineno} needs non-empty "question" and "answer" strings.')
        rows.append({"question": row["question"].strip(), "answer": row["answer"].strip()})
    if not rows:
        raise UserError(f"The QA file {path} holds no question/answer pairs.")
    return rows
