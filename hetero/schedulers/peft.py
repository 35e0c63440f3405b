"""PEFT: Predict Earliest Finish Time, with its optimistic cost table.

H. Arabnejad and J. G. Barbosa, "List scheduling algorithm for heterogeneous systems by an
optimistic cost table", IEEE Transactions on Parallel and Distributed Systems 25(3), 682-694, 2014.

OCT(i, p) = max over successors j of min over devices w of (OCT(j, w) + w(j, w) + c(i, j) [w != p]),
with OCT = 0 for exit tasks and c the mean transfer seconds of the edge. Ready tasks are taken in
decreasing rank_oct (the mean of a task's OCT row over the devices that can run it); each goes to
the device minimising EFT + OCT (insertion policy as in HEFT).
"""

from __future__ import annotations

import numpy as np

from hetero.problem import ready_order
from hetero.schedule import Schedule
from hetero.schedulers.base import TaskArrays, make_schedule, successor_lists
from hetero.schedulers.heft import mean_transfer, place_in_order


def optimistic_cost_table(tasks: TaskArrays) -> np.ndarray:
    """The (n, k) OCT: seconds still ahead of a node placed on each device, in the best case."""
    n, k = tasks.n, tasks.k
    table = np.zeros((n, k))
    edge_cost = mean_transfer(tasks)
    off_device = 1.0 - np.eye(k)
    for i in range(n - 1, -1, -1):
        edges = tasks.succ_edges[i]
        if len(edges) == 0:
            continue
        successors = tasks.edge_dst[edges]
        ahead = table[successors] + tasks.compute_s[successors]
        # [edge, p, w]: successor on w after this node on p
        totals = ahead[:, None, :] + edge_cost[edges, None, None] * off_device[None, :, :]
        table[i] = totals.min(axis=2).max(axis=0)
    return table


def oct_ranks(table: np.ndarray, tasks: TaskArrays) -> np.ndarray:
    """rank_oct: the mean OCT over the devices that can run each node."""
    finite = np.isfinite(tasks.compute_s)
    return np.where(finite, table, 0.0).sum(axis=1) / finite.sum(axis=1)


def ready_list_order(tasks: TaskArrays, rank: np.ndarray) -> np.ndarray:
    """Nodes as PEFT takes them: always the ready node of highest rank (ties: topological)."""
    order = ready_order(successor_lists(tasks), [len(p) for p in tasks.pred_edges], lambda i: -rank[i])
    return np.array(order, dtype=np.int64)


def peft(tasks: TaskArrays) -> Schedule:
    """PEFT on compiled tasks."""
    table = optimistic_cost_table(tasks)
    order = ready_list_order(tasks, oct_ranks(table, tasks))
    placement, start, end = place_in_order(tasks, order, "peft", extra_s=table)
    return make_schedule(tasks, placement, start, end, "peft")
