"""Scheduling problems: any task graph, from a model Graph or from a problem file (JSON).

Every scheduler takes a *task graph*: a networkx DiGraph whose edges carry ``nbytes`` and whose
nodes carry four byte counts (absent means 0):

- ``weight_bytes``: constants resident on the device the node is placed on;
- ``output_bytes``: the node's output, live from its start until its last reader is done;
- ``input_bytes``: graph input read from the host (the transfer host -> device is costed);
- ``result_bytes``: graph output that must end on the host (device -> host is costed).

A model :class:`~hetero.ir.graph.Graph` becomes one with :func:`as_task_graph` (inputs start on the
host, outputs end there). A problem file has no graph I/O unless it says so::

    {"name": "...", "host": "P1",
     "devices": ["P1", {"name": "P2", "memory_bytes": 1000000}],
     "links": [{"src": "P1", "dst": "P2", "latency_s": 0.001, "bandwidth_Bps": 1e9}],
     "tasks": {"T1": {"P1": 14, "P2": 16}, "T2": {"P2": 3.5}},
     "edges": [{"src": "T1", "dst": "T2", "bytes": 18}],
     "inputs": {"T1": 1024}, "outputs": {"T2": 40},
     "task_memory": {"T1": {"weight_bytes": 4096, "output_bytes": 18}}}

Energy (optional, for ``--objective energy`` and energy budgets): a device may give
``"power": {"idle_W": 0.5, "busy_W": 4}`` and a link ``"energy_J_per_byte": 2e-6``.

A link serves both directions unless the reverse is listed; absent pairs route through ``host``
(default: the first device). A missing device under a task means the task cannot run there.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import networkx as nx

from hetero.cost.energy import DevicePower, EnergyModel
from hetero.cost.protocol import Link, TableCostModel
from hetero.errors import GraphError, InputError
from hetero.io import did_you_mean, write_atomic

NODE_BYTE_FIELDS = ("weight_bytes", "output_bytes", "input_bytes", "result_bytes")
RESERVED_NAMES = ("<input>", "<output>")
TOP_KEYS = ("name", "description", "host", "devices", "links", "tasks", "edges", "inputs", "outputs", "task_memory")
REQUIRED_KEYS = ("devices", "tasks")
DEVICE_KEYS = ("name", "memory_bytes", "power")
POWER_KEYS = ("idle_W", "busy_W")
LINK_KEYS = ("src", "dst", "latency_s", "bandwidth_Bps", "energy_J_per_byte")
LINK_REQUIRED = ("src", "dst", "latency_s", "bandwidth_Bps")
EDGE_KEYS = ("src", "dst", "bytes")
TASK_MEMORY_KEYS = ("weight_bytes", "output_bytes")


@dataclass(frozen=True)
class Problem:
    """A task graph, its cost model and the memory capacity of the devices that have one."""

    name: str
    graph: nx.DiGraph
    cost: TableCostModel
    memory_bytes: Mapping[str, int]
    energy: EnergyModel | None = None  # when some device gives power figures


def as_task_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """The task-graph view of a model Graph or plain DiGraph (returned as is when it already is one)."""
    if graph.graph.get("task_graph"):
        return graph
    tasks = nx.DiGraph(name=str(graph.graph.get("name", "graph")), task_graph=True)
    is_model = any("op" in data for _, data in graph.nodes(data=True))
    graph_inputs = {s.name for s in graph.graph.get("inputs", ())} if is_model else set()
    graph_outputs = {s.name for s in graph.graph.get("outputs", ())} if is_model else set()
    for name, data in graph.nodes(data=True):
        if is_model:
            op = data["op"]
            attrs = {
                "weight_bytes": int(op.param_bytes),
                "output_bytes": sum(s.nbytes for s in op.output_specs),
                "input_bytes": sum(s.nbytes for s in op.input_specs if s is not None and s.name in graph_inputs),
                "result_bytes": sum(s.nbytes for s in op.output_specs if s.name in graph_outputs),
            }
        else:
            attrs = {field: int(data.get(field, 0)) for field in NODE_BYTE_FIELDS}
            if "output_bytes" not in data:
                out_edges = graph.out_edges(name, data="nbytes", default=0)
                attrs["output_bytes"] = sum(int(b) for _, _, b in out_edges) + attrs["result_bytes"]
        tasks.add_node(name, **attrs)
    for src, dst, data in graph.edges(data=True):
        tasks.add_edge(src, dst, nbytes=int(data.get("nbytes", 0)))
    return tasks


def ready_order(successors: Sequence[Sequence[int]], waiting: Sequence[int], key: Callable[[int], Any]) -> list[int]:
    """A topological order that always takes the ready node of least ``key(i)`` (ties: least index).

    ``successors[i]`` lists the nodes that wait for node i and ``waiting[j]`` counts what node j
    waits for; nodes on a cycle are left out, so a short result means the graph has one.
    """
    waiting = list(waiting)
    heap = [(key(i), i) for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in successors[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, (key(j), j))
    return order


def topological_order(graph: nx.DiGraph) -> list[str]:
    """Nodes in a deterministic topological order (ties broken by insertion order)."""
    names = list(graph.nodes)
    position = {name: i for i, name in enumerate(names)}
    successors: list[list[int]] = [[] for _ in names]
    waiting = [0] * len(names)
    for name, neighbours in graph.adjacency():
        for successor in neighbours:
            successors[position[name]].append(position[successor])
            waiting[position[successor]] += 1
    order = [names[i] for i in ready_order(successors, waiting, lambda i: 0)]
    if len(order) != len(names):
        cycle = nx.find_cycle(graph)
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise GraphError(f"graph {graph.graph.get('name', 'graph')} has a cycle: {path}")
    return order


class _Checker:
    """Field-by-field validation of one problem file; every error names the file and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, message: str) -> InputError:
        return InputError(f"{self.where}: {message}")

    def keys(self, value: Any, field: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{field} must be an object, not {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(f"unknown key '{key}' in {field} (allowed: {', '.join(allowed)}){did_you_mean(str(key), allowed)}")
        for key in required:
            if key not in value:
                raise self.fail(f"{field} has no '{key}' (required: {', '.join(required)})")
        return value

    def name(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(f"{field} must be a non-empty string, not {value!r}")
        if value in RESERVED_NAMES:
            raise self.fail(f"{field} '{value}' is a reserved name")
        return value

    def number(self, value: Any, field: str, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"{field} must be a number, not {value!r}")
        if not math.isfinite(value):
            raise self.fail(f"{field} {value} is not finite")
        if value < 0 or (positive and value == 0):
            raise self.fail(f"{field} {value} must be {'> 0' if positive else '>= 0'}")
        return float(value)

    def byte_count(self, value: Any, field: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{field} must be a whole number of bytes, not {value!r}")
        if value < 0:
            raise self.fail(f"{field} {value} is negative")
        return value

    def listing(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{field} must be a list, not {type(value).__name__}")
        return value


def _no_duplicate_keys(where: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InputError(f"{where}: key '{key}' appears twice in one object")
            result[key] = value
        return result

    return hook


def problem_from_dict(data: Any, where: str = "problem") -> Problem:
    """Validate a decoded problem file and build its task graph, cost model and capacities."""
    check = _Checker(where)
    top = check.keys(data, "the top level", TOP_KEYS, REQUIRED_KEYS)
    devices: list[str] = []
    memory: dict[str, int] = {}
    power: dict[str, DevicePower] = {}
    for i, entry in enumerate(check.listing(top["devices"], "devices")):
        field = f"devices[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        entry = check.keys(entry, field, DEVICE_KEYS, ("name",))
        name = check.name(entry["name"], f"{field}.name")
        if name in devices:
            raise check.fail(f"{field}.name '{name}' duplicates devices[{devices.index(name)}]")
        devices.append(name)
        if "memory_bytes" in entry:
            memory[name] = check.byte_count(entry["memory_bytes"], f"{field}.memory_bytes")
        if "power" in entry:
            watts = check.keys(entry["power"], f"{field}.power", POWER_KEYS, POWER_KEYS)
            idle = check.number(watts["idle_W"], f"{field}.power.idle_W")
            busy = check.number(watts["busy_W"], f"{field}.power.busy_W")
            if busy < idle:
                raise check.fail(f"{field}.power.busy_W {busy:g} is below idle_W {idle:g}; busy power includes idle")
            power[name] = DevicePower(idle, busy, "problem file")
    if not devices:
        raise check.fail("devices is empty; list at least one device")
    host = check.name(top["host"], "host") if "host" in top else devices[0]
    if host not in devices:
        raise check.fail(f"host '{host}' is not a device: name one of the devices ({', '.join(devices)}), or leave "
                         f"host out to use the first{did_you_mean(host, devices)}")

    links: list[Link] = []
    seen_links: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(check.listing(top.get("links", []), "links")):
        field = f"links[{i}]"
        entry = check.keys(entry, field, LINK_KEYS, LINK_REQUIRED)
        src, dst = check.name(entry["src"], f"{field}.src"), check.name(entry["dst"], f"{field}.dst")
        for end, value in (("src", src), ("dst", dst)):
            if value not in devices and value != host:
                raise check.fail(f"{field}.{end} '{value}' is not a device or the host")
        if src == dst:
            raise check.fail(f"{field} joins {src} to itself")
        if (src, dst) in seen_links:
            raise check.fail(f"{field} duplicates links[{seen_links[(src, dst)]}] ({src} -> {dst})")
        seen_links[(src, dst)] = i
        latency = check.number(entry["latency_s"], f"{field}.latency_s")
        bandwidth = check.number(entry["bandwidth_Bps"], f"{field}.bandwidth_Bps", positive=True)
        energy = check.number(entry["energy_J_per_byte"], f"{field}.energy_J_per_byte") if "energy_J_per_byte" in entry else 0.0
        links.append(Link(src, dst, latency, bandwidth, energy_J_per_byte=energy))

    tasks = top["tasks"]
    if not isinstance(tasks, dict) or not tasks:
        raise check.fail("tasks must be a non-empty object of task name -> {device: seconds}")
    compute: dict[str, dict[str, float]] = {}
    for task, per_device in tasks.items():
        check.name(task, "tasks key")
        if not isinstance(per_device, dict):
            raise check.fail(f"tasks.{task} must be an object of device -> seconds")
        if not per_device:
            raise check.fail(f"tasks.{task} runs on no device; give seconds for at least one")
        for device, seconds in per_device.items():
            if device not in devices:
                raise check.fail(f"tasks.{task}: '{device}' is not a device (devices: {', '.join(devices)})")
        compute[task] = {d: check.number(s, f"tasks.{task}.{d}") for d, s in per_device.items()}

    graph = nx.DiGraph(name=str(top.get("name", Path(where).stem)), task_graph=True)
    for task in compute:
        graph.add_node(task, weight_bytes=0, output_bytes=0, input_bytes=0, result_bytes=0)
    for i, entry in enumerate(check.listing(top.get("edges", []), "edges")):
        field = f"edges[{i}]"
        entry = check.keys(entry, field, EDGE_KEYS, EDGE_KEYS)
        src, dst = entry["src"], entry["dst"]
        for end, value in (("src", src), ("dst", dst)):
            if not isinstance(value, str) or value not in compute:
                raise check.fail(f"{field}.{end} {value!r} is not a task")
        if src == dst:
            raise check.fail(f"{field} joins task {src} to itself")
        if graph.has_edge(src, dst):
            raise check.fail(f"{field} duplicates edges[{graph.edges[src, dst]['index']}] ({src} -> {dst})")
        graph.add_edge(src, dst, nbytes=check.byte_count(entry["bytes"], f"{field}.bytes"), index=i)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        raise check.fail(f"edges form a cycle: {path}; a task graph must be acyclic")
    for _, _, data in graph.edges(data=True):
        del data["index"]

    for key, field in (("inputs", "input_bytes"), ("outputs", "result_bytes")):
        io = top.get(key, {})
        if not isinstance(io, dict):
            raise check.fail(f"{key} must be an object of task -> bytes")
        for task, nbytes in io.items():
            if task not in compute:
                raise check.fail(f"{key}: '{task}' is not a task")
            graph.nodes[task][field] = check.byte_count(nbytes, f"{key}.{task}")
    task_memory = top.get("task_memory", {})
    if not isinstance(task_memory, dict):
        raise check.fail("task_memory must be an object of task -> {weight_bytes, output_bytes}")
    for task, entry in task_memory.items():
        if task not in compute:
            raise check.fail(f"task_memory: '{task}' is not a task")
        entry = check.keys(entry, f"task_memory.{task}", TASK_MEMORY_KEYS, ())
        for field, value in entry.items():
            graph.nodes[task][field] = check.byte_count(value, f"task_memory.{task}.{field}")
    for task in compute:
        node = graph.nodes[task]
        if "output_bytes" not in task_memory.get(task, {}):
            node["output_bytes"] = sum(b for _, _, b in graph.out_edges(task, data="nbytes")) + node["result_bytes"]
    try:
        cost = TableCostModel(devices, compute, links, host=host)
    except InputError as err:
        raise check.fail(str(err)) from None
    energy_model = EnergyModel(power, links, host) if power else None
    return Problem(name=graph.graph["name"], graph=graph, cost=cost, memory_bytes=memory, energy=energy_model)


def load_problem(path: str | os.PathLike[str]) -> Problem:
    """Read and validate a problem file; errors name the file and the field at fault."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{where}: no such problem file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{where}: cannot read problem file ({err})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys(where))
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    return problem_from_dict(data, where)


def problem_to_dict(problem: Problem) -> dict[str, Any]:
    """The problem-file form of a problem (the inverse of :func:`problem_from_dict`)."""
    cost, graph = problem.cost, problem.graph
    devices: list[Any] = []
    for d in cost.devices:
        entry: dict[str, Any] = {"name": d}
        if d in problem.memory_bytes:
            entry["memory_bytes"] = int(problem.memory_bytes[d])
        if problem.energy is not None and d in problem.energy.power:
            entry["power"] = {"idle_W": problem.energy.power[d].idle_W, "busy_W": problem.energy.power[d].busy_W}
        devices.append(entry if len(entry) > 1 else d)
    listed = {}
    for link in cost.links:
        reverse = listed.get((link.dst, link.src))
        if reverse is None or (reverse.latency_s, reverse.bandwidth_Bps, reverse.energy_J_per_byte) != (
                link.latency_s, link.bandwidth_Bps, link.energy_J_per_byte):
            listed[(link.src, link.dst)] = link
    result: dict[str, Any] = {
        "name": problem.name,
        "host": cost.host,
        "devices": devices,
        "links": [
            {"src": l.src, "dst": l.dst, "latency_s": l.latency_s, "bandwidth_Bps": l.bandwidth_Bps,
             **({"energy_J_per_byte": l.energy_J_per_byte} if l.energy_J_per_byte else {})}
            for l in listed.values()
        ],
        "tasks": {t: {d: cost.compute(t, d) for d in cost.devices if cost.can_run(t, d)} for t in graph.nodes},
        "edges": [{"src": u, "dst": v, "bytes": int(b)} for u, v, b in graph.edges(data="nbytes")],
    }
    for key, field in (("inputs", "input_bytes"), ("outputs", "result_bytes")):
        io = {t: int(b) for t, b in graph.nodes(data=field) if b}
        if io:
            result[key] = io
    memory: dict[str, dict[str, int]] = {}
    for task, data in graph.nodes(data=True):
        default_output = sum(b for _, _, b in graph.out_edges(task, data="nbytes")) + data.get("result_bytes", 0)
        entry = {"weight_bytes": int(data.get("weight_bytes", 0))} if data.get("weight_bytes") else {}
        if data.get("output_bytes", default_output) != default_output:
            entry["output_bytes"] = int(data["output_bytes"])
        if entry:
            memory[task] = entry
    if memory:
        result["task_memory"] = memory
    return result


def write_problem(path: str | os.PathLike[str], problem: Problem) -> None:
    """Write a problem file atomically."""
    write_atomic(path, (json.dumps(problem_to_dict(problem), indent=1) + "\n").encode())
