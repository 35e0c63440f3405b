"""Pipeline: contiguous stages on distinct devices minimising the bottleneck (throughput objective).

The dynamic program of Narayanan et al., "PipeDream: generalized pipeline parallelism for DNN
training", SOSP 2019 (section 3.1), without replication, over heterogeneous devices: the nodes in
topological order split into contiguous stages, each on its own device; the steady-state period
(seconds between results) is the busiest resource per request: a device's compute, or a link's
transfers (each edge its own transfer, graph input and output included). Unlike the latency
model, where transfers do not contend, a link is a serial resource here: in the steady state
every request's transfers share its bandwidth, so the period can exceed one request's makespan.

A[S, e][j] = min over i of max(A[S - e, d][i], link(d -> e, stage i..j), stage(i..j on e)) over
device sets S with the last stage on e. Data entering a stage is charged to the link from the
previous stage, which is exact for chains and series of segments; for other DAGs the period of
the chosen placement is then evaluated exactly. Memory is bounded conservatively per stage
(weights, outputs, received copies and graph input all live together). For long graphs with many
devices only the boundaries with the least crossing data are considered (noted in the result).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import TaskArrays, list_times, make_schedule

WORK_BUDGET = 2e8


def pipeline_period(tasks: TaskArrays, placement: np.ndarray) -> float:
    """Steady-state seconds per request of a placement: its busiest device or link."""
    busy: dict[tuple[str, str], float] = defaultdict(float)
    for i in range(tasks.n):
        d = int(placement[i])
        device = tasks.devices[d]
        busy[(device, device)] += float(tasks.compute_s[i, d])
        if tasks.input_s[i, d]:
            busy[(tasks.host, device)] += float(tasks.input_s[i, d])
        if tasks.result_s[i, d]:
            busy[(device, tasks.host)] += float(tasks.result_s[i, d])
    for e, (u, v) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist())):
        a, b = int(placement[u]), int(placement[v])
        if a != b:
            busy[(tasks.devices[a], tasks.devices[b])] += float(tasks.comm_s[e, a, b])
    return max(busy.values(), default=0.0)


def _boundaries(tasks: TaskArrays) -> np.ndarray:
    """Candidate stage boundaries (positions 0..n), all of them when the DP is small enough."""
    n, k = tasks.n, tasks.k
    limit = max(2, int(math.sqrt(WORK_BUDGET / (2**k * k * k))))
    if n + 1 <= limit:
        return np.arange(n + 1)
    crossing = np.zeros(n + 2)
    np.add.at(crossing, tasks.edge_src + 1, tasks.edge_bytes)
    np.add.at(crossing, tasks.edge_dst + 1, -tasks.edge_bytes)
    crossing = np.cumsum(crossing)[: n + 1]
    interior = np.argsort(crossing[1:n], kind="stable")[: limit - 2] + 1
    return np.unique(np.concatenate([[0, n], interior]))


def _incoming(tasks: TaskArrays, cuts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[a, b]: total weight of edges u -> v with u < cuts[a] <= v < cuts[b]."""
    size = len(cuts)
    diff = np.zeros((size + 1, size + 1))
    for u, v, w in zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist(), weights.tolist()):
        first = int(np.searchsorted(cuts, u + 1))  # first boundary index with cut > u
        last = int(np.searchsorted(cuts, v, side="right")) - 1  # last with cut <= v
        stop = int(np.searchsorted(cuts, v + 1))  # first b with cut > v
        if first <= last and stop < size:
            diff[first, stop] += w
            diff[last + 1, stop] -= w
    return np.cumsum(np.cumsum(diff, axis=0), axis=1)[:size, :size]


def _span(prefix_sums: np.ndarray) -> np.ndarray:
    """[a, b] = prefix_sums[b] - prefix_sums[a]: the total over the stage from cut a to cut b."""
    return prefix_sums[None, :] - prefix_sums[:, None]


def _stage_costs(tasks: TaskArrays, cuts: np.ndarray) -> np.ndarray:
    """[e, a, b]: bottleneck of the stage cuts[a]..cuts[b] alone on device e (inf where impossible)."""
    size, k = len(cuts), tasks.k

    def prefix(values: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])[cuts]

    finite = np.isfinite(tasks.compute_s)
    compute = prefix(np.where(finite, tasks.compute_s, 0.0))
    missing = prefix((~finite).astype(np.float64))
    inputs, results = prefix(tasks.input_s), prefix(tasks.result_s)
    resident = _span(prefix((tasks.weight_bytes + tasks.output_bytes).astype(np.float64)))
    graph_input = _span(prefix(tasks.input_bytes.astype(np.float64)))
    received = _incoming(tasks, cuts, tasks.edge_bytes.astype(np.float64))
    costs = np.full((k, size, size), math.inf)
    upper = np.triu(np.ones((size, size), dtype=bool), 1)
    for e in range(k):
        stage = np.maximum(_span(compute[:, e]), np.maximum(_span(inputs[:, e]), _span(results[:, e])))
        ok = upper & (_span(missing[:, e]) == 0)
        if math.isfinite(tasks.capacity_bytes[e]):
            memory = resident + received
            if tasks.devices[e] != tasks.host:
                memory = memory + graph_input
            ok &= memory <= tasks.capacity_bytes[e]
        costs[e][ok] = stage[ok]
    return costs


def pipeline(tasks: TaskArrays) -> Schedule:
    """Bottleneck-optimal contiguous pipeline stages on distinct devices."""
    n, k = tasks.n, tasks.k
    if n == 0:
        return make_schedule(tasks, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), "pipeline", objective="throughput", period_s=0.0)
    cuts = _boundaries(tasks)
    size = len(cuts)
    stage = _stage_costs(tasks, cuts)
    link = {(d, e): _incoming(tasks, cuts, tasks.comm_s[:, d, e]) for d in range(k) for e in range(k) if d != e}
    best: dict[tuple[int, int], np.ndarray] = {}
    back: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for e in range(k):
        best[(1 << e, e)] = stage[e][0].copy()
    for mask in sorted(range(1, 1 << k), key=lambda m: bin(m).count("1")):
        for d in range(k):
            if (mask, d) not in best or not np.isfinite(best[(mask, d)]).any():
                continue
            for e in range(k):
                if mask >> e & 1:
                    continue
                options = np.maximum(np.maximum(best[(mask, d)][:, None], link[(d, e)]), stage[e])
                origin = options.argmin(axis=0)
                value = options[origin, np.arange(size)]
                key = (mask | 1 << e, e)
                if key not in best:
                    best[key] = np.full(size, math.inf)
                    back[key] = (np.full(size, -1), np.full(size, -1))
                better = value < best[key]
                best[key][better] = value[better]
                back[key][0][better] = d
                back[key][1][better] = origin[better]
    final = min(best, key=lambda key: (best[key][-1], bin(key[0]).count("1"), key))
    if not math.isfinite(best[final][-1]):
        raise ScheduleError("pipeline: no stage split fits the devices' capabilities and memory; try heft")
    placement = np.zeros(n, dtype=np.int64)
    key, position, stages = final, size - 1, []
    while True:
        mask, e = key
        origin = int(back[key][1][position]) if key in back else 0
        previous = int(back[key][0][position]) if key in back else -1
        placement[cuts[origin] : cuts[position]] = e
        stages.append(f"{tasks.names[cuts[origin]]}..{tasks.names[cuts[position] - 1]} on {tasks.devices[e]}")
        if previous < 0 or origin == 0:
            break
        key, position = (mask & ~(1 << e), previous), origin
    start, end = list_times(tasks, placement)
    period = pipeline_period(tasks, placement)
    notes = [f"pipeline: {len(stages)} stages: " + "; ".join(reversed(stages)), f"pipeline: period {period:.6g} s"]
    if size < n + 1:
        notes.append(f"pipeline: considered {size - 2} of {n - 1} interior boundaries (least crossing data)")
    return make_schedule(tasks, placement, start, end, "pipeline", notes=notes, objective="throughput", period_s=period)
