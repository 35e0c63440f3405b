"""A schedule compiled for the simulator: per device, its ops in order and where runs may break.

Nodes and devices become indices. Each device runs its ops in the schedule's order (slot start
times). A *run* is a stretch of consecutive ops of one request on one device; a run may only
begin at an op that waits for something from another device (a transfer or the graph input),
so ``segment_end[d][i]`` is the first position after ``i`` at which device ``d`` may have to wait.
Within a segment, every input of every op is already on the device when its turn comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import networkx as nx

from hetero.cost.protocol import CostModel
from hetero.errors import SimulationError
from hetero.schedule import Schedule

RESULT = -1  # destination node of a graph output's transfer to the host


@dataclass(frozen=True, eq=False)
class CompiledPlan:
    """Index tables of one schedule; see the module docstring."""

    schedule: Schedule
    device_of: tuple[int, ...]
    device_ops: tuple[tuple[int, ...], ...]
    device_work_s: tuple[tuple[float, ...], ...]
    segment_end: tuple[tuple[int, ...], ...]
    remote_inputs: tuple[int, ...]
    sends: tuple[tuple[tuple[int, int, int], ...], ...]
    graph_inputs: tuple[tuple[int, int], ...]
    work_s: tuple[float, ...]
    weight_bytes: tuple[int, ...]
    devices_used: tuple[int, ...]
    pending: int
    coalesce: bool = True

    @property
    def placement(self) -> Mapping[str, str]:
        return self.schedule.placement

    def uses(self, device: int) -> bool:
        return bool(self.device_ops[device])


def compile_plan(
    schedule: Schedule,
    tasks: nx.DiGraph,
    names: Sequence[str],
    devices: Sequence[str],
    host: str,
    cost: CostModel,
    coalesce: bool = True,
) -> CompiledPlan:
    """Compile a schedule over ``tasks`` (node i is names[i]; engine device d is devices[d]).

    ``coalesce=False`` makes every op a run of its own (one event per op: the reference the
    coalesced runs are tested against).
    """
    index = {name: i for i, name in enumerate(names)}
    device_index = {name: d for d, name in enumerate(devices)}
    missing = [n for n in names if n not in schedule.placement]
    if missing:
        raise SimulationError(f"schedule ({schedule.algorithm}) places no device for node {missing[0]}; "
                              "plan the scenario's own model (a plan of another model does not fit)")
    unknown = sorted({schedule.placement[n] for n in names} - set(device_index))
    if unknown:
        raise SimulationError(f"schedule ({schedule.algorithm}) places ops on '{unknown[0]}', which is not a device "
                              f"of the scenario ({', '.join(devices)})")
    strangers = [slot.node for slot in schedule.slots if slot.node not in index]
    if strangers:
        raise SimulationError(f"schedule ({schedule.algorithm}) has a slot for node {strangers[0]}, which the "
                              "scenario's model does not have; plan the scenario's own model")
    device_of = tuple(device_index[schedule.placement[n]] for n in names)
    k = len(devices)
    order: list[list[tuple[float, float, int]]] = [[] for _ in range(k)]
    for slot in schedule.slots:
        i = index[slot.node]
        order[device_of[i]].append((slot.start_s, slot.end_s, i))
    device_ops = tuple(tuple(i for _, _, i in sorted(slots)) for slots in order)
    work_s = tuple(cost.compute(n, devices[device_of[i]]) for i, n in enumerate(names))
    data = tasks.nodes
    remote = [0] * len(names)
    sends: list[list[tuple[int, int, int]]] = [[] for _ in names]
    for src, dst, nbytes in tasks.edges(data="nbytes", default=0):
        u, v = index[src], index[dst]
        if device_of[u] != device_of[v]:
            remote[v] += 1
            sends[u].append((v, device_of[v], int(nbytes)))
    graph_inputs: list[tuple[int, int]] = []
    results = 0
    for i, name in enumerate(names):
        on_host = devices[device_of[i]] == host
        if int(data[name].get("input_bytes", 0)) and not on_host:
            remote[i] += 1
            graph_inputs.append((i, int(data[name]["input_bytes"])))
        if int(data[name].get("result_bytes", 0)) and not on_host:
            sends[i].append((RESULT, -1, int(data[name]["result_bytes"])))
            results += 1
    segment_end = []
    for ops in device_ops:
        ends = [len(ops)] * len(ops)
        for position in range(len(ops) - 2, -1, -1):
            ends[position] = position + 1 if remote[ops[position + 1]] or not coalesce else ends[position + 1]
        segment_end.append(tuple(ends))
    return CompiledPlan(
        schedule=schedule,
        device_of=device_of,
        device_ops=device_ops,
        device_work_s=tuple(tuple(work_s[i] for i in ops) for ops in device_ops),
        segment_end=tuple(segment_end),
        remote_inputs=tuple(remote),
        sends=tuple(tuple(s) for s in sends),
        graph_inputs=tuple(graph_inputs),
        work_s=work_s,
        weight_bytes=tuple(int(data[n].get("weight_bytes", 0)) for n in names),
        devices_used=tuple(d for d in range(k) if device_ops[d]),
        pending=len(names) + results,
        coalesce=coalesce,
    )
