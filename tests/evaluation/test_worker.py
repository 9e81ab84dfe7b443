"""The evaluation's second process: values and errors come back, and threads are given back."""

import os

import pytest
import torch

from obliviate.evaluation import worker

pytestmark = pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="the second process is forked"
)


def test_a_forked_value_comes_back_and_threads_are_restored():
    threads = torch.get_num_threads()
    forked = worker.Forked(lambda: {"threads": torch.get_num_threads(), "sum": torch.arange(4).sum().item()})
    assert torch.get_num_threads() == max(1, threads - 1)  # this process leaves the child its core
    assert forked.result() == {"threads": 1, "sum": 6}
    assert torch.get_num_threads() == threads


def test_errors_in_the_child_come_back_with_a_clear_sentence():
    def fails():
        raise ValueError("no such probe")

    with pytest.raises(ValueError, match="no such probe"):
        worker.Forked(fails).result()
    with pytest.raises(RuntimeError, match="ended without a result .*fork=false"):
        worker.Forked(lambda: os._exit(3)).result()


def test_parts_go_where_they_end_sooner_most_work_first():
    """Two threads: each side one. This process starts with 28 (answers 9 + likelihoods 19); relearn (17) and
    prompting (15) go to the idle second process (17, then 32 against 28 + 15); quantize:8 here (28 + 7 = 35
    against 39), quantize:4 there (39 against 42). A tie goes to the second process."""
    from obliviate.evaluation.attacks import split_attacks

    work = {"answers": 9, "likelihoods": 19, "prompting": 15, "quantize:8": 7, "quantize:4": 7, "relearn": 17}
    parts = ["prompting", "quantize:8", "quantize:4", "relearn"]
    assert split_attacks(parts, work, threads=2) == (["prompting", "quantize:4", "relearn"], ["quantize:8"])
    alone = {"answers": 0, "likelihoods": 0, "prompting": 1}
    assert split_attacks(["prompting"], alone, threads=2) == (["prompting"], [])
    # Sixteen threads: this process, with fifteen, ends every part sooner than a second process with one.
    assert split_attacks(parts, work, threads=16) == ([], parts)
    # Three: this process works twice as fast; relearn goes there (17 against (28 + 17) / 2), prompting stays.
    there, here = split_attacks(parts, work, threads=3)
    assert "relearn" in there and "prompting" in here
