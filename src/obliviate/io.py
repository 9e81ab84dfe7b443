"""Atomic file and directory writes, and jsonl reading with useful errors.

Every file obliviate writes goes through here, so an interrupted run never
leaves a half-written file or model directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from obliviate.errors import UserError


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def json_line(path: str | Path, lineno: int, line: str) -> dict:
    """One jsonl line as a dict; a malformed line is reported with its file and number."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}, line {lineno} is not valid JSON ({e.msg}); fix or remove that line.") from None
    if not isinstance(row, dict):
        raise UserError(f"{path}, line {lineno} is not a JSON object; each line must be one object.")
    return row


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a jsonl file; a malformed line is reported with its number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the data stage first or pass the right directory.")
    with open(path, encoding="utf-8") as f:
        return [json_line(path, lineno, line) for lineno, line in enumerate(f, 1) if line.strip()]


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block completes.

    An exception or Ctrl-C inside the block removes the temporary directory and
    leaves any existing `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run the stage that writes it first or pass the right directory.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or delete it.") from None


def check_out_dir(out: Path, marker: str, kind: str, held: str | None = None, *, overwrite: bool = False) -> bool:
    """Check that `out` (an --out directory, maybe absent) may receive obliviate's output; returns whether it
    already holds some, i.e. is a non-empty directory with the `marker` file.

    Raises UserError, leaving `out` untouched, if it is a file; if it is a non-empty directory without
    `marker` (not `kind`, e.g. "an obliviate run": never written into or replaced); or if it holds output,
    `held` is given (e.g. "data; pass --overwrite to rebuild it") and not `overwrite`.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory; pass a directory for --out.")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not (out / marker).is_file():
        raise UserError(f"{out} already exists and is not {kind}; choose another --out or empty it.")
    if held is not None and not overwrite:
        raise UserError(f"{out} already holds {held}.")
    return True
