"""HEFT: Heterogeneous Earliest Finish Time, with insertion.

H. Topcuoglu, S. Hariri, M.-Y. Wu, "Performance-effective and low-complexity task scheduling
for heterogeneous computing", IEEE Transactions on Parallel and Distributed Systems 13(3),
260-274, 2002.

Tasks are taken in decreasing upward rank, rank_u(i) = mean_w(i) + max over successors j of
(mean_c(i, j) + rank_u(j)), where mean_w averages a task's seconds over the devices that can run
it and mean_c averages an edge's transfer seconds over ordered pairs of distinct devices. Each task
goes to the device giving its earliest finish time, searching idle gaps between already placed
tasks (the insertion policy). Graph output that must return to the host is added to the finish
time compared, and memory capacities (when given) exclude devices the task would overflow.
"""

from __future__ import annotations

import numpy as np

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import DeviceTimelines, TaskArrays, make_schedule
from hetero.schedulers.memory import MemoryTracker


def mean_compute(tasks: TaskArrays) -> np.ndarray:
    """Per node, the mean seconds over the devices that can run it."""
    finite = np.isfinite(tasks.compute_s)
    return np.where(finite, tasks.compute_s, 0.0).sum(axis=1) / finite.sum(axis=1)


def mean_transfer(tasks: TaskArrays) -> np.ndarray:
    """Per edge, the mean transfer seconds over ordered pairs of distinct devices (0 with one device)."""
    k = tasks.k
    if k < 2 or len(tasks.edge_src) == 0:
        return np.zeros(len(tasks.edge_src))
    return tasks.comm_s.sum(axis=(1, 2)) / (k * (k - 1))


def upward_ranks(tasks: TaskArrays) -> np.ndarray:
    """rank_u of every node; graph output returning to the host counts like a last transfer."""
    own = mean_compute(tasks).tolist()
    exit_cost = (mean_compute(tasks) + tasks.result_s.mean(axis=1)).tolist()
    edge_cost = mean_transfer(tasks).tolist()
    edge_dst = tasks.edge_dst.tolist()
    rank = [0.0] * tasks.n
    for i in range(tasks.n - 1, -1, -1):
        tail = 0.0
        for e in tasks.succ_edges[i].tolist():
            tail = max(tail, edge_cost[e] + rank[edge_dst[e]])
        rank[i] = max(exit_cost[i], own[i] + tail)
    return np.array(rank)


def priority_order(rank: np.ndarray) -> np.ndarray:
    """Nodes by decreasing rank; ties (equal up to rounding) keep topological order, predecessors first."""
    if len(rank) == 0:
        return np.zeros(0, dtype=np.int64)
    quantum = max(float(np.abs(rank).max()), 1e-300) * 1e-12
    return np.lexsort((np.arange(len(rank)), -np.round(rank / quantum)))


def place_in_order(
    tasks: TaskArrays, order: np.ndarray, algorithm: str, extra_s: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """List-schedule nodes in the given order on their earliest-finish device, with insertion.

    ``extra_s`` (n, k) is added to the finish time when comparing devices (PEFT's OCT).
    Returns (placement, start, end).
    """
    n, k = tasks.n, tasks.k
    placement = np.full(n, -1, dtype=np.int64)
    start, end = np.zeros(n), np.zeros(n)
    timelines = DeviceTimelines(k)
    memory = MemoryTracker(tasks)
    compute = tasks.compute_s.tolist()
    penalty = tasks.result_s if extra_s is None else tasks.result_s + extra_s
    penalty_list = penalty.tolist()
    for i in order.tolist():
        ready = tasks.ready_times(i, placement, end)
        # No device can finish before ready + duration: try devices in that order, stop when none can win.
        optimistic = ready + tasks.compute_s[i] + penalty[i]
        best_device, best_key, best_start = -1, np.inf, 0.0
        for d in np.argsort(optimistic, kind="stable").tolist():
            if optimistic[d] > best_key:
                break
            duration = compute[i][d]
            if duration == np.inf:
                continue
            begin = timelines.earliest(d, float(ready[d]), duration)
            key = begin + duration + penalty_list[i][d]
            if key < best_key or (key == best_key and d < best_device):
                if memory.active and not memory.fits(i, d, begin, begin + duration, placement, end):
                    continue
                best_device, best_key, best_start = d, key, begin
        if best_device < 0:
            raise ScheduleError(
                f"{algorithm}: task {tasks.names[i]} fits in the memory of none of the devices that can run it"
            )
        finish = best_start + compute[i][best_device]
        placement[i], start[i], end[i] = best_device, best_start, finish
        timelines.add(best_device, best_start, finish)
        memory.commit(i, best_device, best_start, finish, placement, end)
    return placement, start, end


def heft(tasks: TaskArrays) -> Schedule:
    """HEFT with insertion on compiled tasks."""
    placement, start, end = place_in_order(tasks, priority_order(upward_ranks(tasks)), "heft")
    return make_schedule(tasks, placement, start, end, "heft")
