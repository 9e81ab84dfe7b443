"""Several training processes: `accelerate launch --num_processes N -m obliviate ...` (or torchrun).

Every process runs the same command. The training steps run in all of them, each on its own shard
of every record stream, with gradients averaged by accelerate (DDP; FSDP or DeepSpeed with their
configs, configs/accelerate/); everything else (the data stage, evaluations, the files of a run)
happens in the main process alone while the others wait. One process is the ordinary case: every
function here then does nothing more than a plain call would.
"""

from __future__ import annotations

from datetime import timedelta

import torch
from accelerate import PartialState

from obliviate.errors import UserError

# How long a process waits for the others at a barrier: the main process builds data and evaluates alone.
WAIT = timedelta(hours=24)


def processes() -> PartialState:
    """accelerate's process state: initialises the process group (if the launcher set one up) on first call.

    Without a GPU the processes are CPU processes that talk over gloo: accelerate takes them as such only
    when told (`cpu`), else a launch on a CPU machine would give N independent single processes."""
    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def shard(records: list[dict], rank: int, world: int, name: str) -> list[dict]:
    """Process `rank`'s records out of `world`: every world-th record from the rank-th, so the shards are disjoint,
    cover `records` and differ in size by at most one. UserError when a process would get none."""
    if world == 1:
        return records
    if len(records) < world:
        raise UserError(
            f"The {name} data has {len(records)} records, fewer than the {world} training processes; "
            "build more data or launch fewer processes."
        )
    return records[rank::world]
