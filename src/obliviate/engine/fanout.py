"""Independent runs fanned out as Ray tasks (`obliviate compare --ray`, `obliviate bench --ray`).

Ray is an optional extra (`pip install 'obliviate[ray]'`), imported only here and only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from obliviate.errors import UserError


def ray_map(fn: Callable[..., object], calls: dict[str, tuple], address: str) -> dict[str, object]:
    """{name: fn(*calls[name])} for every name, each call a Ray task, on the Ray cluster at `address`
    ("local": a Ray instance started on this machine for the duration).

    Each task declares one GPU where this machine has CUDA, else an equal share of the cluster's CPUs (at
    least 1), which is also its PyTorch thread count. `fn` and its arguments travel by pickle, so what a task
    writes must go to a filesystem every node sees. UserError when Ray is not installed."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray; install it with `pip install 'obliviate[ray]'`.") from None
    if not calls:
        return {}
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    try:
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // len(calls))
        gpu = torch.cuda.is_available()
        task = ray.remote(_task).options(num_gpus=1 if gpu else 0, num_cpus=1 if gpu else threads)
        pending = {name: task.remote(fn, args, threads) for name, args in calls.items()}
        return {name: ray.get(ref) for name, ref in pending.items()}
    finally:
        if started:
            ray.shutdown()


def _task(fn: Callable[..., object], args: tuple, threads: int) -> object:
    torch.set_num_threads(threads)
    return fn(*args)
