"""Schedules: where each node runs, when, and when which bytes move between devices.

A :class:`Schedule` is a plain frozen record of timed :class:`Slot` s (one per node) and timed
:class:`Transfer` s (one per edge whose ends sit on different devices, plus graph input from and
graph output to the host, named ``<input>`` / ``<output>``). Slots that overlap on one device
raise at construction; :meth:`Schedule.validate` checks the rest against the graph and the cost
model: precedence, transfers finished before use, durations, capability and memory.

Memory a device needs = weights of the nodes placed on it + the peak of its live activations:
a node's output is live from the node's start until its last reader on the same device has
finished and its last transfer out has arrived; a copy received over a transfer is live from the
transfer's start until its reader has finished. Graph inputs and outputs on the host are the
caller's buffers and are not counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from hetero.cost.protocol import CostModel
from hetero.errors import InputError, ScheduleError
from hetero.io import write_atomic
from hetero.problem import as_task_graph

INPUT_NODE = "<input>"
OUTPUT_NODE = "<output>"
PLAN_FORMAT = "hetero-plan"
PLAN_VERSION = 1
RELATIVE_TOLERANCE = 1e-9


def _check_times(what: str, start_s: float, end_s: float) -> None:
    if not (math.isfinite(start_s) and math.isfinite(end_s)):
        raise ScheduleError(f"{what}: times {start_s}..{end_s} must be finite")
    if start_s < 0 or end_s < start_s:
        raise ScheduleError(f"{what}: times {start_s}..{end_s} must satisfy 0 <= start <= end")


@dataclass(frozen=True)
class Slot:
    """Node ``node`` runs on ``device`` from start_s to end_s."""

    node: str
    device: str
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        _check_times(f"slot of {self.node} on {self.device}", self.start_s, self.end_s)


@dataclass(frozen=True)
class Transfer:
    """The output of src_node moves from src_device to dst_device for dst_node, from start_s to end_s."""

    src_node: str
    dst_node: str
    src_device: str
    dst_device: str
    nbytes: int
    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        what = f"transfer {self.src_node} -> {self.dst_node}"
        _check_times(what, self.start_s, self.end_s)
        if self.src_device == self.dst_device:
            raise ScheduleError(f"{what}: stays on {self.src_device}; transfers within a device are not recorded")
        if self.nbytes < 0:
            raise ScheduleError(f"{what}: {self.nbytes} bytes is negative")


@dataclass(frozen=True)
class Schedule:
    """Placement plus timed slots and transfers; makespan and placement are derived from them."""

    algorithm: str
    devices: tuple[str, ...]
    host: str
    slots: tuple[Slot, ...]
    transfers: tuple[Transfer, ...] = ()
    memory_bytes: Mapping[str, int] = field(default_factory=dict)
    objective: str = "latency"
    period_s: float | None = None
    solve_s: float = 0.0
    notes: tuple[str, ...] = ()
    energy_J: float | None = None  # one request's energy (hetero.cost.energy), None without power figures
    placement: Mapping[str, str] = field(init=False)
    makespan_s: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "slots", tuple(self.slots))
        object.__setattr__(self, "transfers", tuple(self.transfers))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "memory_bytes", types.MappingProxyType(dict(self.memory_bytes)))
        placement: dict[str, str] = {}
        for slot in self.slots:
            if slot.node in placement:
                raise ScheduleError(f"schedule ({self.algorithm}): task {slot.node} has two slots")
            if slot.device not in self.devices:
                raise ScheduleError(f"schedule ({self.algorithm}): task {slot.node} is on unknown device {slot.device}")
            placement[slot.node] = slot.device
        object.__setattr__(self, "placement", types.MappingProxyType(placement))
        self._check_exclusive()
        ends = [s.end_s for s in self.slots] + [t.end_s for t in self.transfers]
        object.__setattr__(self, "makespan_s", max(ends, default=0.0))

    @property
    def tolerance_s(self) -> float:
        """Absolute slack allowed when comparing times (floating-point rounding only)."""
        return RELATIVE_TOLERANCE * max(1.0, self.makespan_s)

    def _check_exclusive(self) -> None:
        tolerance = RELATIVE_TOLERANCE * max([1.0] + [s.end_s for s in self.slots])
        by_device: dict[str, list[Slot]] = defaultdict(list)
        for slot in self.slots:
            by_device[slot.device].append(slot)
        for device, slots in by_device.items():
            slots.sort(key=lambda s: (s.start_s, s.end_s))
            for before, after in zip(slots, slots[1:]):
                if after.start_s < before.end_s - tolerance:
                    raise ScheduleError(
                        f"schedule ({self.algorithm}): slots of {before.node} ({before.start_s:.6g}..{before.end_s:.6g}) "
                        f"and {after.node} ({after.start_s:.6g}..{after.end_s:.6g}) overlap on device {device}"
                    )

    def slot(self, node: str) -> Slot:
        """The slot of one node."""
        for slot in self.slots:
            if slot.node == node:
                return slot
        raise ScheduleError(f"schedule ({self.algorithm}): no slot for node {node}; name one of the scheduled nodes")

    def device_slots(self, device: str) -> list[Slot]:
        """Slots on one device in time order."""
        return sorted((s for s in self.slots if s.device == device), key=lambda s: (s.start_s, s.end_s))

    def bytes_transferred(self) -> int:
        """Bytes moved between devices, graph I/O included."""
        return sum(t.nbytes for t in self.transfers)

    def validate(self, graph: nx.DiGraph, cost: CostModel, memory_bytes: Mapping[str, int] | None = None) -> None:
        """Raise ScheduleError naming the first broken invariant against graph, cost and capacities."""
        Validator(self, as_task_graph(graph), cost).run(memory_bytes or {})

    def to_dict(self) -> dict[str, Any]:
        """The plan-file form."""
        return {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "algorithm": self.algorithm,
            "objective": self.objective,
            "devices": list(self.devices),
            "host": self.host,
            "makespan_s": self.makespan_s,
            "period_s": self.period_s,
            "energy_J": self.energy_J,
            "solve_s": self.solve_s,
            "placement": dict(self.placement),
            "slots": [dataclasses.asdict(s) for s in self.slots],
            "transfers": [dataclasses.asdict(t) for t in self.transfers],
            "memory_bytes": dict(self.memory_bytes),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> "Schedule":
        """A schedule from its plan-file form; errors name the file and field."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise InputError(f"{where}: not a hetero plan file (no \"format\": \"{PLAN_FORMAT}\")")
        if data.get("version") != PLAN_VERSION:
            raise InputError(f"{where}: plan version {data.get('version')!r} is not {PLAN_VERSION}; reschedule")
        try:
            slots = tuple(Slot(**s) for s in data["slots"])
            transfers = tuple(Transfer(**t) for t in data["transfers"])
            schedule = cls(
                algorithm=str(data["algorithm"]),
                devices=tuple(data["devices"]),
                host=str(data["host"]),
                slots=slots,
                transfers=transfers,
                memory_bytes={str(k): int(v) for k, v in data["memory_bytes"].items()},
                objective=str(data["objective"]),
                period_s=None if data["period_s"] is None else float(data["period_s"]),
                solve_s=float(data["solve_s"]),
                notes=tuple(str(n) for n in data["notes"]),
                energy_J=None if data.get("energy_J") is None else float(data["energy_J"]),
            )
        except KeyError as err:
            raise InputError(f"{where}: missing field {err}") from None
        except (TypeError, AttributeError, ValueError) as err:
            raise InputError(f"{where}: malformed plan ({err})") from None
        except ScheduleError as err:
            raise InputError(f"{where}: {err}") from None
        if dict(schedule.placement) != data.get("placement", dict(schedule.placement)):
            raise InputError(f"{where}: placement disagrees with the slots")
        return schedule


def plan_bytes(schedule: Schedule) -> bytes:
    """The plan file's bytes."""
    return (json.dumps(schedule.to_dict(), indent=1) + "\n").encode()


def write_plan(path: str | os.PathLike[str], schedule: Schedule) -> None:
    """Write the plan file atomically."""
    write_atomic(path, plan_bytes(schedule))


def read_plan(path: str | os.PathLike[str]) -> Schedule:
    """Read a plan file written by :func:`write_plan`."""
    if Path(path).is_dir():
        raise InputError(f"{path}: is a folder, not a plan file (hetero schedule ... -o PLAN.json writes one)")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such plan file; write one with hetero schedule ... -o {path}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); is it a plan from hetero schedule -o?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read plan ({err})") from None
    return Schedule.from_dict(data, str(path))


def peak_bytes(intervals: Sequence[Sequence[float]]) -> float:
    """Largest total bytes of half-open intervals (start_s, end_s, nbytes) alive at one time.

    A sweep line over the interval ends: at equal times frees come before allocations, so
    back-to-back intervals do not overlap. Empty and zero-byte intervals count for nothing.
    """
    if len(intervals) == 0:
        return 0.0
    table = np.array(intervals, dtype=np.float64).reshape(-1, 3)
    table = table[(table[:, 1] > table[:, 0]) & (table[:, 2] > 0)]
    if len(table) == 0:
        return 0.0
    times = np.concatenate([table[:, 0], table[:, 1]])
    frees_first = np.concatenate([np.ones(len(table)), np.zeros(len(table))])
    deltas = np.concatenate([table[:, 2], -table[:, 2]])
    return float(np.cumsum(deltas[np.lexsort((frees_first, times))]).max())


def memory_required(
    tasks: nx.DiGraph, devices: Iterable[str], slots: Iterable[Slot], transfers: Iterable[Transfer]
) -> dict[str, int]:
    """Weights plus peak live activation bytes per device (see the module docstring)."""
    by_node = {s.node: s for s in slots}
    transfers = list(transfers)
    release: dict[str, float] = {node: slot.end_s for node, slot in by_node.items()}
    for src, dst in tasks.edges:
        if src in by_node and dst in by_node and by_node[src].device == by_node[dst].device:
            release[src] = max(release[src], by_node[dst].end_s)
    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for transfer in transfers:
        if transfer.src_node in release:
            release[transfer.src_node] = max(release[transfer.src_node], transfer.end_s)
        if transfer.dst_node in by_node:
            intervals[transfer.dst_device].append((transfer.start_s, by_node[transfer.dst_node].end_s, transfer.nbytes))
    weights: dict[str, int] = defaultdict(int)
    for node, slot in by_node.items():
        data = tasks.nodes[node]
        weights[slot.device] += int(data.get("weight_bytes", 0))
        intervals[slot.device].append((slot.start_s, release[node], int(data.get("output_bytes", 0))))
    return {d: weights[d] + int(round(peak_bytes(intervals[d]))) for d in devices}


class Validator:
    """Checks one schedule against a task graph and a cost model, one invariant at a time."""

    def __init__(self, schedule: Schedule, tasks: nx.DiGraph, cost: CostModel) -> None:
        self.schedule, self.tasks, self.cost = schedule, tasks, cost
        self.tolerance = schedule.tolerance_s
        self.slots = {s.node: s for s in schedule.slots}
        self.pending: dict[tuple[str, str], Transfer] = {}

    def fail(self, message: str) -> ScheduleError:
        return ScheduleError(f"schedule ({self.schedule.algorithm}): {message}")

    def run(self, capacity_bytes: Mapping[str, int]) -> None:
        self.schedule._check_exclusive()
        self.check_slots()
        for transfer in self.schedule.transfers:
            key = (transfer.src_node, transfer.dst_node)
            if key in self.pending:
                raise self.fail(f"two transfers for {key[0]} -> {key[1]}")
            self.pending[key] = transfer
        self.check_edges()
        self.check_io()
        if self.pending:
            src, dst = next(iter(self.pending))
            raise self.fail(f"transfer {src} -> {dst} matches no edge whose ends are on different devices")
        self.check_memory(capacity_bytes)

    def check_slots(self) -> None:
        missing = [n for n in self.tasks.nodes if n not in self.slots]
        if missing:
            raise self.fail(f"task {missing[0]} has no slot ({len(missing)} tasks unscheduled)")
        for node, slot in self.slots.items():
            if node not in self.tasks:
                raise self.fail(f"slot for {node}, which is not a task of the graph")
            if slot.device not in self.cost.devices or not self.cost.can_run(node, slot.device):
                raise self.fail(f"task {node} is placed on {slot.device}, which cannot run it")
            expected = self.cost.compute(node, slot.device)
            if abs((slot.end_s - slot.start_s) - expected) > self.tolerance + RELATIVE_TOLERANCE * expected:
                raise self.fail(
                    f"task {node} takes {slot.end_s - slot.start_s:.6g} s on {slot.device}; the cost model says {expected:.6g} s"
                )

    def take(self, src: str, dst: str, src_device: str, dst_device: str, nbytes: int) -> Transfer:
        transfer = self.pending.pop((src, dst), None)
        if transfer is None:
            raise self.fail(f"{src} -> {dst} crosses {src_device} -> {dst_device} but has no transfer")
        if (transfer.src_device, transfer.dst_device) != (src_device, dst_device):
            raise self.fail(
                f"transfer {src} -> {dst} goes {transfer.src_device} -> {transfer.dst_device}, "
                f"not {src_device} -> {dst_device}"
            )
        if transfer.nbytes != nbytes:
            raise self.fail(f"transfer {src} -> {dst} moves {transfer.nbytes} bytes, the edge has {nbytes}")
        needed = self.cost.transfer(nbytes, src_device, dst_device)
        if transfer.end_s - transfer.start_s < needed - self.tolerance - RELATIVE_TOLERANCE * needed:
            raise self.fail(
                f"transfer {src} -> {dst} takes {transfer.end_s - transfer.start_s:.6g} s; "
                f"{src_device} -> {dst_device} needs {needed:.6g} s for {nbytes} bytes"
            )
        return transfer

    def check_edges(self) -> None:
        for src, dst, nbytes in self.tasks.edges(data="nbytes", default=0):
            before, after = self.slots[src], self.slots[dst]
            if before.device == after.device:
                if after.start_s < before.end_s - self.tolerance:
                    raise self.fail(
                        f"task {dst} starts at {after.start_s:.6g} s on {after.device} before its predecessor "
                        f"{src} ends at {before.end_s:.6g} s"
                    )
                continue
            transfer = self.take(src, dst, before.device, after.device, int(nbytes))
            if transfer.start_s < before.end_s - self.tolerance:
                raise self.fail(f"transfer {src} -> {dst} starts at {transfer.start_s:.6g} s, before {src} ends")
            if transfer.end_s > after.start_s + self.tolerance:
                raise self.fail(
                    f"task {dst} starts at {after.start_s:.6g} s before its input from {src} arrives at {transfer.end_s:.6g} s"
                )

    def check_io(self) -> None:
        host = self.schedule.host
        for node, data in self.tasks.nodes(data=True):
            slot = self.slots[node]
            if data.get("input_bytes", 0) and slot.device != host:
                transfer = self.take(INPUT_NODE, node, host, slot.device, int(data["input_bytes"]))
                if transfer.end_s > slot.start_s + self.tolerance:
                    raise self.fail(f"task {node} starts before its graph input arrives from the host {host}")
            if data.get("result_bytes", 0) and slot.device != host:
                transfer = self.take(node, OUTPUT_NODE, slot.device, host, int(data["result_bytes"]))
                if transfer.start_s < slot.end_s - self.tolerance:
                    raise self.fail(f"graph output of {node} leaves {slot.device} before {node} ends")

    def check_memory(self, capacity_bytes: Mapping[str, int]) -> None:
        needed = memory_required(self.tasks, self.schedule.devices, self.schedule.slots, self.schedule.transfers)
        for device, nbytes in needed.items():
            recorded = self.schedule.memory_bytes.get(device, nbytes)
            if recorded != nbytes:
                raise self.fail(f"device {device} records {recorded} bytes of memory but needs {nbytes}")
            if device in capacity_bytes and nbytes > capacity_bytes[device]:
                raise self.fail(f"device {device} needs {nbytes} bytes of memory; its capacity is {capacity_bytes[device]}")
