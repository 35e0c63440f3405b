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
(big-M on o and x, M = an upper bound on the makespan); a device's total busy time fits within
C (a valid cut that spares HiGHS the symmetric orders of independent nodes). Memory capacities
are the Schedule's own count, weights plus the peak of live intervals over time
(:mod:`hetero.schedulers.ilp_memory`), exact but for interval starts closer than 1e-5 of the
bound, which it counts as overlapping. Minimise C.

Nodes keep the device order of the solver's o variables (start times alone cannot order a
zero-second node and another starting at the same instant). Without capacities, times come back
left-shifted through the same list timing the other schedulers use; with them, as the least
times that keep that order and the solver's memory branches (left-shifting could make intervals
overlap); either way never later than the solver's. With a time limit, the best schedule found
is returned with HiGHS's optimality gap in the notes. heft, peft, greedy, single and dp run
first: their best makespan bounds C (and M); when one of them still beats the MILP's schedule (a
time limit, or the start separation), its schedule is returned under its own algorithm's name,
with ilp's notes saying why.

Energy goals (:class:`~hetero.schedulers.base.Goal`, rows in :mod:`hetero.schedulers.ilp_energy`):
``objective="energy"`` minimises a request's energy, a budget adds the row energy <= budget; the
makespan bound is then the serial one and the safety net dp and single for the same goal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from scipy.sparse import coo_matrix

from hetero.problem import ready_order
from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import LATENCY, Goal, TaskArrays, list_times, make_schedule, placement_indices, successor_lists
from hetero.schedulers.dp import dp
from hetero.schedulers.greedy import greedy
from hetero.schedulers.heft import heft
from hetero.schedulers.ilp_energy import energy_row
from hetero.schedulers.ilp_memory import SEPARATION, Columns, MemoryModel, add_memory_rows, retime
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


def _heuristics(tasks: TaskArrays, goal: Goal = LATENCY) -> list[Schedule]:
    """The list schedulers' results (those that find one): an upper bound and a safety net; for an
    energy goal, dp's and single's for that goal."""
    found = []
    if goal.uses_energy:
        for algorithm in (dp, single):
            try:
                found.append(algorithm(tasks, goal))
            except ScheduleError as err:
                log.info("ilp: %s", err)
        return found
    for algorithm in (heft, peft, greedy, single, dp):
        try:
            found.append(algorithm(tasks))
        except ScheduleError as err:
            log.info("ilp: %s", err)
    return found


def _upper_bound(tasks: TaskArrays, heuristics: list[Schedule]) -> float:
    """A makespan that the best solution of the MILP does not exceed."""
    if heuristics:
        best = min(s.makespan_s for s in heuristics)
        # slack: the heuristic's own schedule must stay feasible (with memory, up to the start separation)
        slack = 1e-3 if np.isfinite(tasks.capacity_bytes).any() else 1e-6
        return best * (1 + slack) + 1e-9
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
    memory: MemoryModel
    pairs: tuple[tuple[int, int], ...]  # node pairs that no path orders; o[i, j] = 1: i before j on a shared device
    order_base: int


def _build(tasks: TaskArrays, upper_s: float, unit_s: float, goal: Goal = LATENCY, energy_unit_J: float = 1.0) -> _Model:
    """The precedence/disjunctive MILP with every time divided by unit_s (M = the upper bound) and,
    for an energy goal, every joule by energy_unit_J."""
    n, k = tasks.n, tasks.k
    upper = upper_s / unit_s
    big_m = max(upper, 1e-9)
    w = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, 0.0) / unit_s
    comm, input_s, result_s = tasks.comm_s / unit_s, tasks.input_s / unit_s, tasks.result_s / unit_s
    capable = np.isfinite(tasks.compute_s)
    columns = Columns()
    x_base = columns.add(n * k, 0.0, 1.0, integer=True)
    s_base = columns.add(n, 0.0, upper)

    def x(i: int, d: int) -> int:
        return x_base + i * k + d

    def s(i: int) -> int:
        return s_base + i

    for i in range(n):
        for d in range(k):
            columns.upper[x(i, d)] = float(capable[i, d])
    above = _ancestors(tasks)
    pairs = [(i, j) for j in range(n) for i in range(j) if not (above[j] >> i) & 1]
    order_base = columns.add(len(pairs), 0.0, 1.0, integer=True)
    makespan = columns.add(1, min(_lower_bound(tasks) / unit_s, upper), upper)
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
    for d in range(k):  # a valid cut: a device's busy time fits within the makespan
        rows.add({makespan: 1.0, **{x(i, d): -float(w[i, d]) for i in range(n) if capable[i, d]}}, lower=0.0)
    memory = add_memory_rows(tasks, columns, rows.add, x, s, unit_s, upper)
    energy_terms: dict[int, float] = {}
    if goal.uses_energy:
        energy_terms = energy_row(tasks, columns, rows.add, x, makespan, unit_s, energy_unit_J)
        if goal.energy_budget_J is not None:
            rows.add(energy_terms, upper=goal.energy_budget_J / energy_unit_J)
    objective = np.zeros(len(columns))
    if goal.objective == "energy":
        for col, value in energy_terms.items():
            objective[col] += value
    else:
        objective[makespan] = 1.0
    constraints = [rows.constraint(len(columns))] if rows.lower else []
    bounds = Bounds(np.array(columns.lower), np.array(columns.upper))
    return _Model(objective, constraints, np.array(columns.integer), bounds, unit_s, memory, tuple(pairs), order_base)


def _solve(model: _Model, time_limit_s: float, presolve: bool) -> OptimizeResult:
    options = {"time_limit": float(time_limit_s), "disp": False, "mip_rel_gap": 1e-7, "presolve": presolve}
    with _native_stdout_silenced():
        return milp(model.objective, constraints=model.constraints, integrality=model.integrality, bounds=model.bounds, options=options)


def ilp(tasks: TaskArrays, time_limit_s: float = DEFAULT_TIME_LIMIT_S, safety_net: bool = True,
        goal: Goal = LATENCY) -> Schedule:
    """Solve the scheduling MILP for the goal; see the module docstring.

    With ``safety_net=False`` the MILP's own schedule is returned even when a heuristic's is faster
    (for testing the model), and ScheduleError is raised when the MILP finds none.
    """
    n, k = tasks.n, tasks.k
    if n > MAX_TASKS:
        raise ScheduleError(f"ilp: {n} tasks is too many for the exact ILP (at most {MAX_TASKS}); use heft or peft")
    heuristics = _heuristics(tasks, goal)
    upper = _upper_bound(tasks, [] if goal.uses_energy else heuristics)
    energy_unit = 1.0
    if goal.uses_energy and heuristics:
        energy_unit = max(min(tasks.energy.request_J(tasks, placement_indices(tasks, h), h.makespan_s) for h in heuristics), 1e-12)
    # Times in units of the upper bound keep big-M near 1. HiGHS rejects its own optimum as a "solve
    # error" when integrality slack times M breaks a row by more than its tolerance, and its presolve
    # has called feasible memory models infeasible (scipy 1.17: a heuristic's schedule satisfied
    # every row); then retry without presolve, and with M a hundred times smaller.
    result = model = None
    for unit, presolve in ((upper, True), (upper, False), (100.0 * upper, False)):
        model = _build(tasks, upper, max(unit, 1e-12), goal, energy_unit)
        result = _solve(model, time_limit_s, presolve)
        if result.status not in (2, 4):
            break
        log.info("ilp: HiGHS says %s; retrying", result.message)
    assert result is not None and model is not None
    fallback = min(heuristics, key=lambda h: goal.schedule_key(tasks, h)) if heuristics and safety_net else None
    solved, note = None, ""
    if result.x is not None:
        solved, note = _solution(tasks, model, result, time_limit_s)
    if solved is None:
        if result.x is None and result.status == 2 and goal.energy_budget_J is not None:
            why = f"no schedule meets the energy budget of {goal.energy_budget_J:.6g} J per request within the devices' memory"
        elif result.x is None and result.status == 2 and heuristics and not goal.uses_energy:
            why = (f"the MILP has no schedule within {upper:.6g} s, the best heuristic's makespan plus slack "
                   f"(it counts intervals starting within {SEPARATION:g} x that of each other as overlapping)")
        elif result.x is None and result.status == 2:
            why = "the MILP is infeasible: no schedule fits the devices' memory and capabilities"
        elif result.x is None:
            why = f"HiGHS found no schedule within {time_limit_s:g} s (status {result.status}: {result.message})"
        else:
            why = note
        if fallback is None:
            raise ScheduleError(f"ilp: {why}")
        return _returned(fallback, [f"ilp: {why}; returned {fallback.algorithm}'s schedule"])
    if goal.uses_energy:
        return _better_for(goal, tasks, solved, fallback, note)
    if fallback is not None and fallback.makespan_s < solved.makespan_s * (1 - 1e-9):
        if result.status != 0:
            why = "the solver stopped early"
        elif model.memory.intervals:
            why = f"the MILP counts intervals starting within {SEPARATION:g} x the bound of each other as overlapping"
        else:
            why = "the MILP and the schedule's timing disagree: a bug, please report it"
        return _returned(fallback, [note, f"ilp: {fallback.algorithm}'s schedule ({fallback.makespan_s:.6g} s) beats the MILP's "
                                          f"({solved.makespan_s:.6g} s; {why}); returned {fallback.algorithm}'s"])
    return solved


def _better_for(goal: Goal, tasks: TaskArrays, solved: Schedule, fallback: Schedule | None, note: str) -> Schedule:
    """The MILP's schedule, or the safety net's when that is better for the goal (or the MILP's misses the budget)."""
    mine = goal.schedule_key(tasks, solved)
    theirs = goal.schedule_key(tasks, fallback) if fallback is not None else None
    if theirs is not None and (mine is None or theirs[0] < mine[0] * (1 - 1e-9)):
        return _returned(fallback, [note, f"ilp: {fallback.algorithm}'s schedule is better for the goal than the MILP's "
                                          f"(the solver stopped early or within its tolerances); returned {fallback.algorithm}'s"])
    if mine is None:
        raise ScheduleError(f"ilp: the MILP's schedule misses the energy budget of {goal.energy_budget_J:.6g} J per request "
                            "(HiGHS's tolerances); use dp")
    return solved


def _solution(tasks: TaskArrays, model: _Model, result: OptimizeResult, time_limit_s: float) -> tuple[Schedule | None, str]:
    """The schedule of a MILP solution and its note; (None, why) when its times cannot be made exact."""
    n, k = tasks.n, tasks.k
    placement = np.array([int(np.argmax(result.x[i * k : (i + 1) * k])) for i in range(n)], dtype=np.int64)
    starts = result.x[n * k : n * k + n] * model.unit_s
    order = _solver_order(tasks, model, result.x, placement, starts)
    gap = getattr(result, "mip_gap", None)
    if result.status == 0:
        note = f"ilp: optimal (HiGHS gap {0.0 if gap is None else gap:.2%}, {getattr(result, 'mip_node_count', 0)} nodes)"
    else:
        bound = getattr(result, "mip_dual_bound", float("nan"))
        note = f"ilp: time limit {time_limit_s:g} s reached; gap {gap:.2%}, lower bound {bound * model.unit_s:.6g} s"
    if model.memory.intervals:
        # Left-shifting could make intervals overlap that the solver kept apart: keep its branches.
        times = retime(tasks, placement, order, result.x, model.memory, model.unit_s)
        if times is None:
            return None, "the MILP's solution is inconsistent beyond HiGHS's tolerances"
        start, end = times
    else:
        start, end = list_times(tasks, placement, order=order)
    solved = make_schedule(tasks, placement, start, end, "ilp", notes=[note])
    over = [d for d in tasks.devices if solved.memory_bytes[d] > tasks.capacity_bytes[tasks.devices.index(d)]]
    if over:
        return None, f"the MILP's schedule needs {solved.memory_bytes[over[0]]} bytes on {over[0]} (a model error)"
    return solved, note


def _returned(schedule: Schedule, notes: list[str]) -> Schedule:
    """Another algorithm's schedule, named by its own algorithm, with ilp's notes first."""
    for note in notes:
        log.info(note)
    return dataclasses.replace(schedule, notes=tuple(notes) + schedule.notes)


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


def _solver_order(tasks: TaskArrays, model: _Model, solution: np.ndarray, placement: np.ndarray, starts: np.ndarray) -> list[int]:
    """A topological order that keeps the solver's order of nodes sharing a device (its o variables).

    Start times alone cannot say it: a zero-second node and another starting at the same instant
    are tied up to HiGHS's tolerance. Ties between unordered nodes follow the solver's starts.
    """
    successors = successor_lists(tasks)
    waiting = [len(p) for p in tasks.pred_edges]
    for p, (i, j) in enumerate(model.pairs):
        if placement[i] == placement[j]:
            first, second = (i, j) if solution[model.order_base + p] > 0.5 else (j, i)
            successors[first].append(second)
            waiting[second] += 1
    ends = starts + tasks.compute_s[np.arange(tasks.n), placement]
    order = ready_order(successors, waiting, lambda i: (float(starts[i]), float(ends[i])))
    if len(order) < tasks.n:  # a cycle of zero-second nodes tied in time: any topological order by start does
        return _start_order(tasks, starts)
    return order


def _start_order(tasks: TaskArrays, starts: np.ndarray) -> list[int]:
    """A topological order that follows the solver's start times (ties: topological index)."""
    return ready_order(successor_lists(tasks), [len(p) for p in tasks.pred_edges], lambda i: float(starts[i]))
