"""Helper threads that join a kernel's work only if they wake in time.

numba's OpenMP regions end in a barrier: with passive (sleeping) workers on a busy 2-vCPU
machine the calling thread finishes the work and then waits for a worker that wakes after the
op is done, so two threads ran a conv no faster than one (0.94-1.00x). Here the calling thread
offers the job to sleeping helper threads, runs the job's work loop itself (a ``nogil`` kernel
claiming items from an atomic counter), and afterwards waits only for items a helper has
already claimed, never for a helper to wake: a helper that wakes late finds the counter
exhausted (or the job withdrawn) and goes back to sleep.

After a job a helper may linger for ``LINGER_S``, polling ``SIGNAL`` (which the calling
thread's kernel bumps once it runs with the GIL released, yielding the CPU between polls)
instead of sleeping, so that the next conv of a plan run finds it awake. Off by default: 300 us
measured no better in A/B runs (resnet18 3.80/3.59 vs 4.64/3.39 ms, once 4.32 vs 3.14 ms
against OpenMP), since the helper then takes the GIL back while the calling thread dispatches.

Each item is computed the same whichever thread runs it, so results do not depend on timing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

log = logging.getLogger(__name__)

#: the calling thread polls the done counter this many times before yielding its CPU per poll
_SPIN_POLLS = 2000


#: how long a helper polls for the next job before it sleeps (0: it sleeps at once)
LINGER_S = 0.0

#: SIGNAL[0]: bumped by the calling thread's kernel when a job starts (GIL released)
SIGNAL = np.zeros(8, np.int64)


@intrinsic
def _load_pause(typingctx, arr):
    """SIGNAL[0] read atomically (never hoisted out of a loop) after one ``pause``."""

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(ary.data, ir.IntType(64).as_pointer())
        pause = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
        builder.call(pause, [])
        return builder.load_atomic(ptr, "monotonic", 8)

    return types.int64(arr), codegen


@intrinsic
def _cycles(typingctx):
    """The time-stamp counter."""

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _sched_yield(typingctx):
    """libc's sched_yield(), resolved by the JIT linker (so the caller can be cached)."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def _poll(signal, seen, cycles):  # pragma: no cover - compiled
    """signal[0] once it differs from ``seen``, or ``seen`` after ``cycles`` TSC ticks; yields
    the CPU between polls (sched_yield), so a thread woken on this CPU, e.g. one of numba's
    OpenMP workers, runs at once rather than after this one's time slice."""
    start = _cycles()
    while True:
        _sched_yield()
        now = _load_pause(signal)
        if now != seen:
            return now
        if _cycles() - start > cycles:
            return seen


def _tsc_hz() -> float:
    """Time-stamp counter ticks per second (measured over 5 ms)."""
    _cycles_now()  # compiled or loaded before the measurement
    start_s, start = time.perf_counter(), int(_cycles_now())
    time.sleep(0.005)
    return (int(_cycles_now()) - start) / (time.perf_counter() - start_s)


@njit(cache=True)
def _cycles_now():  # pragma: no cover - compiled
    return _cycles()


class HelperPool:
    """Daemon threads taking the latest offered job; one pool per process (``HELPERS``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._job: Callable[[], None] | None = None
        self._generation = 0
        self._threads: list[threading.Thread] = []

    def _loop(self) -> None:
        seen = 0
        hz = _tsc_hz()
        while True:
            with self._cond:
                while self._job is None or self._generation == seen:
                    self._cond.wait()
                job, seen = self._job, self._generation
            while job is not None:
                try:
                    job()
                except Exception:  # pragma: no cover - the calling thread does every item anyway
                    log.exception("cpu helper thread: job failed")
                job = None
                linger = int(LINGER_S * hz)
                signal = int(SIGNAL[0])
                while job is None and _poll(SIGNAL, signal, linger) != signal:
                    signal = int(SIGNAL[0])
                    with self._cond:
                        if self._job is not None and self._generation != seen:
                            job, seen = self._job, self._generation

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
    """Run the work loop ``part(*args, announce)`` (a nogil kernel claiming ``items`` items from
    ``counter[0]`` and counting finished ones in ``counter[1]``) on the calling thread, offered
    to ``workers - 1`` helpers of ``pool`` (default ``HELPERS``); return once every item is done."""
    if workers <= 1:
        part(*args, False)
        return
    pool = HELPERS if pool is None else pool

    def job() -> None:
        ITEMS[0] += part(*args, False)

    pool.offer(job, workers - 1)
    part(*args, True)
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
