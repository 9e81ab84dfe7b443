import resource
import subprocess
import sys

import pytest

from obliviate import malloc

glibc = pytest.mark.skipif(malloc._libc() is None, reason="the allocator modes act on glibc only")


class Recorder:
    """Stands in for glibc: records the mallopt and malloc_trim calls."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(malloc, "_libc", lambda: rec)
    return rec


def test_nested_modes_come_back_in_order_and_leaving_keep_gives_memory_back(recorder):
    assert malloc.mode() == "default"
    with malloc.policy("keep"):
        assert recorder.calls == list(malloc.MODES["keep"])  # no trim on entering keep
        with malloc.policy("release"):
            assert malloc.mode() == "release"
        assert recorder.calls[-len(malloc.MODES["keep"]) :] == list(malloc.MODES["keep"])
        recorder.calls.clear()
        with malloc.policy("keep"):  # already in force: nothing to set
            pass
        assert recorder.calls == []
    assert malloc.mode() == "default"
    assert recorder.calls == [*malloc.MODES["default"], ("trim", 0)]


def test_mode_comes_back_after_an_exception_and_works_as_a_decorator(recorder):
    @malloc.policy("keep")
    def fails():
        assert malloc.mode() == "keep"
        raise KeyError("x")

    with pytest.raises(KeyError):
        fails()
    assert malloc.mode() == "default"
    assert recorder.calls[-1] == ("trim", 0)


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="'fast' is not one of"):
        with malloc.policy("fast"):
            pass


# Run in a fresh process: a long test session's heap is in whatever state earlier tests left it.
_FAULTS = """
import resource, torch
import obliviate.pipeline  # what the command line loads: the heap the policy acts on in a real run
from obliviate import malloc

def faults(numel, cycles=16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):
        torch.ones(numel)  # allocated, written and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

numel = 64 << 20 >> 2  # 64 MB: above glibc's largest mmap threshold, so a fresh mapping by default
with malloc.policy("release"):
    released = faults(numel)
with malloc.policy("keep"):
    kept = faults(numel)
print(released, kept)
"""


@glibc
def test_keep_reuses_freed_blocks_and_release_gives_them_back():
    """16 blocks of 64 MB, one after the other: each page-faults afresh when freed blocks go back to the
    system; kept, only the first few do (the heap's layout decides which free block serves the next: one to
    three have been seen, depending on the machine's state), however many blocks follow."""
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True)
    released, kept = map(int, out.stdout.split())
    pages = (64 << 20) // resource.getpagesize()
    assert kept <= 4.5 * pages and kept * 3 < released  # counted in huge pages where the kernel uses them
