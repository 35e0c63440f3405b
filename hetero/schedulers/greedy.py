"""Greedy: each node on its fastest device, ignoring transfers and load.

The MET (minimum execution time) heuristic of Braun et al., "A comparison of eleven static
heuristics for mapping a class of independent tasks onto heterogeneous distributed computing
systems", Journal of Parallel and Distributed Computing 61(6), 810-837, 2001, applied node by
node in topological order. Nodes are then timed with transfers included; when memory capacities
are given, a node goes to the fastest device that still has room.
"""

from __future__ import annotations

import numpy as np

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import DeviceTimelines, TaskArrays, make_schedule
from hetero.schedulers.memory import MemoryTracker


def greedy(tasks: TaskArrays) -> Schedule:
    """Fastest device per node, timed without insertion."""
    placement = np.full(tasks.n, -1, dtype=np.int64)
    start, end = np.zeros(tasks.n), np.zeros(tasks.n)
    timelines = DeviceTimelines(tasks.k)
    memory = MemoryTracker(tasks)
    for i in range(tasks.n):
        ready = tasks.ready_times(i, placement, end)
        chosen = -1
        for d in np.argsort(tasks.compute_s[i], kind="stable").tolist():
            duration = float(tasks.compute_s[i, d])
            if not np.isfinite(duration):
                break
            begin = max(float(ready[d]), timelines.free_at(d))
            if not memory.active or memory.fits(i, d, begin, begin + duration, placement, end):
                chosen = d
                break
        if chosen < 0:
            raise ScheduleError(f"greedy: task {tasks.names[i]} fits in the memory of none of the devices that can run it")
        placement[i], start[i], end[i] = chosen, begin, begin + duration
        timelines.add(chosen, begin, begin + duration)
        memory.commit(i, chosen, begin, begin + duration, placement, end)
    return make_schedule(tasks, placement, start, end, "greedy")
