"""What every scheduler shares: the task graph compiled to arrays, device timelines, Schedule assembly.

:func:`compile_tasks` turns any graph (model Graph, problem task graph) and a cost model into
:class:`TaskArrays`: nodes in topological order, an (n, k) compute table (inf where a node has no
kernel), an (m, k, k) table of transfer seconds per edge per device pair, host I/O seconds and
byte counts. Algorithms work on indices; :func:`make_schedule` turns their placement and times
back into a :class:`~hetero.schedule.Schedule` (transfers start when their producer ends, graph
input arrives just in time, graph output leaves when its producer ends).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Mapping, Sequence

import networkx as nx
import numpy as np

from hetero.cost.energy import EnergyModel
from hetero.cost.protocol import CostModel
from hetero.errors import InputError
from hetero.problem import as_task_graph, topological_order
from hetero.schedule import INPUT_NODE, OUTPUT_NODE, Schedule, ScheduleError, Slot, Transfer, memory_required


@dataclass(frozen=True, eq=False)
class TaskArrays:
    """A task graph and cost model as index arrays; node i is names[i], device d is devices[d]."""

    tasks: nx.DiGraph
    cost: CostModel
    names: tuple[str, ...]
    devices: tuple[str, ...]
    host: str
    compute_s: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_bytes: np.ndarray
    comm_s: np.ndarray
    pred_edges: tuple[np.ndarray, ...]
    succ_edges: tuple[np.ndarray, ...]
    weight_bytes: np.ndarray
    output_bytes: np.ndarray
    input_bytes: np.ndarray
    result_bytes: np.ndarray
    input_s: np.ndarray
    result_s: np.ndarray
    capacity_bytes: np.ndarray
    energy: "EnergyTerms | None" = None

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def k(self) -> int:
        return len(self.devices)

    @property
    def host_index(self) -> int:
        """Index of the host among the devices, -1 when the host only routes."""
        return self.devices.index(self.host) if self.host in self.devices else -1

    def capable(self, node: int) -> np.ndarray:
        """Indices of the devices that can run a node."""
        return np.flatnonzero(np.isfinite(self.compute_s[node]))

    def is_chain(self) -> bool:
        """True when the nodes form one path."""
        return self.n >= 1 and len(self.edge_src) == self.n - 1 and bool(
            np.all(self.edge_dst == self.edge_src + 1)
        )

    def ready_times(self, node: int, placement: np.ndarray, end_s: np.ndarray) -> np.ndarray:
        """Per device, when all of a node's inputs could be there (predecessors already placed)."""
        edges = self.pred_edges[node]
        if len(edges) == 0:
            return self.input_s[node].copy()
        sources = self.edge_src[edges]
        arrival = end_s[sources, None] + self.comm_s[edges, placement[sources], :]
        return np.maximum(arrival.max(axis=0), self.input_s[node])


@dataclass(frozen=True, eq=False)
class EnergyTerms:
    """A request's energy as arrays: ``idle_W`` x makespan + the dynamic joules of a placement.

    ``extra_J[i, d]`` = (busy_W - idle_W of d) x node i's seconds on d; ``comm_J[e, a, b]`` the
    joules of edge e from a to b; ``input_J`` / ``result_J`` those of graph I/O to and from the host.
    """

    model: EnergyModel
    idle_W: float
    extra_J: np.ndarray
    comm_J: np.ndarray
    input_J: np.ndarray
    result_J: np.ndarray

    def dynamic_J(self, tasks: "TaskArrays", placement: np.ndarray) -> float:
        """The joules of a placement beyond the idle draw."""
        rows = np.arange(tasks.n)
        total = float((self.extra_J[rows, placement] + self.input_J[rows, placement] + self.result_J[rows, placement]).sum())
        if len(tasks.edge_src):
            total += float(self.comm_J[np.arange(len(tasks.edge_src)), placement[tasks.edge_src], placement[tasks.edge_dst]].sum())
        return total

    def request_J(self, tasks: "TaskArrays", placement: np.ndarray, makespan_s: float) -> float:
        return self.idle_W * makespan_s + self.dynamic_J(tasks, placement)


@dataclass(frozen=True)
class Goal:
    """What a schedule minimises: ``latency`` (within ``energy_budget_J`` per request when given) or ``energy``."""

    objective: str = "latency"
    energy_budget_J: float | None = None

    @property
    def uses_energy(self) -> bool:
        return self.objective == "energy" or self.energy_budget_J is not None

    def key(self, tasks: "TaskArrays", makespan_s: float, dynamic_J: float) -> tuple[float, float] | None:
        """What to minimise, as (primary, tie-break); None when over the energy budget."""
        if not self.uses_energy:
            return (makespan_s, 0.0)
        assert tasks.energy is not None, "the goal needs the tasks' energy terms (with_energy)"
        energy_J = tasks.energy.idle_W * makespan_s + dynamic_J
        if self.objective == "energy":
            return (energy_J, makespan_s)
        assert self.energy_budget_J is not None
        if energy_J > self.energy_budget_J * (1 + 1e-9):
            return None
        return (makespan_s, energy_J)

    def schedule_key(self, tasks: "TaskArrays", schedule: Schedule) -> tuple[float, float] | None:
        if not self.uses_energy:
            return (schedule.makespan_s, 0.0)
        assert tasks.energy is not None
        placement = np.array([tasks.devices.index(schedule.placement[name]) for name in tasks.names], dtype=np.int64)
        return self.key(tasks, schedule.makespan_s, tasks.energy.dynamic_J(tasks, placement))


LATENCY = Goal()


def energy_terms(tasks: "TaskArrays", model: EnergyModel) -> EnergyTerms:
    """The energy arrays of compiled tasks; InputError names a device without power figures."""
    missing = model.missing(tasks.devices)
    if missing:
        raise InputError(f"device {missing[0]} has no power figures (idle_W, busy_W): give them (a scenario's "
                         f"devices[].power, a problem file's devices[].power, a catalog entry's power) to plan for energy")
    extra_W = np.array([model.extra_W(d) for d in tasks.devices])
    finite = np.where(np.isfinite(tasks.compute_s), tasks.compute_s, 0.0)
    per_byte = np.array([[model.J_per_byte(a, b) for b in tasks.devices] for a in tasks.devices])
    comm = tasks.edge_bytes.astype(np.float64)[:, None, None] * per_byte[None, :, :]
    to_device = np.array([0.0 if d == tasks.host else model.J_per_byte(tasks.host, d) for d in tasks.devices])
    from_device = np.array([0.0 if d == tasks.host else model.J_per_byte(d, tasks.host) for d in tasks.devices])
    input_J = tasks.input_bytes.astype(np.float64)[:, None] * to_device[None, :]
    result_J = tasks.result_bytes.astype(np.float64)[:, None] * from_device[None, :]
    return EnergyTerms(model, model.idle_W(tasks.devices), finite * extra_W[None, :], comm, input_J, result_J)


def with_energy(tasks: "TaskArrays", model: EnergyModel | None) -> "TaskArrays":
    """The tasks with their energy arrays (unchanged without a model)."""
    if model is None:
        return tasks
    import dataclasses

    return dataclasses.replace(tasks, energy=energy_terms(tasks, model))


def transfer_table(cost: CostModel, nbytes: np.ndarray, devices: Sequence[str]) -> np.ndarray:
    """Seconds to move each byte count between each device pair: shape (len(nbytes), k, k)."""
    k = len(devices)
    coefficients = getattr(cost, "transfer_coefficients", None)
    if coefficients is not None:
        latency = np.zeros((k, k))
        per_byte = np.zeros((k, k))
        for a, src in enumerate(devices):
            for b, dst in enumerate(devices):
                if a != b:
                    latency[a, b], per_byte[a, b] = coefficients(src, dst)
        table = latency[None, :, :] + nbytes.astype(np.float64)[:, None, None] * per_byte[None, :, :]
        return table
    table = np.zeros((len(nbytes), k, k))
    cache: dict[int, np.ndarray] = {}
    for e, size in enumerate(nbytes.tolist()):
        if size not in cache:
            cache[size] = np.array([[cost.transfer(size, s, d) if s != d else 0.0 for d in devices] for s in devices])
        table[e] = cache[size]
    return table


def compile_tasks(graph: nx.DiGraph, cost: CostModel, memory_bytes: Mapping[str, int] | None = None) -> TaskArrays:
    """Compile a graph and cost model; raises ScheduleError when a node can run on no device."""
    tasks = as_task_graph(graph)
    names = tuple(topological_order(tasks))
    devices = tuple(cost.devices)
    index = {name: i for i, name in enumerate(names)}
    n, k = len(names), len(devices)
    table = getattr(cost, "compute_table", None)
    if table is not None:
        compute = np.asarray(table(names, devices), dtype=np.float64).reshape(n, k)
    else:
        compute = np.array([[cost.compute(name, device) for device in devices] for name in names]).reshape(n, k)
    runnable = np.isfinite(compute).any(axis=1)
    if not runnable.all():
        name = names[int(np.argmin(runnable))]
        raise ScheduleError(f"task {name} can run on none of the devices {', '.join(devices)}")
    edges = sorted(
        (index[u], index[v], int(data.get("nbytes", 0))) for u, successors in tasks.adjacency() for v, data in successors.items()
    )
    edge_array = np.array(edges, dtype=np.int64).reshape(-1, 3)
    edge_src, edge_dst, edge_bytes = edge_array[:, 0].copy(), edge_array[:, 1].copy(), edge_array[:, 2].copy()
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for e, (u, v, _) in enumerate(edges):
        succs[u].append(e)
        preds[v].append(e)

    node_data = dict(tasks.nodes(data=True))

    def node_bytes(field: str) -> np.ndarray:
        return np.array([int(node_data[name].get(field, 0)) for name in names], dtype=np.int64)

    input_bytes, result_bytes = node_bytes("input_bytes"), node_bytes("result_bytes")
    input_s, result_s = np.zeros((n, k)), np.zeros((n, k))
    for i in np.flatnonzero(input_bytes | result_bytes):
        for d, device in enumerate(devices):
            if device == cost.host:
                continue
            if input_bytes[i]:
                input_s[i, d] = cost.transfer(int(input_bytes[i]), cost.host, device)
            if result_bytes[i]:
                result_s[i, d] = cost.transfer(int(result_bytes[i]), device, cost.host)
    capacity = np.full(k, math.inf)
    for device, limit in (memory_bytes or {}).items():
        if device not in devices:
            raise InputError(f"memory capacity given for '{device}', which is not a device ({', '.join(devices)})")
        capacity[devices.index(device)] = float(limit)
    return TaskArrays(
        tasks=tasks,
        cost=cost,
        names=names,
        devices=devices,
        host=cost.host,
        compute_s=compute,
        edge_src=edge_src,
        edge_dst=edge_dst,
        edge_bytes=edge_bytes,
        comm_s=transfer_table(cost, edge_bytes, devices),
        pred_edges=tuple(np.array(p, dtype=np.int64) for p in preds),
        succ_edges=tuple(np.array(s, dtype=np.int64) for s in succs),
        weight_bytes=node_bytes("weight_bytes"),
        output_bytes=node_bytes("output_bytes"),
        input_bytes=input_bytes,
        result_bytes=result_bytes,
        input_s=input_s,
        result_s=result_s,
        capacity_bytes=capacity,
    )


class DeviceTimelines:
    """Busy intervals per device, kept sorted, with earliest-fit search (HEFT's insertion policy)."""

    def __init__(self, k: int) -> None:
        self.starts: list[list[float]] = [[] for _ in range(k)]
        self.ends: list[list[float]] = [[] for _ in range(k)]
        self.gaps: list[list[float]] = [[] for _ in range(k)]  # gaps[j]: idle time just before slot j

    def free_at(self, device: int) -> float:
        """When the device's last busy interval ends."""
        ends = self.ends[device]
        return ends[-1] if ends else 0.0

    def earliest(self, device: int, ready_s: float, duration_s: float) -> float:
        """Earliest start >= ready_s of an idle gap at least duration_s long."""
        starts, ends, gaps = self.starts[device], self.ends[device], self.gaps[device]
        if not ends or ready_s >= ends[-1]:
            return ready_s
        j = bisect_right(ends, ready_s)
        if ready_s + duration_s <= starts[j]:
            return ready_s
        count = len(starts)
        if j + 1 == count or max(gaps[j + 1 :]) < duration_s:
            return ends[-1]
        for later in range(j + 1, count):
            if gaps[later] >= duration_s and ends[later - 1] + duration_s <= starts[later]:
                return ends[later - 1]
        return ends[-1]

    def add(self, device: int, start_s: float, end_s: float) -> None:
        starts, ends, gaps = self.starts[device], self.ends[device], self.gaps[device]
        position = bisect_right(ends, start_s)
        starts.insert(position, start_s)
        ends.insert(position, end_s)
        gaps.insert(position, start_s - (ends[position - 1] if position else 0.0))
        if position + 1 < len(starts):
            gaps[position + 1] = starts[position + 1] - end_s


def list_times(
    tasks: TaskArrays, placement: np.ndarray, order: Sequence[int] | None = None, insertion: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end times of a fixed placement, nodes taken in ``order`` (default topological)."""
    start, end = np.zeros(tasks.n), np.zeros(tasks.n)
    timelines = DeviceTimelines(tasks.k)
    for i in range(tasks.n) if order is None else order:
        d = int(placement[i])
        ready = float(tasks.ready_times(i, placement, end)[d])
        duration = float(tasks.compute_s[i, d])
        begin = timelines.earliest(d, ready, duration) if insertion else max(ready, timelines.free_at(d))
        start[i], end[i] = begin, begin + duration
        timelines.add(d, begin, begin + duration)
    return start, end


def successor_lists(tasks: TaskArrays) -> list[list[int]]:
    """Per node, the indices of the nodes that read its output (for :func:`hetero.problem.ready_order`)."""
    return [[int(tasks.edge_dst[e]) for e in tasks.succ_edges[i].tolist()] for i in range(tasks.n)]


def placement_indices(tasks: TaskArrays, schedule: Schedule) -> np.ndarray:
    """A schedule's placement as device indices in the compiled node order."""
    index = {device: d for d, device in enumerate(tasks.devices)}
    return np.array([index[schedule.placement[name]] for name in tasks.names], dtype=np.int64)


def make_schedule(
    tasks: TaskArrays,
    placement: np.ndarray,
    start_s: np.ndarray,
    end_s: np.ndarray,
    algorithm: str,
    notes: Sequence[str] = (),
    objective: str = "latency",
    period_s: float | None = None,
) -> Schedule:
    """Assemble the Schedule record (slots, transfers, memory) from index arrays."""
    names, devices = tasks.names, tasks.devices
    place = [int(p) for p in placement]
    starts, ends = start_s.tolist(), end_s.tolist()
    slots = [Slot(names[i], devices[place[i]], starts[i], ends[i]) for i in range(tasks.n)]
    transfers: list[Transfer] = []
    for e, (u, v, size) in enumerate(zip(tasks.edge_src.tolist(), tasks.edge_dst.tolist(), tasks.edge_bytes.tolist())):
        if place[u] != place[v]:
            seconds = float(tasks.comm_s[e, place[u], place[v]])
            transfers.append(Transfer(names[u], names[v], devices[place[u]], devices[place[v]], size, ends[u], ends[u] + seconds))
    for i in np.flatnonzero(tasks.input_bytes | tasks.result_bytes).tolist():
        device = devices[place[i]]
        if device == tasks.host:
            continue
        if tasks.input_bytes[i]:
            seconds = float(tasks.input_s[i, place[i]])
            begin = max(0.0, starts[i] - seconds)
            transfers.append(Transfer(INPUT_NODE, names[i], tasks.host, device, int(tasks.input_bytes[i]), begin, begin + seconds))
        if tasks.result_bytes[i]:
            seconds = float(tasks.result_s[i, place[i]])
            transfers.append(Transfer(names[i], OUTPUT_NODE, device, tasks.host, int(tasks.result_bytes[i]), ends[i], ends[i] + seconds))
    memory = memory_required(tasks.tasks, devices, slots, transfers)
    return Schedule(
        algorithm=algorithm,
        devices=devices,
        host=tasks.host,
        slots=tuple(slots),
        transfers=tuple(transfers),
        memory_bytes=memory,
        objective=objective,
        period_s=period_s,
        notes=tuple(notes),
    )
