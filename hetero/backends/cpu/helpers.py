"""Helper threads that join a kernel's work only if they wake in time.

numba's OpenMP regions end in a barrier: with passive (sleeping) workers on a busy 2-vCPU
machine the calling thread finishes the work and then waits for a worker that wakes after the
op is done, so two threads ran a conv no faster than one (0.94-1.00x). Here the calling thread
offers the job to sleeping helper threads, runs the job's work loop itself (a ``nogil`` kernel
claiming items from an atomic counter), and afterwards waits only for items a helper has
already claimed, never for a helper to wake: a helper that wakes late finds the counter
exhausted (or the job withdrawn) and goes back to sleep.

A helper does not linger after a job: polling for the next one (300 us, yielding the CPU)
measured no better in A/B runs (resnet18 3.80/3.59 vs 4.64/3.39 ms), since the helper then takes
the GIL back while the calling thread dispatches the next op.

Each item is computed the same whichever thread runs it, so results do not depend on timing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

#: the calling thread polls the done counter this many times before yielding its CPU per poll
_SPIN_POLLS = 2000


class HelperPool:
    """Daemon threads taking the latest offered job; one pool per process (``HELPERS``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._generation = 0
        self._threads: list[threading.Thread] = []

    def _loop(self) -> None:
        seen = 0
        while True:
            with self._cond:
                while self._job is None or self._generation == seen:
                    self._cond.wait()
                job, seen = self._job, self._generation
            try:
                job()
            except Exception:  # pragma: no cover - the calling thread does every item anyway
                log.exception("cpu helper thread: job failed")

    def offer(self, job: Callable[[], None], helpers: int) -> None:
        """Make ``job`` (a work loop that is safe to run late, or not at all) the one that
        ``helpers`` sleeping threads pick up when they wake."""
        with self._cond:
            while len(self._threads) < helpers:
                thread = threading.Thread(target=self._loop, name=f"hetero-cpu-helper-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()
            self._job = job
            self._generation += 1
            self._cond.notify(helpers)

    def withdraw(self, job: Callable[[], None]) -> None:
        """The calling thread ran out of items: helpers not yet awake need not run ``job``."""
        with self._cond:
            if self._job is job:
                self._job = None


HELPERS = HelperPool()
#: work items run by helper threads, and items offered to them (with more than one thread), since start
ITEMS = [0, 0]


def _after_fork() -> None:
    """A forked child has none of the parent's helper threads: start afresh."""
    global HELPERS
    HELPERS = HelperPool()


os.register_at_fork(after_in_child=_after_fork)


def share(part: Callable[..., int], args: tuple, workers: int, items: int, counter: np.ndarray,
          pool: HelperPool | None = None) -> None:
    """Run the work loop ``part(*args)`` (a nogil kernel claiming ``items`` items from
    ``counter[0]`` and counting finished ones in ``counter[1]``) on the calling thread, offered
    to ``workers - 1`` helpers of ``pool`` (default ``HELPERS``); return once every item is done."""
    if workers <= 1:
        part(*args)
        return
    pool = HELPERS if pool is None else pool

    def job() -> None:
        ITEMS[0] += part(*args)

    pool.offer(job, workers - 1)
    part(*args)
    pool.withdraw(job)
    wait_done(counter, items)
    ITEMS[1] += items


def wait_done(counter: np.ndarray, items: int) -> None:
    """Wait until ``counter[1]`` (items finished, by any thread) reaches ``items``: only items a
    helper claimed and is still computing remain once the calling thread's loop has returned."""
    polls = 0
    while counter[1] < items:
        polls += 1
        if polls > _SPIN_POLLS:
            time.sleep(0)
