"""Native helper threads: numba loops that run a plan's heavy work items without the GIL.

The Python helper threads of ``helpers`` wake on a condition variable, take the GIL and call a
numba dispatcher for every job: a wake-up on this VM costs tens of microseconds, so a helper
usually arrived after the calling thread had done the work (resnet18's conv jobs ran 1.06x
faster on two threads than on one). A native helper is a numba ``nogil`` loop started once on
a Python thread that never returns to Python: it spins on a job word for up to ``SPIN_US``
microseconds after its last job (``pause`` between polls), then sleeps on a futex until the
next job is posted. A job is a kind and a block of int64 words (addresses and scalars) in one
control array; the calling thread writes the block and runs the same work loop itself, so no
Python code runs between posting a job and a helper joining it (a prototype ran resnet18's conv
jobs 1.69x faster on two threads than on one).

Protocol, all through atomics on the control array ``ctl``:
- posting is a sequence lock: ``ctl[GEN]`` odd while the block is written, even once it is
  complete; a helper copies the block and uses it only if ``GEN`` did not change meanwhile;
- work items are claimed from ``ctl[CLAIM]`` = ``tag << 32 | claimed`` by compare-and-swap,
  the tag being the job's generation, so a helper holding an older job's block claims nothing
  (and touches none of its buffers) once a new job is posted; the caller claims from the first
  item up and the helpers (``ctl[ENDS]`` = 1, ``HETERO_CPU_CLAIM_ENDS=0`` turns it off) from the
  last down, so each thread computes the same end of consecutive ops' tensors and reads what its
  own cache holds (mobilenet_v2's plan 1.10-1.17x, efficientnet-like 1.15x, resnet18 1.02x against
  front-only claims, in-process A/B on 2 vCPUs);
- finished items are counted in ``ctl[DONE]``; the calling thread returns once all are done, so
  every buffer a claimed item reads outlives it; a helper that wakes late finds no item left;
- a helper about to sleep counts itself in ``ctl[SLEEPERS]`` before re-checking ``GEN``, and a
  poster that sees a sleeper bumps ``ctl[FUTEX]`` and wakes it (both sides use full barriers).

Each item is computed by the same compiled code whichever thread runs it, so results do not
depend on timing. Linux on x86-64 only (futex through libc's ``syscall``, the ``pause`` hint);
elsewhere, or with ``HETERO_CPU_NATIVE=0``, kernels share work through ``helpers`` as before.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hetero.backends.cpu.helpers import _load_acquire, _pause

#: microseconds a native helper spins for the next job after its last one, then sleeps
SPIN_US = float(os.environ.get("HETERO_CPU_NATIVE_SPIN_US", "300"))

ENABLED = (os.environ.get("HETERO_CPU_NATIVE", "1") != "0" and sys.platform.startswith("linux")
           and platform.machine().lower() in ("x86_64", "amd64"))
"""Whether kernels post their work items to native helpers (else to ``helpers``' threads)."""

BIND = os.environ.get("HETERO_CPU_BIND", "1") != "0"
"""Whether plan steps bind their jobs' words at build time (``native_jobs.Bound``; read when a
step is built): a run then posts a prepared job instead of unboxing the kernel's arguments."""

_JOBS: list = []


def jobs():
    """The ``native_jobs`` module, imported on first use (it imports the kernel modules that
    post to it), or None where native helpers are off."""
    if not _JOBS:
        if ENABLED:
            from hetero.backends.cpu import native_jobs

            _JOBS.append(native_jobs)
        else:
            _JOBS.append(None)
    return _JOBS[0]


# control array layout (int64 words; the job word, the claim counter and the block on separate lines)
GEN, STOP, SLEEPERS, FUTEX, TS, SPIN, REST = 0, 1, 2, 3, 4, 6, 7  # TS, TS + 1: the futex wait's timeout (timespec)
CLAIM, DONE, HELPED = 8, 9, 10
KIND, WORKERS, ENDS, ARGS = 16, 17, 18, 24  # ENDS: 1 where helpers claim from the back (claim)
NARGS = 40
SIZE = ARGS + NARGS

SYS_FUTEX = 202  # x86-64
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
_MASK32 = 0xFFFFFFFF
FROM_BACK = 1 << 62
"""Set in the tag a native helper claims with: it takes items from the last one down (``claim``)."""


# --- atomics ---------------------------------------------------------------------------------


@intrinsic
def _atomic_add(typingctx, addr, val):
    """Atomically add ``val`` to the int64 at ``addr`` (a full barrier); return the old value."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "seq_cst")

    return types.int64(types.intp, types.int64), codegen


@intrinsic
def _load_seq(typingctx, addr):
    """The int64 at ``addr``, loaded atomically in sequential-consistency order."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.load_atomic(ptr, "seq_cst", 8)

    return types.int64(types.intp), codegen


@intrinsic
def _store_seq(typingctx, addr, val):
    """Store ``val`` into the int64 at ``addr`` atomically (sequential consistency)."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.store_atomic(args[1], ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(types.intp, types.int64), codegen


@intrinsic
def _cas(typingctx, addr, old, new):
    """Compare-and-swap the int64 at ``addr`` from ``old`` to ``new``; True if it swapped."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        pair = builder.cmpxchg(ptr, args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(types.intp, types.int64, types.int64), codegen


@intrinsic
def _fence(typingctx):
    """A full memory fence."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _cycles(typingctx):
    """The CPU's time-stamp counter (``llvm.readcyclecounter``)."""

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _call6(typingctx, fn, a, b, c, d, e, f):
    """Call the C function at address ``fn`` taking six integer words and returning one (libc's
    ``syscall``: its assembly ignores the vector-count register a variadic call would set)."""

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fty = ir.FunctionType(i64, [i64] * 6)
        ptr = builder.inttoptr(args[0], fty.as_pointer())
        return builder.call(ptr, list(args[1:]))

    return types.int64(types.intp, *([types.int64] * 6)), codegen


@njit(nogil=True, cache=True)
def claim(w0, tag, nwork):  # pragma: no cover - compiled
    """The next unclaimed item below ``nwork`` of job ``tag`` from the counter at ``w0``, or -1
    once none is left or the counter belongs to another job. ``tag | FROM_BACK`` (a native
    helper) claims from the last item down, the caller from the first up, so over a run of ops
    each thread keeps computing the same end of the tensors (whose lines its cache holds) and
    they meet wherever the work splits: the counter is ``tag << 32 | front << 16 | back`` for
    jobs under 65536 items, ``tag << 32 | next`` (front only) above."""
    back = (tag & FROM_BACK) != 0
    tag = tag & ~FROM_BACK
    split = nwork < 65536
    while True:
        c = _load_acquire(w0)
        if (c >> 32) != tag:
            return -1
        if not split:
            if (c & _MASK32) >= nwork:
                return -1
            if _cas(w0, c, c + 1):
                return c & _MASK32
            continue
        front, behind = (c >> 16) & 0xFFFF, c & 0xFFFF
        if front + behind >= nwork:
            return -1
        if back:
            if _cas(w0, c, c + 1):
                return nwork - 1 - behind
        elif _cas(w0, c, c + 65536):
            return front


@njit(nogil=True, cache=True)
def now_cycles():  # pragma: no cover - compiled
    return _cycles()


# --- posting and waiting (the calling thread) --------------------------------------------------


@njit(nogil=True, cache=True)
def begin_post(ctl):  # pragma: no cover - compiled
    """Mark the block as being written (``GEN`` odd); return the job's tag."""
    base = ctl.ctypes.data
    g = _atomic_add(base + GEN * 8, 1) + 1
    tag = ((g + 1) >> 1) & 0x7FFFFFFF
    _store_seq(base + CLAIM * 8, tag << 32)
    _store_seq(base + DONE * 8, 0)
    return tag


@njit(nogil=True, cache=True)
def end_post(ctl, kind, workers, sysfn):  # pragma: no cover - compiled
    """Publish the written block (``GEN`` even) and wake sleeping helpers."""
    base = ctl.ctypes.data
    ctl[KIND] = kind
    ctl[WORKERS] = workers
    _atomic_add(base + GEN * 8, 1)
    if _load_seq(base + SLEEPERS * 8) > 0:
        _atomic_add(base + FUTEX * 8, 1)
        _call6(sysfn, SYS_FUTEX, base + FUTEX * 8, FUTEX_WAKE_PRIVATE, workers - 1, 0, 0)


@njit(nogil=True, cache=True)
def _wake(ctl, sysfn):  # pragma: no cover - compiled
    base = ctl.ctypes.data
    if _load_seq(base + SLEEPERS * 8) > 0:
        _atomic_add(base + FUTEX * 8, 1)
        _call6(sysfn, SYS_FUTEX, base + FUTEX * 8, FUTEX_WAKE_PRIVATE, 1 << 20, 0, 0)


@njit(nogil=True, cache=True)
def wait_done(ctl, nwork):  # pragma: no cover - compiled
    """Spin until ``nwork`` items are done: only items a helper claimed and is computing remain."""
    a = ctl.ctypes.data + DONE * 8
    while _load_acquire(a) < nwork:
        _pause()


# --- the helper loop -------------------------------------------------------------------------


def _cycles_per_us() -> float:
    """Time-stamp counter ticks per microsecond, measured over a few milliseconds."""
    now_cycles()
    best = 0.0
    for _ in range(3):
        c0, t0 = now_cycles(), time.perf_counter()
        time.sleep(0.002)
        c1, t1 = now_cycles(), time.perf_counter()
        best = max(best, (c1 - c0) / max((t1 - t0) * 1e6, 1e-3))
    return best


class NativePool:
    """The process's native helper threads and their control array (one job at a time: a thread
    that finds ``lock`` taken runs its job through ``helpers`` instead)."""

    def __init__(self, helper_main) -> None:
        raw = np.zeros(SIZE + 16, np.int64)  # the control words from a 128-byte boundary (cache lines apart)
        skip = (-raw.ctypes.data % 128) // 8
        self.ctl = raw[skip : skip + SIZE]
        self.ctl[TS + 1] = 50_000_000  # a sleeping helper re-checks every 50 ms (it is woken sooner)
        self.ctl[ENDS] = 0 if os.environ.get("HETERO_CPU_CLAIM_ENDS", "1") == "0" else 1
        self.lock = threading.Lock()
        self._start = threading.Lock()
        self._main = helper_main
        self._threads: list[threading.Thread] = []
        self._cycles_per_us: float | None = None
        libc = ctypes.CDLL(None, use_errno=True)
        self.sysfn = int(ctypes.cast(libc.syscall, ctypes.c_void_p).value)

    def ensure(self, helpers: int) -> None:
        """Start helper threads until there are ``helpers``."""
        if len(self._threads) >= helpers:
            return
        with self._start:
            if self._cycles_per_us is None:
                self.set_spin_us(SPIN_US)
                idle = np.zeros(SIZE, np.int64)
                idle[STOP] = 1
                self._main(idle, 0, self.sysfn)  # compiled (or loaded) here, not on a helper thread
            while len(self._threads) < helpers:
                index = len(self._threads)
                thread = threading.Thread(target=self._main, args=(self.ctl, index, self.sysfn),
                                          name=f"hetero-cpu-native-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def set_spin_us(self, microseconds: float) -> None:
        """How long helpers spin for the next job after their last one (0: they sleep at once,
        e.g. while another device runs on the same cores); helpers read it at every poll."""
        if self._cycles_per_us is None:
            self._cycles_per_us = _cycles_per_us()
        self.ctl[SPIN] = int(max(0.0, microseconds) * self._cycles_per_us)

    def rest(self) -> None:
        """Idle helpers go to sleep now rather than spin out their SPIN_US (a job or ``wake`` brings them back)."""
        self.ctl[REST] += 1

    @property
    def spinning(self) -> bool:
        return bool(self.ctl[SPIN] > 0)

    def wake(self) -> None:
        """Wake every sleeping helper without a job (it spins for SPIN_US, then sleeps again)."""
        _wake(self.ctl, self.sysfn)

    @property
    def helped(self) -> int:
        """Work items native helpers have run since the pool started."""
        return int(self.ctl[HELPED])

    @property
    def threads(self) -> int:
        return len(self._threads)

    def stop(self) -> None:
        """Let every helper return (tests); the pool cannot be used afterwards."""
        self.ctl[STOP] = 1
        self.ctl[FUTEX] += 1
        libc = ctypes.CDLL(None)
        libc.syscall(ctypes.c_long(SYS_FUTEX), ctypes.c_void_p(self.ctl.ctypes.data + FUTEX * 8),
                     ctypes.c_int(FUTEX_WAKE_PRIVATE), ctypes.c_int(1 << 20), None, None, ctypes.c_int(0))
        for thread in self._threads:
            thread.join(timeout=5)
