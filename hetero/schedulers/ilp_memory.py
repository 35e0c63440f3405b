"""The ILP's memory rows: the capacity of each device at every instant, as Schedule counts it.

:func:`hetero.schedule.memory_required` charges a device its weights plus the peak of its live
intervals: a node's output from its start until its release (the end of its last same-device
reader, the arrival of its last transfer out, graph output included), a received copy from the
producer's end until the reader's end, graph input from its transfer's start until the reader's
end. Ends free before starts at the same instant; empty intervals count for nothing.

The peak is reached at the start of some non-empty interval p, so one row per (p, device d)
suffices: weights(d) + bytes(p) + sum of the intervals q counted at p's start <= capacity(d),
active when p sits on d. q is *not* counted only if the MILP picks a branch that proves it dead
there: q ends no later than p starts (e[q, p]), or q starts at least ``separation`` later
(o[q, p]); c[q, p] >= on(q, d) + on(p, d) - 1 - e - o. The separation (1e-5 of the makespan
bound, above HiGHS's tolerances) is the one departure from the schedule's semantics: a q starting
less than that after p is counted although not yet live. Pairs that never share a device, or
that the graph orders by more than the separation, get no variables.

:func:`retime` turns a solution into exact slot times: the least times that satisfy precedence,
the solver's device order and the memory branches the solution relied on, so the memory bound
holds exactly (in floating point) and no time exceeds the solver's by more than its tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hetero.schedulers.base import TaskArrays

SEPARATION = 1e-5  # of the makespan bound: o-branch starts at least this far apart


class Columns:
    """Variable bookkeeping for scipy's milp: bounds and integrality per column."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[int] = []

    def add(self, count: int, lower: float = 0.0, upper: float = math.inf, integer: bool = False) -> int:
        """Append ``count`` columns; returns the index of the first."""
        base = len(self.lower)
        self.lower.extend([lower] * count)
        self.upper.extend([upper] * count)
        self.integer.extend([int(integer)] * count)
        return base

    def __len__(self) -> int:
        return len(self.lower)


Terms = dict[int, float]
AddRow = Callable[..., None]


@dataclass
class Interval:
    """A live interval that may sit on a capped device: a node's output, a received copy, graph input."""

    kind: str  # "output" | "copy" | "input"
    node: int  # output/input: the node; copy: the reader
    edge: int  # copy: the edge; otherwise -1
    nbytes: float
    devices: tuple[int, ...]  # capped devices it may sit on
    on: dict[int, int] = field(default_factory=dict)  # device -> column of the 0/1 "sits there"
    release: int = -1  # output: column of its release time
    nonempty: int = -1  # column of the binary "not empty", -1 when it can never be empty


@dataclass(frozen=True)
class Pair:
    """Interval q, possibly counted at the start of interval p."""

    q: int
    p: int
    counted: int
    ends_before: int  # column of e[q, p]
    starts_after: int  # column of o[q, p], -1 when the graph rules that branch out


@dataclass
class MemoryModel:
    """The columns the memory rows added, for :func:`retime`."""

    intervals: list[Interval]
    pairs: list[Pair]
    separation: float  # in model units


class _Formulation:
    """Expressions of interval starts and ends in the MILP's columns (times in model units)."""

    def __init__(self, tasks: TaskArrays, x: Callable[[int, int], int], s: Callable[[int], int], w: np.ndarray,
                 input_s: np.ndarray) -> None:
        self.tasks, self.x, self.s, self.w, self.input_s = tasks, x, s, w, input_s

    def end_of_node(self, i: int) -> Terms:
        return {self.s(i): 1.0, **{self.x(i, d): float(self.w[i, d]) for d in range(self.tasks.k)}}

    def start(self, interval: Interval) -> Terms:
        tasks = self.tasks
        if interval.kind == "output":
            return {self.s(interval.node): 1.0}
        if interval.kind == "copy":
            return self.end_of_node(int(tasks.edge_src[interval.edge]))
        return {self.s(interval.node): 1.0, **{self.x(interval.node, d): -float(self.input_s[interval.node, d]) for d in range(tasks.k)}}

    def end(self, interval: Interval) -> Terms:
        if interval.kind == "output":
            return {interval.release: 1.0}
        return self.end_of_node(interval.node)


def _combine(*parts: tuple[float, Terms]) -> Terms:
    """The sum of signed linear expressions."""
    out: Terms = {}
    for sign, terms in parts:
        for col, value in terms.items():
            out[col] = out.get(col, 0.0) + sign * value
    return out


def _intervals(tasks: TaskArrays, capped: list[int]) -> list[Interval]:
    capable = np.isfinite(tasks.compute_s)
    found: list[Interval] = []
    for i in range(tasks.n):
        devices = tuple(d for d in capped if capable[i, d])
        if tasks.output_bytes[i] > 0 and devices:
            found.append(Interval("output", i, -1, float(tasks.output_bytes[i]), devices))
        remote = tuple(d for d in devices if tasks.devices[d] != tasks.host)
        if tasks.input_bytes[i] > 0 and remote:
            found.append(Interval("input", i, -1, float(tasks.input_bytes[i]), remote))
    for e, (u, v) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist())):
        devices = tuple(d for d in capped if capable[v, d] and np.flatnonzero(capable[u]).tolist() != [d])
        if tasks.edge_bytes[e] > 0 and devices:
            found.append(Interval("copy", v, e, float(tasks.edge_bytes[e]), devices))
    return found


def _start_node_and_offsets(tasks: TaskArrays, interval: Interval) -> tuple[int, float, float]:
    """The node whose start the interval's start follows, and the least and most offset from it (seconds)."""
    w = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, np.nan)
    if interval.kind == "output":
        return interval.node, 0.0, 0.0
    if interval.kind == "copy":
        u = int(tasks.edge_src[interval.edge])
        return u, float(np.nanmin(w[u])), float(np.nanmax(w[u]))
    seconds = tasks.input_s[interval.node, list(interval.devices)]
    return interval.node, -float(seconds.max()), -float(seconds.min())


def _least_gaps(tasks: TaskArrays) -> np.ndarray:
    """gap[a, b]: a lower bound on start(b) - start(a) over all placements (-inf when no path orders them)."""
    fastest = np.nanmin(np.where(np.isfinite(tasks.compute_s), tasks.compute_s, np.nan), axis=1)
    gap = np.full((tasks.n, tasks.n), -np.inf)
    for a in range(tasks.n):
        gap[a, a] = 0.0
        for v in range(a + 1, tasks.n):
            for e in tasks.pred_edges[v].tolist():
                u = int(tasks.edge_src[e])
                if gap[a, u] > -np.inf:
                    gap[a, v] = max(gap[a, v], gap[a, u] + fastest[u])
    return gap


def _least_length(tasks: TaskArrays, interval: Interval) -> float:
    """A lower bound on the interval's length in seconds over its possible devices."""
    w = tasks.compute_s
    if interval.kind == "output":
        return float(min(w[interval.node, d] for d in interval.devices))
    if interval.kind == "input":
        return float(min(w[interval.node, d] + tasks.input_s[interval.node, d] for d in interval.devices))
    u = int(tasks.edge_src[interval.edge])
    comm = [tasks.comm_s[interval.edge, a, b] for a in np.flatnonzero(np.isfinite(w[u])).tolist() for b in interval.devices if a != b]
    return float(min(comm, default=0.0) + min(w[interval.node, d] for d in interval.devices))


def add_memory_rows(
    tasks: TaskArrays, columns: Columns, add_row: AddRow, x: Callable[[int, int], int], s: Callable[[int], int],
    unit_s: float, upper: float,
) -> MemoryModel:
    """Add the exact memory-capacity rows (see the module docstring); times are in units of unit_s."""
    capped = [d for d in range(tasks.k) if math.isfinite(tasks.capacity_bytes[d])]
    intervals = _intervals(tasks, capped) if capped else []
    separation = SEPARATION * upper
    big_m = max(upper, 1e-9)
    w = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, 0.0) / unit_s
    comm, input_s, result_s = tasks.comm_s / unit_s, tasks.input_s / unit_s, tasks.result_s / unit_s
    capable = np.isfinite(tasks.compute_s)
    form = _Formulation(tasks, x, s, w, input_s)
    total = float(tasks.weight_bytes.sum()) + sum(iv.nbytes for iv in intervals)
    scale = 1.0 / max(total, 1.0)  # bytes in units of everything there is: coefficients <= 1
    for d in capped:
        if tasks.weight_bytes.any():
            add_row({x(i, d): float(tasks.weight_bytes[i]) * scale for i in range(tasks.n)}, upper=float(tasks.capacity_bytes[d]) * scale)
    for iv in intervals:
        if iv.kind == "copy":
            u, v = int(tasks.edge_src[iv.edge]), iv.node
            base = columns.add(len(iv.devices), 0.0, 1.0)
            for slot, d in enumerate(iv.devices):
                iv.on[d] = base + slot
                add_row({base + slot: 1.0, x(v, d): -1.0, x(u, d): 1.0}, lower=0.0)
        else:
            iv.on = {d: x(iv.node, d) for d in iv.devices}
        if iv.kind == "output":
            _add_release(tasks, iv, columns, add_row, form, x, s, w, comm, result_s, capable, upper, big_m)
        if _least_length(tasks, iv) <= 0.0:
            iv.nonempty = columns.add(1, 0.0, 1.0, integer=True)
            add_row({**_combine((1.0, form.end(iv)), (-1.0, form.start(iv))), iv.nonempty: -big_m}, upper=0.0)
    gaps = _least_gaps(tasks)
    anchors = [_start_node_and_offsets(tasks, iv) for iv in intervals]
    pairs: list[Pair] = []
    rows_of: dict[int, list[Pair]] = {p: [] for p in range(len(intervals))}
    for p, ip in enumerate(intervals):
        for q, iq in enumerate(intervals):
            common = sorted(set(ip.devices) & set(iq.devices))
            if q == p or not common or _never_together(tasks, iq, ip):
                continue
            (node_p, least_p, most_p), (node_q, least_q, most_q) = anchors[p], anchors[q]
            if (gaps[node_p, node_q] + least_q - most_p) / unit_s >= separation:
                continue  # q always starts well after p: never live at p's start
            starts_after = -1
            if not (gaps[node_q, node_p] + least_p - most_q) / unit_s > -separation:
                starts_after = columns.add(1, 0.0, 1.0, integer=True)
                terms = _combine((1.0, form.start(iq)), (-1.0, form.start(ip)))
                terms[starts_after] = -(big_m + separation)
                add_row(terms, lower=-big_m)
            ends_before = columns.add(1, 0.0, 1.0, integer=True)
            terms = _combine((1.0, form.start(ip)), (-1.0, form.end(iq)))
            terms[ends_before] = -big_m
            add_row(terms, lower=-big_m)
            counted = columns.add(1, 0.0, 1.0)
            for d in common:
                terms = {counted: 1.0, ends_before: 1.0}
                if starts_after >= 0:
                    terms[starts_after] = 1.0
                terms[iq.on[d]] = terms.get(iq.on[d], 0.0) - 1.0
                terms[ip.on[d]] = terms.get(ip.on[d], 0.0) - 1.0
                add_row(terms, lower=-1.0)
            pair = Pair(q, p, counted, ends_before, starts_after)
            pairs.append(pair)
            rows_of[p].append(pair)
    switch = 2.0  # exceeds any row's scaled bytes: turns a row off
    for p, ip in enumerate(intervals):
        for d in ip.devices:
            activation = switch if ip.nonempty < 0 else 2 * switch
            terms: Terms = {x(i, d): float(tasks.weight_bytes[i]) * scale for i in range(tasks.n) if tasks.weight_bytes[i]}
            for pair in rows_of[p]:
                terms[pair.counted] = terms.get(pair.counted, 0.0) + intervals[pair.q].nbytes * scale
            terms[ip.on[d]] = terms.get(ip.on[d], 0.0) + switch
            if ip.nonempty >= 0:
                terms[ip.nonempty] = switch
            add_row(terms, upper=(float(tasks.capacity_bytes[d]) - ip.nbytes) * scale + activation)
    return MemoryModel(intervals, pairs, separation)


def _never_together(tasks: TaskArrays, a: Interval, b: Interval) -> bool:
    """A node's output and a copy of it never sit on the same device."""
    for one, other in ((a, b), (b, a)):
        if one.kind == "output" and other.kind == "copy" and int(tasks.edge_src[other.edge]) == one.node:
            return True
    return False


def _add_release(tasks: TaskArrays, iv: Interval, columns: Columns, add_row: AddRow, form: _Formulation,
                 x: Callable[[int, int], int], s: Callable[[int], int], w: np.ndarray, comm: np.ndarray,
                 result_s: np.ndarray, capable: np.ndarray, upper: float, big_m: float) -> None:
    """release >= end, end + graph-output transfer, same-device readers' ends, transfers' arrivals."""
    i, k = iv.node, tasks.k
    iv.release = columns.add(1, 0.0, upper)
    own_end = form.end_of_node(i)
    add_row({iv.release: 1.0, s(i): -1.0, **{x(i, d): -float(w[i, d] + result_s[i, d]) for d in range(k)}}, lower=0.0)
    for e in tasks.succ_edges[i].tolist():
        j = int(tasks.edge_dst[e])
        for d in range(k):
            if capable[i, d] and capable[j, d]:
                terms = _combine((1.0, {iv.release: 1.0}), (-1.0, form.end_of_node(j)))
                terms[x(i, d)] = terms.get(x(i, d), 0.0) - big_m
                terms[x(j, d)] = terms.get(x(j, d), 0.0) - big_m
                add_row(terms, lower=-2 * big_m)
        for a in range(k):
            for b in range(k):
                seconds = float(comm[e, a, b])
                if a == b or seconds <= 0 or not (capable[i, a] and capable[j, b]):
                    continue
                reach = big_m + seconds
                terms = _combine((1.0, {iv.release: 1.0}), (-1.0, own_end))
                terms[x(i, a)] = terms.get(x(i, a), 0.0) - reach
                terms[x(j, b)] = terms.get(x(j, b), 0.0) - reach
                add_row(terms, lower=seconds - 2 * reach)


# ---------------------------------------------------------------- exact times from a solution


class _Times:
    """Node starts, and interval starts and ends, computed exactly as make_schedule and memory_required do."""

    def __init__(self, tasks: TaskArrays, placement: np.ndarray) -> None:
        self.tasks, self.placement = tasks, placement
        self.duration = [float(tasks.compute_s[i, placement[i]]) for i in range(tasks.n)]
        self.start = [0.0] * tasks.n

    def end(self, i: int) -> float:
        return self.start[i] + self.duration[i]

    def interval_start(self, iv: Interval) -> float:
        if iv.kind == "output":
            return self.start[iv.node]
        if iv.kind == "copy":
            return self.end(int(self.tasks.edge_src[iv.edge]))
        return max(0.0, self.start[iv.node] - float(self.tasks.input_s[iv.node, self.placement[iv.node]]))

    def interval_end(self, iv: Interval) -> float:
        if iv.kind != "output":
            return self.end(iv.node)
        tasks, i = self.tasks, iv.node
        d = int(self.placement[i])
        release = self.end(i)
        if tasks.result_bytes[i] and tasks.devices[d] != tasks.host:
            release = max(release, self.end(i) + float(tasks.result_s[i, d]))
        for e in tasks.succ_edges[i].tolist():
            j = int(tasks.edge_dst[e])
            if self.placement[j] == d:
                release = max(release, self.end(j))
            else:
                release = max(release, self.end(i) + float(tasks.comm_s[e, d, self.placement[j]]))
        return release

    def raise_interval_start(self, iv: Interval, at_least: float) -> bool:
        """Move the interval's start to >= at_least by delaying its anchor node; True when something moved."""
        if self.interval_start(iv) >= at_least:
            return False
        tasks = self.tasks
        if iv.kind == "output":
            node, target = iv.node, at_least
        elif iv.kind == "copy":
            node = int(tasks.edge_src[iv.edge])
            target = at_least - self.duration[node]
        else:
            node = iv.node
            target = at_least + float(tasks.input_s[iv.node, self.placement[iv.node]])
        self.start[node] = max(self.start[node], target)
        while self.interval_start(iv) < at_least:  # rounding: step up by ulps until it holds as evaluated
            self.start[node] = math.nextafter(self.start[node], math.inf)
        return True


def retime(
    tasks: TaskArrays, placement: np.ndarray, order: list[int], solution: np.ndarray, model: MemoryModel, unit_s: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The least slot times keeping precedence, the device order and the solution's memory branches.

    None when they do not settle (a solution inconsistent beyond HiGHS's tolerances; never seen).
    """
    times = _Times(tasks, placement)
    gap_s = 0.5 * model.separation * unit_s
    intervals = model.intervals

    def sits(iv: Interval) -> int:
        return int(placement[iv.node])  # outputs, inputs and copies all sit where their node runs

    live = {p: sits(iv) in iv.devices and (iv.kind != "copy" or placement[int(tasks.edge_src[iv.edge])] != sits(iv))
            for p, iv in enumerate(intervals)}
    kept_empty = [iv for p, iv in enumerate(intervals) if live[p] and iv.nonempty >= 0 and solution[iv.nonempty] < 0.5]
    ends_before: list[tuple[Interval, Interval]] = [(iv, iv) for iv in kept_empty]
    starts_after: list[tuple[Interval, Interval]] = []
    for pair in model.pairs:
        iq, ip = intervals[pair.q], intervals[pair.p]
        if not (live[pair.q] and live[pair.p]) or sits(iq) != sits(ip):
            continue
        if ip.nonempty >= 0 and solution[ip.nonempty] < 0.5:
            continue  # p is kept empty: its row is off
        # Keep every branch the solver took (its counted-ness may sit above its forced value): what
        # no branch excludes was counted.
        if solution[pair.ends_before] > 0.5:
            ends_before.append((iq, ip))
        elif pair.starts_after >= 0 and solution[pair.starts_after] > 0.5:
            starts_after.append((iq, ip))
    previous: dict[int, int] = {}
    chain: list[tuple[int, int]] = []
    for i in order:
        d = int(placement[i])
        if d in previous:
            chain.append((previous[d], i))
        previous[d] = i
    for _ in range(4 * (tasks.n + len(intervals)) + 8):
        moved = False
        for i in range(tasks.n):
            d = int(placement[i])
            ready = float(tasks.input_s[i, d])
            for e in tasks.pred_edges[i].tolist():
                u = int(tasks.edge_src[e])
                ready = max(ready, times.end(u) + float(tasks.comm_s[e, placement[u], d]) if placement[u] != d else times.end(u))
            if times.start[i] < ready:
                times.start[i], moved = ready, True
        for before, after in chain:
            if times.start[after] < times.end(before):
                times.start[after], moved = times.end(before), True
        for iq, ip in ends_before:
            moved |= times.raise_interval_start(ip, times.interval_end(iq))
        for iq, ip in starts_after:
            moved |= times.raise_interval_start(iq, times.interval_start(ip) + gap_s)
        if not moved:
            start = np.array(times.start)
            return start, start + np.array(times.duration)
    return None
