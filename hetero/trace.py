"""Traces: one event format for simulated and real runs, exported as Chrome/Perfetto JSON.

A :class:`TraceEvent` is a named interval on a device's lane: ``compute`` for a node running,
``transfer`` for bytes on a link (the lane names the link). A schedule's predicted events come
from :func:`schedule_events`; the simulator and the runtime emit the same records from what
they observe, so predicted and measured traces open side by side in https://ui.perfetto.dev
(Chrome's trace-event format: "X" complete events in microseconds, one process per device,
one thread per stream or link).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hetero.io import write_atomic
from hetero.schedule import Schedule

COMPUTE_LANE = "compute"


@dataclass(frozen=True)
class TraceEvent:
    """One interval: ``name`` ran on ``device``'s ``lane`` from start_s to end_s."""

    name: str
    kind: str
    device: str
    lane: str
    start_s: float
    end_s: float
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def schedule_events(schedule: Schedule) -> list[TraceEvent]:
    """The predicted events of a schedule: one per slot and one per transfer (on the sender's process)."""
    events = [
        TraceEvent(slot.node, "compute", slot.device, COMPUTE_LANE, slot.start_s, slot.end_s, {"algorithm": schedule.algorithm})
        for slot in schedule.slots
    ]
    for transfer in schedule.transfers:
        events.append(
            TraceEvent(
                f"{transfer.src_node} -> {transfer.dst_node}",
                "transfer",
                transfer.src_device,
                f"link to {transfer.dst_device}",
                transfer.start_s,
                transfer.end_s,
                {"bytes": transfer.nbytes, "from": transfer.src_device, "to": transfer.dst_device},
            )
        )
    return sorted(events, key=lambda e: (e.start_s, e.device, e.lane, e.name))


def chrome_trace(events: Iterable[TraceEvent], devices: Iterable[str] = (), label: str = "hetero") -> dict[str, Any]:
    """Chrome/Perfetto trace-event JSON: ph "X" events, pid per device, tid per lane, metadata names."""
    events = list(events)
    process_ids: dict[str, int] = {}
    thread_ids: dict[tuple[str, str], int] = {}
    for device in list(devices) + [e.device for e in events]:
        process_ids.setdefault(device, len(process_ids) + 1)
    lanes_per_device: dict[str, int] = {}
    for event in sorted(events, key=lambda e: (e.device, e.lane != COMPUTE_LANE, e.lane)):
        key = (event.device, event.lane)
        if key not in thread_ids:
            lanes_per_device[event.device] = lanes_per_device.get(event.device, 0) + 1
            thread_ids[key] = lanes_per_device[event.device]
    records: list[dict[str, Any]] = []
    for device, pid in process_ids.items():
        records.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": device}})
        records.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for (device, lane), tid in thread_ids.items():
        records.append({"ph": "M", "name": "thread_name", "pid": process_ids[device], "tid": tid, "args": {"name": lane}})
    for event in events:
        records.append(
            {
                "name": event.name,
                "cat": event.kind,
                "ph": "X",
                "ts": event.start_s * 1e6,
                "dur": event.duration_s * 1e6,
                "pid": process_ids[event.device],
                "tid": thread_ids[(event.device, event.lane)],
                "args": dict(event.args),
            }
        )
    return {"traceEvents": records, "displayTimeUnit": "ms", "otherData": {"source": label}}


def write_chrome_trace(path: str | os.PathLike[str], events: Iterable[TraceEvent], devices: Iterable[str] = (), label: str = "hetero") -> None:
    """Write a Chrome/Perfetto trace file atomically."""
    write_atomic(path, json.dumps(chrome_trace(events, devices, label)).encode())


def write_schedule_trace(path: str | os.PathLike[str], schedule: Schedule) -> None:
    """The predicted trace of a schedule, written atomically."""
    write_chrome_trace(path, schedule_events(schedule), schedule.devices, label=f"hetero schedule ({schedule.algorithm})")
