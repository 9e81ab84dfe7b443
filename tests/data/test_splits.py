"""Probe splits: deterministic, stratified, disjoint, both non-empty per kind; old data reads as evaluation."""

import pytest

from obliviate.data.splits import SPLITS, assign_splits, probe_split, split_counts


def _probes(n_target=20, n_neighbour=10, n_general=30):
    rows = [{"kind": "target", "question": f"t{i}?", "base_hit": i % 3 == 0} for i in range(n_target)]
    rows += [{"kind": "neighbour", "question": f"n{i}?", "base_hit": i % 2 == 0} for i in range(n_neighbour)]
    rows += [{"kind": "general", "question": f"g{i}?", "base_hit": i % 4 != 0} for i in range(n_general)]
    return rows


def test_every_probe_gets_one_split_and_the_same_seed_gives_the_same_splits():
    a, b, c = _probes(), _probes(), _probes()
    assign_splits(a, 0.3, seed=0)
    assign_splits(b, 0.3, seed=0)
    assign_splits(c, 0.3, seed=1)
    assert all(p["split"] in SPLITS for p in a)
    assert [p["split"] for p in a] == [p["split"] for p in b]
    assert [p["split"] for p in a] != [p["split"] for p in c]


def test_splits_are_stratified_by_kind_and_base_hit():
    """20 target probes, 7 known (i % 3 == 0): round(7 * 0.3) = 2 known and round(13 * 0.3) = 4 unknown
    go to validation."""
    probes = _probes()
    assign_splits(probes, 0.3, seed=0)
    val = [p for p in probe_split(probes, "validation") if p["kind"] == "target"]
    assert sum(p["base_hit"] for p in val) == 2 and sum(not p["base_hit"] for p in val) == 4
    counts = split_counts(probes)
    assert counts["probes.validation.target"] == 6 and counts["probes.evaluation.target"] == 14
    assert counts["probes.validation.target_known"] == 2 and counts["probes.evaluation.target_known"] == 5
    assert counts["probes.validation.general"] + counts["probes.evaluation.general"] == 30


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_small_kind_still_has_a_probe_in_each_split(n):
    probes = _probes(n_target=n, n_neighbour=n, n_general=n)
    assign_splits(probes, 0.1, seed=0)
    for kind in ("target", "neighbour", "general"):
        for split in SPLITS:
            assert any(p["kind"] == kind for p in probe_split(probes, split)), (kind, split)


def test_validation_and_evaluation_are_disjoint_and_cover_every_probe():
    probes = _probes()
    assign_splits(probes, 0.3, seed=0)
    val, ev = probe_split(probes, "validation"), probe_split(probes, "evaluation")
    assert not {p["question"] for p in val} & {p["question"] for p in ev}
    assert len(val) + len(ev) == len(probes)


def test_rows_without_a_split_are_evaluation_probes():
    rows = [{"kind": "general", "question": "a?"}, {"kind": "general", "question": "b?", "split": "validation"}]
    assert probe_split(rows, "evaluation") == rows[:1]
    assert probe_split(rows, "validation") == rows[1:]
    with pytest.raises(ValueError, match="unknown probe split 'test'"):
        probe_split(rows, "test")


def test_a_zero_fraction_puts_every_probe_in_evaluation():
    probes = _probes()
    assign_splits(probes, 0.0, seed=0)
    assert probe_split(probes, "validation") == []


def test_known_counts_per_split_and_domain():
    from obliviate.data.known import known_counts

    rows = [
        {"kind": "general", "domain": "science", "split": "validation", "base_hit": True},
        {"kind": "general", "domain": "science", "split": "evaluation", "base_hit": False},
        {"kind": "neighbour", "base_hit": True},
    ]
    c = known_counts(rows)
    assert c["general.science.known"] == 1 and c["general.science.total"] == 2
    assert c["general.validation.known"] == 1 and c["general.evaluation.known"] == 0
    assert c["neighbour.evaluation.known"] == 1 and c["neighbour.all.total"] == 1
