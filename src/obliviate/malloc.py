"""Whether freed memory stays in the process or goes back to the system, for the length of a block (glibc).

PyTorch has no caching allocator on a CPU: every tensor is a `malloc` and a `free`. glibc serves
blocks above its mmap threshold (32 MB at most) from fresh mappings and unmaps them when they are
freed, and hands the top of its heap back once it is free. A training step or a decoding loop
allocates the same large buffers again and again (the tied head's bf16 weight and its gradient,
the embedding gradient, logits, caches), so each of them page-faults on every page, every time.
On the 2-core CPU a `ga` step went from 1.13-1.61 s to 0.86-0.88 s with freed memory kept, and an
evaluation of the embedded model from 33-39 s to 29 s (docs/PERFORMANCE.md, "The allocator").

Three modes:
- "keep": no mappings for single blocks and no trimming, so freed blocks stay resident and serve
  later allocations (which free block serves which is the heap's choice: a buffer allocated again
  and again faults in once or twice, then never; tests/test_malloc.py). The process's resident set
  stays at its peak instead of shrinking after it. The training loop (but with bf16 weights, see
  engine/trainer.py), the evaluation, the data stage and the command line run in it;
- "release": blocks above 64 KB are mapped and unmapped when freed, so they leave the resident set
  at once (`--low-memory`); every large allocation becomes a system call and page faults;
- "default": about where glibc's own adaptive thresholds settle; leaving "keep" for it gives the
  kept memory back (`malloc_trim`).

Elsewhere (another C library, macOS, Windows) the block runs unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from functools import lru_cache

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4

MODES: dict[str, tuple[tuple[int, int], ...]] = {
    "keep": ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)),
    "release": ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 64 << 10), (M_TRIM_THRESHOLD, 128 << 10), (M_TOP_PAD, 0)),
    "default": (
        (M_MMAP_MAX, 65536),
        (M_MMAP_THRESHOLD, 32 << 20),
        (M_TRIM_THRESHOLD, 64 << 20),
        (M_TOP_PAD, 128 << 10),
    ),
}
_active = ["default"]  # the mode in force, innermost last


@lru_cache(maxsize=1)
def _libc():
    """glibc's allocator controls, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        getattr(libc, "gnu_get_libc_version")  # noqa: B009  (glibc only: other C libraries have no such mallopt)
        return libc
    except (OSError, AttributeError):
        return None


def mode() -> str:
    """The mode in force."""
    return _active[-1]


def _apply(libc, name: str) -> None:
    for param, value in MODES[name]:
        libc.mallopt(param, value)
    if name != "keep":
        libc.malloc_trim(0)  # what "keep" held goes back now


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """Run a block in allocator mode `name` ("keep", "release" or "default"); the mode in force before
    comes back after it. Nested blocks are fine."""
    if name not in MODES:
        raise ValueError(f"allocator mode {name!r} is not one of {sorted(MODES)}")
    libc = _libc()
    before = mode()
    if libc is not None and name != before:
        _apply(libc, name)
    _active.append(name)
    try:
        yield
    finally:
        _active.pop()
        if libc is not None and name != before:
            _apply(libc, before)
