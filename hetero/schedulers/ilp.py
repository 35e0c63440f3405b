"""ILP: the exact schedule of a small graph, as a mixed-integer program solved by HiGHS.

A precedence/disjunctive formulation in the style of the MILP models surveyed by Davidović,
Liberti, Maculan and Mladenović, "Towards the optimal solution of the multiprocessor scheduling
problem with communication delays", MISTA 2007, solved with scipy.optimize.milp (HiGHS:
Huangfu and Hall, "Parallelizing the dual revised simplex method", Math. Prog. Comp. 10, 2018).

Variables: x[i, d] (node i on device d), start s[i], for each pair of nodes that no path orders
a binary o[i, j] (i before j when they share a device), and the makespan C. Constraints: one
device per node; s[v] >= s[u] + w[u] (+ the transfer seconds of the edge when u and v are on
different devices, one constraint per device pair); graph input arrives before its reader
starts; C covers every finish and graph-output arrival; nodes sharing a device do not overlap
(big-M on o and x, M = an upper bound on the makespan). Memory capacities are enforced
conservatively: weights, outputs and received copies of everything on a device are counted as
live together. Minimise C. Times come back left-shifted through the same list timing the other
schedulers use, so they never exceed the solver's. With a time limit, the best schedule found
is returned with HiGHS's optimality gap in the notes. heft, peft, greedy, single and dp run first: without
capacities their best makespan bounds C (and M); whenever one of them beats the MILP (possible
only through the conservative memory count or a time limit) its schedule is returned, with a
note, so ilp is never worse than those heuristics.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_matrix

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import TaskArrays, list_times, make_schedule
from hetero.schedulers.dp import dp
from hetero.schedulers.greedy import greedy
from hetero.schedulers.heft import heft
from hetero.schedulers.peft import peft
from hetero.schedulers.single import single

log = logging.getLogger(__name__)
MAX_TASKS = 60
DEFAULT_TIME_LIMIT_S = 30.0


class _Rows:
    """Sparse constraint rows lb <= a.x <= ub."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.values: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def add(self, terms: dict[int, float], lower: float = -math.inf, upper: float = math.inf) -> None:
        row = len(self.lower)
        for col, value in terms.items():
            if value != 0.0:
                self.rows.append(row)
                self.cols.append(col)
                self.values.append(value)
        self.lower.append(lower)
        self.upper.append(upper)

    def constraint(self, columns: int) -> LinearConstraint:
        matrix = coo_matrix((self.values, (self.rows, self.cols)), shape=(len(self.lower), columns)).tocsr()
        return LinearConstraint(matrix, np.array(self.lower), np.array(self.upper))


def _ancestors(tasks: TaskArrays) -> list[int]:
    """Per node, a bitset of its ancestors."""
    above = [0] * tasks.n
    for v in range(tasks.n):
        for e in tasks.pred_edges[v].tolist():
            u = int(tasks.edge_src[e])
            above[v] |= above[u] | (1 << u)
    return above


def _heuristics(tasks: TaskArrays) -> list[Schedule]:
    """The list schedulers' results (those that find one): an upper bound and a safety net."""
    found = []
    for algorithm in (heft, peft, greedy, single, dp):
        try:
            found.append(algorithm(tasks))
        except ScheduleError as err:
            log.info("ilp: %s", err)
    return found


def _upper_bound(tasks: TaskArrays, heuristics: list[Schedule]) -> float:
    """A makespan that no optimal solution of the MILP exceeds."""
    if heuristics and not np.isfinite(tasks.capacity).any():
        best = min(s.makespan_s for s in heuristics)
        return best * (1 + 1e-6) + 1e-9  # slack: the heuristic's own schedule must stay feasible
    finite = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, 0.0)
    total = finite.max(axis=1).sum() + tasks.input_s.max(initial=0.0) + tasks.result_s.max(initial=0.0)
    if len(tasks.edge_src):
        total += tasks.comm_s.max(axis=(1, 2)).sum()
    return float(total)


def _lower_bound(tasks: TaskArrays) -> float:
    """The critical path with every node on its fastest device and free transfers."""
    fastest = tasks.compute_s.min(axis=1)
    finish = np.zeros(tasks.n)
    for v in range(tasks.n):
        sources = tasks.edge_src[tasks.pred_edges[v]]
        finish[v] = (finish[sources].max() if len(sources) else 0.0) + fastest[v]
    return float(finish.max(initial=0.0))


@dataclass(frozen=True)
class _Model:
    """The MILP in scipy's form; times are in units of ``unit_s`` seconds."""

    objective: np.ndarray
    constraints: list[LinearConstraint]
    integrality: np.ndarray
    bounds: Bounds
    unit_s: float


def _build(tasks: TaskArrays, upper_s: float, unit_s: float) -> _Model:
    """The precedence/disjunctive MILP with every time divided by unit_s (M = the upper bound)."""
    n, k = tasks.n, tasks.k
    upper = upper_s / unit_s
    big_m = max(upper, 1e-9)
    w = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, 0.0) / unit_s
    comm, input_s, result_s = tasks.comm_s / unit_s, tasks.input_s / unit_s, tasks.result_s / unit_s
    capable = np.isfinite(tasks.compute_s)

    def x(i: int, d: int) -> int:
        return i * k + d

    def s(i: int) -> int:
        return n * k + i

    above = _ancestors(tasks)
    pairs = [(i, j) for j in range(n) for i in range(j) if not (above[j] >> i) & 1]
    order_base = n * k + n
    makespan = order_base + len(pairs)
    capped = [d for d in range(k) if math.isfinite(tasks.capacity[d])]
    copy_base = makespan + 1
    columns = copy_base + len(tasks.edge_src) * len(capped)
    rows = _Rows()

    def after(later: int, earlier: int) -> dict[int, float]:
        """s[later] - s[earlier] - duration[earlier] as terms."""
        return {s(later): 1.0, s(earlier): -1.0, **{x(earlier, d): -float(w[earlier, d]) for d in range(k)}}

    for i in range(n):
        rows.add({x(i, d): 1.0 for d in range(k)}, 1.0, 1.0)
        rows.add({s(i): 1.0, **{x(i, d): -float(input_s[i, d]) for d in range(k)}}, lower=0.0)
        rows.add({makespan: 1.0, s(i): -1.0, **{x(i, d): -float(w[i, d] + result_s[i, d]) for d in range(k)}}, lower=0.0)
    for e, (u, v) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist())):
        rows.add(after(v, u), lower=0.0)
        for a in range(k):
            for b in range(k):
                seconds = float(comm[e, a, b])
                if a == b or seconds <= 0 or not (capable[u, a] and capable[v, b]):
                    continue
                terms = after(v, u)
                terms[x(u, a)] -= seconds
                terms[x(v, b)] = terms.get(x(v, b), 0.0) - seconds
                rows.add(terms, lower=-seconds)
    for p, (i, j) in enumerate(pairs):
        for d in range(k):
            if not (capable[i, d] and capable[j, d]):
                continue
            for first, second, sign, slack in ((i, j, -1.0, 3.0), (j, i, 1.0, 2.0)):
                terms = after(second, first)
                terms[order_base + p] = sign * big_m
                terms[x(i, d)] = terms.get(x(i, d), 0.0) - big_m
                terms[x(j, d)] = terms.get(x(j, d), 0.0) - big_m
                rows.add(terms, lower=-slack * big_m)
    for slot, d in enumerate(capped):
        off_host = tasks.devices[d] != tasks.host
        memory: dict[int, float] = {}
        for i in range(n):
            memory[x(i, d)] = float(tasks.weight_bytes[i] + tasks.output_bytes[i] + (tasks.input_bytes[i] if off_host else 0))
        for e, (u, v) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist())):
            copy = copy_base + e * len(capped) + slot
            memory[copy] = float(tasks.edge_bytes[e])
            rows.add({copy: 1.0, x(v, d): -1.0, x(u, d): 1.0}, lower=0.0)
        rows.add(memory, upper=float(tasks.capacity[d]))
    lower = np.zeros(columns)
    upper_bounds = np.full(columns, np.inf)
    upper_bounds[: n * k] = capable.reshape(-1).astype(float)
    upper_bounds[n * k : order_base] = upper
    upper_bounds[order_base:makespan] = 1.0
    lower[makespan], upper_bounds[makespan] = min(_lower_bound(tasks) / unit_s, upper), upper
    upper_bounds[copy_base:] = 1.0
    integrality = np.zeros(columns)
    integrality[: n * k] = 1
    integrality[order_base:makespan] = 1
    objective = np.zeros(columns)
    objective[makespan] = 1.0
    constraints = [rows.constraint(columns)] if rows.lower else []
    return _Model(objective, constraints, integrality, Bounds(lower, upper_bounds), unit_s)


def _solve(model: _Model, time_limit_s: float, presolve: bool) -> OptimizeResult:
    options = {"time_limit": float(time_limit_s), "disp": False, "mip_rel_gap": 1e-7, "presolve": presolve}
    with _native_stdout_silenced():
        return milp(model.objective, constraints=model.constraints, integrality=model.integrality, bounds=model.bounds, options=options)


def ilp(tasks: TaskArrays, time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> Schedule:
    """Solve the scheduling MILP; see the module docstring."""
    n, k = tasks.n, tasks.k
    if n > MAX_TASKS:
        raise ScheduleError(f"ilp: {n} tasks is too many for the exact ILP (at most {MAX_TASKS}); use heft or peft")
    heuristics = _heuristics(tasks)
    upper = _upper_bound(tasks, heuristics)
    # Times in units of the upper bound keep big-M near 1. HiGHS rejects its own optimum as a "solve
    # error" when integrality slack times M breaks a row by more than its tolerance; then retry
    # without presolve, and with M a hundred times smaller.
    result = None
    for unit, presolve in ((upper, True), (upper, False), (100.0 * upper, False)):
        model = _build(tasks, upper, max(unit, 1e-12))
        result = _solve(model, time_limit_s, presolve)
        if result.status != 4:
            break
        log.info("ilp: HiGHS solve error (%s); retrying", result.message)
    assert result is not None
    order_base = n * k + n
    fallback = min(heuristics, key=lambda h: h.makespan_s) if heuristics else None
    if result.x is None:
        if fallback is not None:
            if result.status == 2:
                note = f"ilp: the MILP is infeasible (it counts memory conservatively); returned {fallback.algorithm}'s schedule"
            else:
                note = (
                    f"ilp: HiGHS found no schedule within {time_limit_s:g} s (status {result.status}: {result.message}); "
                    f"returned {fallback.algorithm}'s schedule"
                )
            log.info(note)
            return make_schedule(tasks, *_arrays(tasks, fallback), "ilp", notes=[note])
        raise ScheduleError(f"ilp: no schedule fits the devices' memory and capabilities ({result.message})")
    placement = np.array([int(np.argmax(result.x[i * k : (i + 1) * k])) for i in range(n)], dtype=np.int64)
    starts = result.x[n * k : order_base] * model.unit_s
    start, end = list_times(tasks, placement, order=_start_order(tasks, starts))
    gap = getattr(result, "mip_gap", None)
    if result.status == 0:
        note = f"ilp: optimal (HiGHS gap {0.0 if gap is None else gap:.2%}, {getattr(result, 'mip_node_count', 0)} nodes)"
    else:
        bound = getattr(result, "mip_dual_bound", float("nan"))
        note = f"ilp: time limit {time_limit_s:g} s reached; gap {gap:.2%}, lower bound {bound * model.unit_s:.6g} s"
    solved = make_schedule(tasks, placement, start, end, "ilp", notes=[note])
    if fallback is not None and fallback.makespan_s < solved.makespan_s * (1 - 1e-9):
        why = "counts memory conservatively" if np.isfinite(tasks.capacity).any() else "stopped early"
        notes = [note, f"ilp: the MILP {why}; {fallback.algorithm}'s schedule is faster ({fallback.makespan_s:.6g} s), returned it"]
        return make_schedule(tasks, *_arrays(tasks, fallback), "ilp", notes=notes)
    return solved


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Keep HiGHS's occasional native debug prints (written straight to fd 1) out of the CLI's stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _start_order(tasks: TaskArrays, starts: np.ndarray) -> list[int]:
    """A topological order that follows the solver's start times (ties: topological index)."""
    waiting = [len(p) for p in tasks.pred_edges]
    heap = [(float(starts[i]), i) for i in range(tasks.n) if waiting[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for e in tasks.succ_edges[i].tolist():
            j = int(tasks.edge_dst[e])
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (float(starts[j]), j))
    return order


def _arrays(tasks: TaskArrays, schedule: Schedule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {d: i for i, d in enumerate(tasks.devices)}
    slots = {slot.node: slot for slot in schedule.slots}
    placement = np.array([index[slots[name].device] for name in tasks.names], dtype=np.int64)
    start = np.array([slots[name].start_s for name in tasks.names])
    end = np.array([slots[name].end_s for name in tasks.names])
    return placement, start, end
