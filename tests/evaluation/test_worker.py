"""The evaluation's second process: values and errors come back, and threads are given back."""

import os

import pytest
import torch

from obliviate.evaluation import worker

pytestmark = pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(),
                                reason="the second process is forked")


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
