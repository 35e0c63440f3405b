"""Timing one op on a device: warm-up launches, then timed launches until the estimate is stable
(relative spread (p90 - p10) / median at most ``target_spread``) or the per-op budget is spent,
spikes beyond median + 5 MAD dropped first; and every op of a graph timed in place as the
device's plan runs it (hetero.cost.profiler builds profiles from these)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.profile import OpStats, op_features
from hetero.exec.executor import OpTiming, run_on_device, settle
from hetero.ir.graph import Graph, Op, random_input  # random_input: re-exported (hetero.cost.profiler)


@dataclass(frozen=True)
class Budget:
    """When to stop timing one op: enough samples and a small spread, or time used up."""

    warmup: int = 2
    min_count: int = 5
    max_count: int = 200
    target_spread: float = 0.05
    seconds_per_op: float = 0.5


def robust_stats(samples: Sequence[float]) -> tuple[float, float, float, int, int]:
    """(median, p10, p90, kept, dropped) after dropping spikes beyond median + 5 MAD."""
    values = np.asarray(samples, np.float64)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    limit = median + 5.0 * max(mad, 1e-3 * median, 1e-9)
    kept = values[values <= limit]
    return (
        float(np.median(kept)),
        float(np.percentile(kept, 10)),
        float(np.percentile(kept, 90)),
        int(kept.size),
        int(values.size - kept.size),
    )


def time_op(device: Device, op: Op, budget: Budget, rng: np.random.Generator) -> OpStats:
    """Time one op on one device until stable; statistics are robust to spikes."""
    arrays = [random_input(s, rng) for s in op.input_specs if s is not None and s.name not in op.weights]
    buffers = [device.upload(a) for a in arrays]
    for _ in range(budget.warmup):
        device.run(op, buffers)
    device.synchronize()
    samples: list[float] = []
    walls: list[float] = []
    started = time.perf_counter()
    while len(samples) < budget.max_count:
        launch = time.perf_counter()
        _, seconds = device.timed_run(op, buffers)
        device.synchronize()
        walls.append(time.perf_counter() - launch)
        samples.append(seconds)
        if len(samples) >= budget.min_count:
            median, p10, p90, _, _ = robust_stats(samples)
            if (p90 - p10) <= budget.target_spread * median:
                break
            if time.perf_counter() - started > budget.seconds_per_op:
                break
    return _stats(op, samples, walls)


def _stats(op: Op, samples: Sequence[float], walls: Sequence[float]) -> OpStats:
    median, p10, p90, kept, dropped = robust_stats(samples)
    return OpStats(
        op_type=op.type,
        median_s=median,
        p10_s=p10,
        p90_s=p90,
        count=kept,
        outliers=dropped,
        spread=(p90 - p10) / median if median > 0 else 0.0,
        features=op_features(op),
        wall_median_s=max(robust_stats(walls)[0], median),
    )


def time_ops_in_graph(device: Device, graph: Graph, budget: Budget, rng: np.random.Generator) -> dict[str, OpStats]:
    """Time every op where it really runs: inside whole-graph runs on the device, in topological
    order, so each op meets the caches, thread wake-ups and launch gaps a runtime gives it.
    Ops with one signature pool their samples. Stops when every signature is stable or the
    budget (seconds_per_op per signature) is spent."""
    order = list(graph.ops_in_order())
    feeds = {spec.name: random_input(spec, rng) for spec in graph.inputs}
    samples: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    first = {op.signature(): op for op in reversed(order)}
    budget_s = budget.seconds_per_op * len(first)

    def record(op: Op, outputs: Sequence[object], timing: OpTiming | None) -> None:
        assert timing is not None  # a timed run times every op
        samples.setdefault(op.signature(), []).append(timing.device_s)
        walls.setdefault(op.signature(), []).append(timing.wall_s)

    def one_run(sampled: bool) -> None:
        run_on_device(graph, device, feeds, observe=record if sampled else None, timed=True)

    for _ in range(budget.warmup):
        one_run(False)
    settle(graph, device, lambda: one_run(False))  # the cpu device's thread counts chosen before sampling
    started = time.perf_counter()
    runs = 0
    while runs < budget.max_count:
        one_run(True)
        runs += 1
        if runs >= budget.min_count:
            stable = all(
                (lambda m, lo, hi: hi - lo <= budget.target_spread * m)(*robust_stats(v)[:3]) for v in samples.values()
            )
            if stable or time.perf_counter() - started > budget_s:
                break
    return {signature: _stats(first[signature], samples[signature], walls[signature]) for signature in samples}
