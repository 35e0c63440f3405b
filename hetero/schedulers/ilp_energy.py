"""The ILP's energy row: one request's energy as linear terms of the MILP's columns.

idle_W x C (the makespan column, in units of ``unit_s``) + sum x[i, d] x (busy power above idle
x node i's seconds on d + graph I/O joules) + sum y[e, a, b] x the joules of edge e from a to b,
with y[e, a, b] >= x[u, a] + x[v, b] - 1 and 0 <= y <= 1: continuous, because the energy only
ever appears minimised or bounded from above, which pushes y down to the product x[u, a] x[v, b].
Joules are in units of ``energy_unit_J`` (the safety net's energy) so the row's coefficients stay
near 1 for HiGHS.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hetero.schedulers.base import TaskArrays
from hetero.schedulers.ilp_memory import AddRow, Columns, Terms


def energy_row(tasks: TaskArrays, columns: Columns, add_row: AddRow, x: Callable[[int, int], int], makespan: int,
               unit_s: float, energy_unit_J: float) -> Terms:
    """A request's energy as terms of a row (in energy_unit_J), adding the y columns and their rows."""
    terms_J = tasks.energy
    assert terms_J is not None
    n, k = tasks.n, tasks.k
    capable = np.isfinite(tasks.compute_s)
    terms: dict[int, float] = {makespan: terms_J.idle_W * unit_s / energy_unit_J}
    per_node = (terms_J.extra_J + terms_J.input_J + terms_J.result_J) / energy_unit_J
    for i in range(n):
        for d in range(k):
            if capable[i, d] and per_node[i, d]:
                terms[x(i, d)] = terms.get(x(i, d), 0.0) + float(per_node[i, d])
    for e, (u, v) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist())):
        for a in range(k):
            for b in range(k):
                joules = float(terms_J.comm_J[e, a, b]) / energy_unit_J
                if a == b or joules <= 0 or not (capable[u, a] and capable[v, b]):
                    continue
                y = columns.add(1, 0.0, 1.0)
                add_row({y: 1.0, x(u, a): -1.0, x(v, b): -1.0}, lower=-1.0)
                terms[y] = joules
    return terms
