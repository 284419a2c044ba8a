"""Sizing the math libraries' thread pools so a predict never fights the event loop for the cores.

OpenMP's thread count is per calling thread, so a limit set in one thread
does not reach the others; and a model loaded later may bring its own OpenMP
or BLAS runtime. `ThreadBudget.ensure` therefore runs in whichever thread is
about to predict (a worker thread, or the event loop for a fast predict: see
`loopstack.serving.batcher`) and re-applies the limit (through threadpoolctl)
whenever a model was loaded since that thread last applied it. The check costs
one attribute read when nothing changed; re-applying takes a few milliseconds,
once per thread after each model load.
"""

from __future__ import annotations

import os
import threading

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class ThreadBudget:
    """Math-library threads allowed per predict worker thread.

    Examples
    --------
    >>> budget = ThreadBudget(1)
    >>> budget.ensure()
    >>> budget.applied()
    True
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.generation = 0
        self._local = threading.local()

    def bump(self) -> None:
        """Note that a model (and maybe a new runtime) was loaded: threads re-apply the limit."""
        self.generation += 1

    def ensure(self) -> None:
        """Apply the limit in the calling thread if it has not seen the current generation."""
        if getattr(self._local, "generation", -1) == self.generation:
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=self.threads)  # stays in force: only a `with` block reverts it
        self._local.generation = self.generation

    def applied(self) -> bool:
        """Whether the calling thread runs under the current limit."""
        return getattr(self._local, "generation", -1) == self.generation


def limit_process_threads(threads: int) -> None:
    """Set the thread environment variables before math libraries load (the CLI calls this first)."""
    for name in THREAD_ENV:
        os.environ.setdefault(name, str(threads))
