"""A second process for the evaluation on a CPU: attacks run beside the probe answers and likelihoods.

On a CPU, PyTorch's threads leave cores idle whenever the work is not a large matrix product
(Python, small element-wise operations, the decoding loop), so two processes side by side
finish sooner than one with all the threads (docs/PERFORMANCE.md has the timings). The
evaluation forks one child with one thread for attacks and keeps the other threads itself
(evaluation/attacks.py: split_attacks decides which attacks go). Forking shares the loaded
models (copy on write): nothing is saved or reloaded, and in-memory models with obliviate's
hooks work as they are.

The GNU OpenMP runtime of PyTorch's Linux builds does not survive a fork with more than
one thread (the child hangs in its first parallel region), so the child always runs one
thread; this process needs two threads or more to give it one (`available`).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import traceback
from collections.abc import Callable

import torch


def available(device: torch.device) -> bool:
    """Whether `Forked` applies: a CPU model, two PyTorch threads or more (one for the child, the others
    for this process), Linux (where forking was checked; macOS system libraries are not fork-safe), and
    not already a daemon child."""
    return (
        device.type == "cpu"
        and torch.get_num_threads() >= 2
        and sys.platform.startswith("linux")
        and not multiprocessing.current_process().daemon
    )


def _child(fn: Callable[[], object], send) -> None:
    torch.set_num_threads(1)  # before anything parallel runs: see the module's docstring
    try:
        message = ("ok", fn())
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        exc.add_note("".join(traceback.format_exc()))
        message = ("error", exc)
    try:
        send.send(message)
    except (pickle.PicklingError, TypeError, AttributeError):
        send.send(("error", RuntimeError(f"The evaluation's second process failed: {message[1]!r}")))
    send.close()


class Forked:
    """fn() run in a forked child with one thread; `result()` waits for its value or raises its exception.
    While the child runs, this process keeps one thread (restored by `result` or `close`)."""

    def __init__(self, fn: Callable[[], object]):
        # Batched tokenization in this process has used the tokenizers' thread pool; this keeps the
        # child from warning that it disables it.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        context = multiprocessing.get_context("fork")
        self._recv, send = context.Pipe(duplex=False)
        self._threads = torch.get_num_threads()
        self._process = context.Process(target=_child, args=(fn, send), daemon=True)
        self._process.start()
        send.close()
        torch.set_num_threads(max(1, self._threads - 1))

    def result(self):
        try:
            status, value = self._recv.recv()
        except EOFError:
            self._process.join()
            raise RuntimeError(
                f"The evaluation's second process ended without a result (exit code "
                f"{self._process.exitcode}); rerun with --eval-set fork=false to run it in one "
                "process."
            ) from None
        finally:
            self.close()
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the child if it still runs, and give this process its threads back."""
        if self._process.is_alive():
            self._process.join(timeout=0.1)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._recv.close()
        torch.set_num_threads(self._threads)
