"""The two probe splits: validation (read while tuning and selecting) and evaluation (read once, at the end).

Every row of probes.jsonl carries ``split``. Neither split is ever trained on: the
held-out check in the builder covers every probe, whichever split it is in.
"""

from __future__ import annotations

import random
from collections import defaultdict

SPLITS = ("validation", "evaluation")


def probe_split(rows: list[dict], split: str) -> list[dict]:
    """The probe rows of one split, in file order. A row without ``split`` (a data directory
    built before splits existed) is an evaluation probe. Raises ValueError for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"unknown probe split {split!r}; expected one of {SPLITS}")
    return [r for r in rows if r.get("split", "evaluation") == split]


def assign_splits(probes: list[dict], val_fraction: float, seed: int) -> None:
    """Set ``split`` on every probe (in place), stratified by (kind, base_hit).

    Each stratum sends round(n * val_fraction) of its probes, drawn with a generator
    seeded by `seed` and the stratum, to validation; the rest go to evaluation. Stratifying
    by base_hit keeps the share of known probes the same in both splits. A kind with at
    least two probes then gets at least one in each split, when val_fraction > 0.
    Same probes, fraction and seed: same splits.
    """
    strata: dict[tuple[str, bool], list[int]] = defaultdict(list)
    for i, p in enumerate(probes):
        p["split"] = "evaluation"
        strata[(p["kind"], bool(p.get("base_hit")))].append(i)
    for (kind, hit), idx in strata.items():
        random.Random(f"split-{seed}-{kind}-{hit}").shuffle(idx)
        for i in idx[: int(len(idx) * val_fraction + 0.5)]:
            probes[i]["split"] = "validation"
    if val_fraction <= 0:
        return
    for kind in {p["kind"] for p in probes}:
        rows = [p for p in probes if p["kind"] == kind]
        for missing, other in (("validation", "evaluation"), ("evaluation", "validation")):
            have = [p for p in rows if p["split"] == other]
            if len(rows) >= 2 and len(have) == len(rows):
                random.Random(f"split-{seed}-{kind}-{missing}").choice(have)["split"] = missing


def split_counts(probes: list[dict]) -> dict[str, int]:
    """Manifest counts per split: ``probes.<split>.<kind>`` and ``probes.<split>.<kind>_known`` (base_hit)."""
    counts = {}
    for split in SPLITS:
        rows = probe_split(probes, split)
        for kind in ("target", "neighbour", "general"):
            of_kind = [p for p in rows if p["kind"] == kind]
            counts[f"probes.{split}.{kind}"] = len(of_kind)
            counts[f"probes.{split}.{kind}_known"] = sum(bool(p.get("base_hit")) for p in of_kind)
    return counts
