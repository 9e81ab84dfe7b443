"""Atomic file and directory writes, and jsonl reading with useful errors.

Every file obliviate writes goes through here, so an interrupted run never
leaves a half-written file or model directory behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from obliviate.errors import UserError


def _umask() -> int:
    """The process's umask, read without setting it where the system allows (setting it races other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: str | Path, folder: bool = False) -> None:
    """Give `path` the permissions a plainly created file (or folder) would have under the umask:
    temporary files are created private (0600, 0700), and outputs are meant to be shared."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        shareable(tmp)
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
        shareable(tmp, folder=True)
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


def restore_replaced(path: str | Path) -> bool:
    """Undo what a kill between atomic_dir's two renames leaves: `path` absent and its previous, complete
    content set aside as .NAME.old, which goes back to `path`. Returns whether it did. Assumes no
    atomic_dir(path) is under way (the caller holds the folder)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if path.exists() or path.is_symlink() or not old.is_dir():
        return False
    os.replace(old, path)
    return True


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


LOCK_NAME = ".obliviate.lock"  # in a run folder while a process works in it (run_lock)


def check_writable(path: Path, flag: str) -> None:
    """Check that `path` (a folder, maybe absent) could be created and written: every part of its name fits
    the file system, and its nearest existing folder is writable. Raises UserError naming `flag` otherwise."""
    path = Path(os.path.abspath(path))
    existing = path
    while not existing.exists():
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise UserError(f"{existing} is a file, so {flag} {path} cannot be created in it; choose another {flag}.")
    limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    long = next((part for part in path.parts if len(part.encode()) > limit), None)
    if long is not None:
        raise UserError(
            f"The name {long[:40]}... in {flag} is {len(long.encode())} bytes, more than the {limit} the file "
            f"system allows; choose a shorter {flag}."
        )
    if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing} is not writable, so {flag} {path} cannot be written; choose another {flag}.")


def _entries(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name != LOCK_NAME]


def check_out_dir(out: Path, marker: str, kind: str, held: str | None = None, *, overwrite: bool = False) -> bool:
    """Check that `out` (an --out directory, maybe absent) may receive obliviate's output; returns whether it
    already holds some, i.e. is a non-empty directory with the `marker` file.

    Raises UserError, leaving `out` untouched, if it is a file or cannot be written (check_writable); if
    it is a non-empty directory (the lock file aside) without `marker` (not `kind`, e.g. "an obliviate
    run": never written into or replaced); or if it holds output, `held` is given (e.g. "data; pass
    --overwrite to rebuild it") and not `overwrite`.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, not a directory; pass a directory for --out.")
    check_writable(out, "--out")
    if not out.exists() or not _entries(out):
        return False
    if not (out / marker).is_file():
        raise UserError(f"{out} already exists and is not {kind}; choose another --out or empty it.")
    if held is not None and not overwrite:
        raise UserError(f"{out} already holds {held}.")
    return True


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the advisory lock of `folder` (created if absent) while the block runs, so that no two
    processes work in one folder at once.

    The lock is the kernel's (flock) on FOLDER/.obliviate.lock, which holds the owner's process id. The
    kernel releases it when its process ends, however it ends, so a lock file left by a killed process
    is simply taken over. On exit the lock file is removed, and so are the folders this call created
    (`folder` and missing parents) if nothing else was written into them. Raises UserError, naming the
    process, if a live one holds it.
    """
    created = [folder, *folder.parents]
    created = created[: next(i for i, p in enumerate(created) if p.exists())]  # the folders made here
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise UserError(
                f"{folder} is in use by another obliviate run (process {owner or 'unknown'}); wait for it to "
                "finish or stop it, or choose another --out."
            ) from None
        # The holder before us may have removed the file between our open and our lock: lock the file
        # that is there now, not a removed one.
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        with contextlib.suppress(OSError):
            for made in created:
                made.rmdir()  # only if empty: stops at the first that holds something
