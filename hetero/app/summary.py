"""What the CLI prints about a schedule: partitions, predicted time, speedup, bytes moved.

:func:`schedule_summary` groups the placement into contiguous partitions (runs of consecutive
nodes in topological order on one device), compares the makespan (or the steady-state period for
the throughput objective) with the best single device, and counts the bytes crossing devices.
:func:`summary_lines` renders it as text; :func:`json_summary` is the ``--json`` record.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import networkx as nx
import numpy as np

from hetero.cost.energy import EnergyModel
from hetero.cost.protocol import CostModel
from hetero.problem import as_task_graph
from hetero.schedule import INPUT_NODE, OUTPUT_NODE, Schedule
from hetero.schedulers.base import compile_tasks
from hetero.schedulers.pipeline import pipeline_period
from hetero.schedulers.single import on_device


def partitions(schedule: Schedule, names: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """Runs of consecutive nodes (in the given topological order) placed on one device."""
    runs: list[dict[str, Any]] = []
    slots = {slot.node: slot for slot in schedule.slots}
    for name in names:
        slot = slots[name]
        if runs and runs[-1]["device"] == slot.device:
            run = runs[-1]
            run["last"], run["nodes"] = name, run["nodes"] + 1
            run["compute_s"] += slot.end_s - slot.start_s
        else:
            runs.append({"device": slot.device, "first": name, "last": name, "nodes": 1, "compute_s": slot.end_s - slot.start_s})
    return runs


def schedule_summary(
    schedule: Schedule, graph: nx.DiGraph, cost: CostModel, memory_bytes: Mapping[str, int] | None = None,
    energy: EnergyModel | None = None,
) -> dict[str, Any]:
    """Partitions, predicted latency (and throughput), best single device and speedup, bytes moved;
    with ``energy``, the request's energy per device and link next to the latency."""
    tasks = compile_tasks(as_task_graph(graph), cost, memory_bytes)
    throughput = schedule.objective == "throughput" and schedule.period_s is not None
    singles: dict[str, float] = {}
    for d, device in enumerate(tasks.devices):
        alone = on_device(tasks, d)
        if alone is None:
            continue
        if throughput:
            singles[device] = pipeline_period(tasks, np.full(tasks.n, d, dtype=np.int64))
        else:
            singles[device] = alone.makespan_s
    best_device = min(singles, key=lambda d: singles[d]) if singles else None
    predicted = schedule.period_s if throughput else schedule.makespan_s
    speedup = None
    if best_device is not None and predicted and predicted > 0:
        speedup = singles[best_device] / predicted
    between = [t for t in schedule.transfers if INPUT_NODE != t.src_node and t.dst_node != OUTPUT_NODE]
    return {
        "algorithm": schedule.algorithm,
        "objective": schedule.objective,
        "makespan_s": schedule.makespan_s,
        "period_s": schedule.period_s,
        "throughput_per_s": (1.0 / schedule.period_s) if throughput and schedule.period_s else None,
        "partitions": partitions(schedule, tasks.names),
        "single_device": None if best_device is None else {"device": best_device, "seconds": singles[best_device]},
        "single_devices": singles,
        "speedup": speedup,
        "bytes_between_devices": sum(t.nbytes for t in between),
        "bytes_host_io": sum(t.nbytes for t in schedule.transfers) - sum(t.nbytes for t in between),
        "transfers": len(schedule.transfers),
        "memory_bytes": dict(schedule.memory_bytes),
        "energy": _energy(schedule, energy),
        "seconds": schedule.solve_s,
        "notes": list(schedule.notes),
    }


def _energy(schedule: Schedule, model: EnergyModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    found = model.schedule_J(schedule)
    return {"total_J": found.total_J, "devices_J": dict(found.devices_J), "links_J": dict(found.links_J),
            "without_power": model.missing(schedule.devices)}


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary as the lines the CLI prints."""
    lines = [f"algorithm: {summary['algorithm']} ({summary['seconds'] * 1e3:.1f} ms)"]
    for note in summary["notes"]:
        lines.append(f"  {note}")
    lines.append("partitions:")
    for run in summary["partitions"]:
        span = run["first"] if run["nodes"] == 1 else f"{run['first']} .. {run['last']}"
        lines.append(f"  {run['device']:<10} {run['nodes']:>5} nodes  {run['compute_s']:.6g} s  {span}")
    if summary["objective"] == "throughput" and summary["period_s"]:
        lines.append(f"predicted throughput: {summary['throughput_per_s']:.6g} /s (period {summary['period_s']:.6g} s, latency {summary['makespan_s']:.6g} s)")
    else:
        lines.append(f"predicted latency: {summary['makespan_s']:.6g} s")
    energy = summary.get("energy")
    if energy is not None:
        parts = [f"{d} {j:.4g} J" for d, j in energy["devices_J"].items()] + [f"{l} {j:.4g} J" for l, j in energy["links_J"].items() if j]
        lines.append(f"predicted energy: {energy['total_J']:.6g} J per request ({', '.join(parts)})")
        if energy["without_power"]:
            lines.append(f"  no power figures for {', '.join(energy['without_power'])} (counted as 0 W)")
    single = summary["single_device"]
    if single is None:
        lines.append("best single device: none can run every node")
    else:
        lines.append(f"best single device: {single['device']} {single['seconds']:.6g} s; speedup {summary['speedup']:.3f}x")
    lines.append(f"bytes transferred: {summary['bytes_between_devices']} between devices, {summary['bytes_host_io']} host I/O")
    return lines


def json_summary(schedule: Schedule) -> dict[str, Any]:
    """The ``--json`` record: makespan, placement, slots, algorithm and the seconds it took."""
    return {
        "makespan": schedule.makespan_s,
        "period": schedule.period_s,
        "placement": dict(schedule.placement),
        "slots": [dataclasses.asdict(slot) for slot in schedule.slots],
        "algorithm": schedule.algorithm,
        "seconds": schedule.solve_s,
        "energy_J": schedule.energy_J,
    }
