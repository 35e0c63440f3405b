"""Timing one sampled kernel configuration for a kernel profile (hetero.cost.kernel_profile).

``time_in_plan`` times an op inside the device's compiled-plan runs of its small graph, the caches
flushed before each run (``flush_caches``: a model's other bytes passing through them);
``time_settled`` fixes the cpu device's one-thread-or-all choice for a small op by timing both
(the faster is the sample), instead of the device's three noisy trials after flushes;
``_time_layout`` times an NCHW<->NHWC conversion alone. bench/kernel_context.py measures these
against the same ops inside real models.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from hetero.backends.base import Device
from hetero.cost.kernel_model import layout_features
from hetero.cost.kernel_space import FLUSH_MAX_BYTES, layout_array

SAMPLE_BUDGET_S = 0.08  # timing of one configuration (the plan's repeats), seconds


def _time_layout(config: Mapping[str, Any], rng: np.random.Generator, repeat: int = 15) -> tuple[str, dict, float, float, float]:
    from hetero.backends.cpu.plan import to_nchw, to_nhwc
    from hetero.cost.profiler import robust_stats

    array = layout_array(config, rng)
    convert = to_nhwc if config["family"] == "to_nhwc" else to_nchw
    for _ in range(2):
        convert(array)
    samples = []
    for _ in range(repeat):
        flush_caches(int(config["flush_bytes"]))
        start = time.perf_counter()
        convert(array)
        samples.append(time.perf_counter() - start)
    median, p10, p90, _, _ = robust_stats(samples)
    shape = array.shape if config["family"] == "to_nhwc" else (array.shape[0], array.shape[3], array.shape[1], array.shape[2])
    return f"layout/{config['family']}", layout_features(shape, array.dtype.itemsize, int(config["flush_bytes"])), median, p10, p90


_SCRATCH: list[np.ndarray] = []


def flush_caches(nbytes: int) -> None:
    """Touch every cache line of ``nbytes`` of memory: between two launches of an op inside a
    model the rest of the model's weights and activations pass through the caches (a sample's
    ``flush_bytes``, a feature the predictors see, stands for the model's bytes per run)."""
    if not _SCRATCH or _SCRATCH[0].size < nbytes:
        _SCRATCH[:] = [np.zeros(max(nbytes, FLUSH_MAX_BYTES), np.uint8)]
    _SCRATCH[0][:nbytes:64] += 1


def time_in_plan(device: Device, graph: Any, op: Any, rng: np.random.Generator, flush_bytes: int, warmup: int = 4, min_count: int = 5,
                 max_count: int = 30, target_spread: float = 0.05, budget_s: float = SAMPLE_BUDGET_S,
                 warm_helpers: bool = False) -> tuple[float, float, float]:
    """(median, p10, p90) seconds of ``op`` inside the device's runs of ``graph`` (the plan's own
    per-step clock, as ``hetero profile`` times a model's ops), caches flushed before each run.
    With ``warm_helpers``, the cpu device's helper threads are woken after each op before ``op``
    (they then spin for the next job, hetero.backends.cpu.helpers.SPIN_US), as after a parallel op
    inside a model; off by default: measured against resnet18's ops in the model (bench/kernel_context.py)
    a spinning helper slowed the single-threaded ops it ran beside (1.4-1.6x), cold helpers matched."""
    from hetero.cost.profiler import random_input, robust_stats
    from hetero.exec.executor import run_on_device

    feeds = {spec.name: random_input(spec, rng) for spec in graph.inputs}
    samples: list[float] = []

    wake = _helper_waker(device) if warm_helpers else None

    def record(seen: Any, outputs: Any, timing: Any) -> None:
        if seen is op:
            samples.append(max(timing.wall_s, timing.device_s))  # what a runtime sees, as a model profile's expected_s
        elif wake is not None:
            wake()

    def warm(seen: Any, outputs: Any, timing: Any) -> None:
        if seen is not op and wake is not None:
            wake()

    for _ in range(warmup):  # compiles, packs, and lets the device learn the op's thread count
        flush_caches(flush_bytes)
        if wake is not None:
            wake()
        run_on_device(graph, device, feeds, observe=warm)
    started = time.perf_counter()
    while len(samples) < max_count:
        flush_caches(flush_bytes)
        if wake is not None:
            wake()
        run_on_device(graph, device, feeds, observe=record, timed=True)
        if len(samples) >= min_count:
            median, p10, p90, _, _ = robust_stats(samples)
            if p90 - p10 <= target_spread * median or time.perf_counter() - started > budget_s:
                break
    median, p10, p90, _, _ = robust_stats(samples)
    return median, p10, p90


def time_settled(device: Device, graph: Any, op: Any, rng: np.random.Generator, flush_bytes: int,
                 budget_s: float = SAMPLE_BUDGET_S) -> tuple[float, float, float]:
    """``time_in_plan`` with the thread count the cpu device settles on for ``op`` in a model,
    decided here by timing both: an op under ``PARALLEL_MIN_FLOPS`` runs on one thread or on all,
    whichever of three trials each ran faster in its first runs. Inside a model those trials run
    warm and back to back; after a flush (a sample's runs) they are noisy enough to settle a
    sample on the slower choice (1.5-2x for a mid-size convolution) and such samples pulled the
    predictions of the classes above the in-model times. So each choice is timed in its own
    plan (median of repeats) and the faster one is the sample: the choice a device that learns
    right makes. Other devices and big ops: ``time_in_plan`` as it is."""
    if not _learns_threads(device, op):
        return time_in_plan(device, graph, op, rng, flush_bytes, budget_s=budget_s)
    results = []
    for chosen in (1, 0):  # one thread, then the device's cap (0)
        device.close()  # a fresh plan: the plan keeps each op's thread count once settled
        device.settle_threads(op, chosen)
        results.append(time_in_plan(device, graph, op, rng, flush_bytes, warmup=2, budget_s=budget_s / 2))
    return min(results, key=lambda r: r[0])


def _learns_threads(device: Device, op: Any) -> bool:
    """Whether the cpu device picks this op's thread count by trials (hetero.backends.cpu.device)."""
    if device.kind != "cpu" or not hasattr(device, "_thread_trials") or getattr(device, "threads", None) == 1:
        return False
    import numba

    from hetero.backends.cpu.device import PARALLEL_MIN_FLOPS

    return numba.config.NUMBA_NUM_THREADS > 1 and op.flops < PARALLEL_MIN_FLOPS


def _noop() -> None:
    return None


def _helper_waker(device: Device) -> Callable[[], None] | None:
    """A call that wakes the cpu device's sleeping helper threads (a job that does nothing), or
    None where the device has none (another kind, or one thread)."""
    if device.kind != "cpu" or getattr(device, "threads", None) == 1:
        return None
    import numba

    from hetero.backends.cpu import helpers

    count = numba.config.NUMBA_NUM_THREADS - 1
    if count < 1:
        return None
    return lambda: helpers.HELPERS.offer(_noop, count)
