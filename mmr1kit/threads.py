"""The torch thread count of a CPU run: the same for every entry point.

The training notebook sets one thread (`torch.set_num_threads(1)`): for the tiny models a CPU trains, one thread is
faster than several, and on a shared machine several threads that wait on each other are much slower
(`benchmarks/README.md`, "Entry points": `python -m mmr1kit.train` ran 7.7 s a step with every thread against 0.65 s
with one). `MMR1Trainer` applies the same choice, so the module entry point and the Python API are as fast as the
notebook. `OMP_NUM_THREADS`, when set, is the user's choice and is kept (torch reads it at start-up).
"""

import logging
import os

logger = logging.getLogger(__name__)

CPU_THREADS = 1


def pick_threads(use_cpu: bool) -> int:
    """Set torch's intra-op threads for a run on the CPU (`CPU_THREADS` unless `OMP_NUM_THREADS` is set); return the
    number in use. A run on GPUs is left as it is."""
    import torch

    if use_cpu and not os.environ.get("OMP_NUM_THREADS") and torch.get_num_threads() != CPU_THREADS:
        logger.info("torch threads: %d -> %d (faster for small models on CPUs; set OMP_NUM_THREADS to choose)",
                    torch.get_num_threads(), CPU_THREADS)
        torch.set_num_threads(CPU_THREADS)
    return torch.get_num_threads()
