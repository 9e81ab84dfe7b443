"""How generation and likelihood scoring run: the optimised paths, each of which can be turned off.

Every switch, off, gives the plain computation its optimised path must equal (up to float
rounding in bf16); the tests check each equality and benchmarks/evaluation.py times each
switch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceOptions:
    # Greedy decoding in models.generate.greedy_decode, where finished rows leave the batch; off: model.generate's loop.
    greedy_loop: bool = True
    # A batch's common prompt opening runs once and prompts run unpadded (models.prefix); off: every row runs its
    # whole prompt, left padded.
    share_prefix: bool = True
    # Grouped attention products for inference on a CPU (models.attention.cpu_attention); off: transformers' SDPA.
    cpu_attention: bool = True


DEFAULT = InferenceOptions()
