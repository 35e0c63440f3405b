"""Keep freed activation memory mapped, so that a plan's next run does not page-fault it in.

A compiled plan frees its activations after their last reader and allocates them again on the
next run. With glibc's defaults a buffer above 128 KiB comes from mmap or from a heap whose top
is given back to the kernel once more than twice that lies free, so every run faults in its
large activations again (mobilenet_v2: tens of MB of page faults per second of inference).
``keep_freed_memory`` raises the mmap threshold to 32 MiB (glibc's largest) and the trim
threshold to 512 MiB, once per process: freed buffers stay in the heap and the next run reuses
them (onnxruntime's CPU arena does the same for its own buffers). Where the C library is not
glibc the call does nothing and says so in the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024

_lock = threading.Lock()
_result: list[bool] = []


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds as the module docstring says (once); True if they were set."""
    with _lock:
        if not _result:
            _result.append(_set_thresholds())
        return _result[0]


def _set_thresholds() -> bool:
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError) as err:
        log.debug("no mallopt in the C library (%s): freed activations are returned to the system", err)
        return False
    if mallopt is None:
        log.debug("no C library found: freed activations are returned to the system")
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        log.debug("mallopt refused the thresholds: freed activations are returned to the system")
    return ok
