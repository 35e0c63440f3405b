"""Helper threads that join a kernel's work only if they wake in time.

numba's OpenMP regions end in a barrier: with passive (sleeping) workers on a busy 2-vCPU
machine the calling thread finishes the work and then waits for a worker that wakes after the
op is done, so two threads ran a conv no faster than one (0.94-1.00x). Here the calling thread
offers the job to sleeping helper threads, runs the job's work loop itself (a ``nogil`` kernel
claiming items from an atomic counter), and afterwards waits only for items a helper has
already claimed, never for a helper to wake: a helper that wakes late finds the counter
exhausted (or the job withdrawn) and goes back to sleep.

A helper may spin for the next job for at most ``SPIN_US`` microseconds after finishing one
(env HETERO_CPU_SPIN_US; default 0: it sleeps at once), inside a ``nogil`` numba loop of atomic
loads and ``pause``, so it never takes the GIL while it waits (an earlier linger polled from
Python, yielding the CPU, and took the GIL back from the thread dispatching the next op). Off by
default because it measured no better: in-process A/B runs on a 2-vCPU Zen 4 VM shared with other
work (load 0.7-2.4) gave 0.91-1.09x of no spin at 50 us and 0.75-1.12x at 150 us end to end.

Each item is computed the same whichever thread runs it, so results do not depend on timing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numba
import numba.np.ufunc.parallel
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

log = logging.getLogger(__name__)

#: microseconds a helper spins for the next job after finishing one (0: it sleeps at once)
SPIN_US = float(os.environ.get("HETERO_CPU_SPIN_US", "0"))

#: the calling thread polls the done counter this many times before yielding its CPU per poll
_SPIN_POLLS = 2000


@intrinsic
def _load_acquire(typingctx, addr):
    """The int64 at ``addr``, loaded atomically (acquire order): LLVM may not hoist it out of a loop."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(types.intp), codegen


@intrinsic
def _pause(typingctx):
    """x86 ``pause``: a spin-wait hint that frees the core's resources between polls."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def _spin_for_change(generation, seen, polls):  # pragma: no cover - compiled
    """Poll ``generation[0]`` up to ``polls`` times (``pause`` between), the GIL released; True
    once it differs from ``seen``."""
    addr = generation.ctypes.data
    for _ in range(polls):
        if _load_acquire(addr) != seen:
            return True
        _pause()
    return False


def _polls_per_us() -> float:
    """How many polls of ``_spin_for_change`` take a microsecond here (timed once, on a helper)."""
    flag = np.zeros(1, np.int64)
    _spin_for_change(flag, 0, 10)  # compile or load from the cache
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        _spin_for_change(flag, 0, 5000)
        best = min(best, time.perf_counter() - start)
    return 5000 / max(best * 1e6, 1e-3)


class HelperPool:
    """Daemon threads taking the latest offered job; one pool per process (``HELPERS``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._generation = 0
        self._threads: list[threading.Thread] = []
        #: the generation, for helpers spinning without the lock (``_spin_for_change``)
        self._posted = np.zeros(1, np.int64)
        self._polls_per_us: float | None = None

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
            if SPIN_US > 0:
                if self._polls_per_us is None:
                    self._polls_per_us = _polls_per_us()
                _spin_for_change(self._posted, seen, int(SPIN_US * self._polls_per_us))

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
            self._posted[0] = self._generation
            self._cond.notify(helpers)

    def withdraw(self, job: Callable[[], None]) -> None:
        """The calling thread ran out of items: helpers not yet awake need not run ``job``."""
        with self._cond:
            if self._job is job:
                self._job = None


_count_getter: Callable[[], int] | None = None


def thread_count() -> int:
    """The calling thread's numba thread count, as ``numba.get_num_threads`` gives it but
    without its launch check and lock on every call (1.6 us a call here, 0.2 us raw; a plan asks
    once per kernel). The first call launches numba's threads, as the public getter would."""
    global _count_getter
    if _count_getter is None:
        numba.get_num_threads()  # launches the threading layer (after start_threads_passive)
        _count_getter = getattr(numba.np.ufunc.parallel, "_get_num_threads", None) or numba.get_num_threads
    return int(_count_getter())


def set_thread_count(threads: int) -> None:
    """``numba.set_num_threads(threads)`` for a count already known to lie in 1..NUMBA_NUM_THREADS
    (a plan's, checked when its device opened), without the public setter's checks (2.2 us a call)."""
    thread_count()  # numba's threads launched, the raw getter chosen
    raw = getattr(numba.np.ufunc.parallel, "_set_num_threads", None)
    if raw is None or _count_getter is numba.get_num_threads:
        numba.set_num_threads(threads)
    else:
        raw(threads)


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
