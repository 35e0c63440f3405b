"""Incremental memory accounting for list schedulers, matching :func:`hetero.schedule.memory_required`.

While a list scheduler places nodes one at a time, a node's output is live from its start until
an end that is unknown until all its readers are placed; until then it is counted as live for
ever ("open"), which over-counts, never under-counts. :meth:`MemoryTracker.fits` asks whether a
candidate placement keeps the device within capacity at every instant; :meth:`commit` records it
and closes the outputs whose last reader it was. The final schedule therefore never needs more
than the capacity that every check saw.
"""

from __future__ import annotations

import math

import numpy as np

from hetero.schedule import peak_bytes
from hetero.schedulers.base import TaskArrays


class MemoryTracker:
    """Live-interval bookkeeping per device; does nothing when no device has a capacity."""

    def __init__(self, tasks: TaskArrays) -> None:
        self.tasks = tasks
        self.active = bool(np.isfinite(tasks.capacity_bytes).any())
        self.weights = np.zeros(tasks.k)
        self.intervals: list[list[list[float]]] = [[] for _ in range(tasks.k)]
        self.open_output: dict[int, list[float]] = {}
        self.remaining = np.array([len(s) for s in tasks.succ_edges], dtype=np.int64)
        self.release = np.zeros(tasks.n)

    def _new_intervals(
        self, node: int, device: int, start_s: float, end_s: float, placement: np.ndarray, ends: np.ndarray
    ) -> list[list[float]]:
        tasks = self.tasks
        fresh = [[start_s, math.inf, float(tasks.output_bytes[node])]]
        for e in tasks.pred_edges[node].tolist():
            source = int(tasks.edge_src[e])
            if placement[source] != device:
                fresh.append([float(ends[source]), end_s, float(tasks.edge_bytes[e])])
        if tasks.input_bytes[node] and tasks.devices[device] != tasks.host:
            fresh.append([start_s - float(tasks.input_s[node, device]), end_s, float(tasks.input_bytes[node])])
        return fresh

    def fits(
        self, node: int, device: int, start_s: float, end_s: float, placement: np.ndarray, ends: np.ndarray
    ) -> bool:
        """Whether placing node on device over [start_s, end_s) stays within the device's capacity."""
        capacity = self.tasks.capacity_bytes[device]
        if not math.isfinite(capacity):
            return True
        weights = self.weights[device] + self.tasks.weight_bytes[node]
        if weights > capacity:
            return False
        everything = self.intervals[device] + self._new_intervals(node, device, start_s, end_s, placement, ends)
        return weights + peak_bytes(everything) <= capacity

    def commit(self, node: int, device: int, start_s: float, end_s: float, placement: np.ndarray, ends: np.ndarray) -> None:
        """Record a placement (placement[node] and ends[node] already set) and close finished outputs."""
        if not self.active:
            return
        tasks = self.tasks
        self.weights[device] += tasks.weight_bytes[node]
        fresh = self._new_intervals(node, device, start_s, end_s, placement, ends)
        self.intervals[device].extend(fresh)
        self.open_output[node] = fresh[0]
        self.release[node] = end_s + float(tasks.result_s[node, device])
        for e in tasks.pred_edges[node].tolist():
            source = int(tasks.edge_src[e])
            if placement[source] == device:
                arrival = end_s
            else:
                arrival = float(ends[source] + tasks.comm_s[e, placement[source], device])
            self.release[source] = max(self.release[source], arrival)
            self.remaining[source] -= 1
            if self.remaining[source] == 0:
                self._close(source)
        if self.remaining[node] == 0:
            self._close(node)

    def _close(self, node: int) -> None:
        interval = self.open_output.pop(node)
        interval[1] = max(float(self.release[node]), interval[0])
