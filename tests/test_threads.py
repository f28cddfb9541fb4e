"""mmr1kit.threads: every entry point trains on the CPU with the notebook's thread count."""

import torch

from mmr1kit.threads import CPU_THREADS, pick_threads


def test_cpu_runs_use_the_notebooks_thread_count_unless_omp_num_threads_says_otherwise(monkeypatch):
    previous = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert pick_threads(use_cpu=False) == 2  # GPU runs: left alone
        assert pick_threads(use_cpu=True) == CPU_THREADS == torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice
        torch.set_num_threads(2)
        assert pick_threads(use_cpu=True) == 2
    finally:
        torch.set_num_threads(previous)
