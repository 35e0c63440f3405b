"""What a simulation measured: per-request latencies, device busy time, bytes, plans, trace.

:class:`Recorder` collects during the run; :class:`SimResult` is the frozen record afterwards,
with :meth:`SimResult.to_dict` for RESULT.json (no wall-clock figures in it, so the same scenario
and seed give the same file) and the raw series the plot draws.

``end_s`` is the duration, or when the workload's ``requests`` ran out, the moment the last one
finished; ``served_s`` is the span from the first arrival to the last completion and throughput is
completed / served_s. Energy (:mod:`hetero.cost.energy`) is each device's idle_W x end_s +
(busy_W - idle_W) x busy seconds plus each link direction's bytes x J/byte; ``energy_per_request_J``
is the total over the completed requests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from hetero.io import json_safe

from hetero.schedule import Schedule
from hetero.sim.energy import energy_used
from hetero.sim.scenario import DynamicEvent
from hetero.trace import COMPUTE_LANE, TraceEvent

if TYPE_CHECKING:
    from hetero.sim.engine import Request, Simulator
    from hetero.sim.execution import Run

RESULT_FORMAT = "hetero-sim-result"
RESULT_VERSION = 1
TIMELINE_BINS = 100
MAX_LISTED = 50
TRACE_LIMIT = 250_000  # trace events kept; Perfetto's UI slows down well before millions


class Recorder:
    """Counters and series filled in by the simulator."""

    def __init__(self, devices: tuple[str, ...], tracing: bool) -> None:
        self.devices = devices
        self.tracing = tracing
        self.arrivals = 0
        self.arrival_s: list[float] = []
        self.done_s: list[float] = []
        self.last_s = 0.0  # when the last request completed or was given up
        self.outcomes = {"failed": 0, "lost": 0}
        self.retried = 0
        self.rerouted = 0
        self.failures: list[dict[str, Any]] = []
        self.plans: list[dict[str, Any]] = []
        self.migrations: list[tuple[float, float, int]] = []
        self.errors: list[str] = []
        self.marks: list[dict[str, Any]] = []
        self.op_executions = 0
        self.trace: list[TraceEvent] = []
        self.trace_dropped = 0

    def arrived(self, request: "Request") -> None:
        self.arrivals += 1

    def completed(self, request: "Request", now: float) -> None:
        self.arrival_s.append(request.arrival_s)
        self.done_s.append(now)
        self.last_s = max(self.last_s, now)

    def gave_up(self, request: "Request", outcome: str, reason: str, now: float) -> None:
        self.outcomes[outcome] += 1
        self.last_s = max(self.last_s, now)
        if len(self.failures) < MAX_LISTED:
            self.failures.append({"request": request.id, "outcome": outcome, "at_s": now, "reason": reason})

    def planned(self, now: float, why: str, schedule: Schedule) -> None:
        ops: dict[str, int] = {}
        for device in schedule.placement.values():
            ops[device] = ops.get(device, 0) + 1
        self.plans.append({"at_s": now, "why": why, "algorithm": schedule.algorithm,
                           "predicted_makespan_s": schedule.makespan_s, "predicted_energy_J": schedule.energy_J,
                           "ops_per_device": ops})

    def migrated(self, start_s: float, end_s: float, nbytes: int) -> None:
        self.migrations.append((start_s, end_s, nbytes))

    def mark(self, event: DynamicEvent) -> None:
        entry: dict[str, Any] = {"kind": event.kind, "at_s": event.at_s, "duration_s": event.duration_s}
        if event.device is not None:
            entry["device"] = event.device
        if event.link is not None:
            entry["link"] = list(event.link)
        if event.kind in ("slowdown", "bandwidth"):
            entry["factor"] = event.factor
        if event.kind == "load":
            entry["utilisation"] = event.utilisation
        if event.kind == "objective":
            entry["objective"] = event.objective
            entry["energy_budget_J"] = event.energy_budget_J
        self.marks.append(entry)

    def run(self, run: "Run", sim: "Simulator") -> None:
        """Trace events for the ops of a run."""
        if len(self.trace) >= TRACE_LIMIT:
            self.trace_dropped += run.valid
            return
        device = sim.device_names[run.device]
        request = run.execution.request
        previous = run.start_s
        for i in range(run.valid):
            end = run.ends[i]
            self.trace.append(TraceEvent(sim.node_names[run.nodes[i]], "compute", device, COMPUTE_LANE, previous, end,
                                         {"request": request.id, "attempt": request.attempts}))
            previous = end

    def transfer(self, label: str, src: str, dst: str, nbytes: int, start_s: float, end_s: float) -> None:
        if len(self.trace) >= TRACE_LIMIT:
            self.trace_dropped += 1
            return
        self.trace.append(TraceEvent(label or "transfer", "transfer", src, f"link to {dst}", start_s, end_s,
                                     {"bytes": nbytes, "from": src, "to": dst}))

    def result(self, sim: "Simulator", predicted_makespan_s: float) -> "SimResult":
        scenario = sim.scenario
        limit = scenario.workload.requests
        ran_out = limit is not None and sim.admitted >= limit  # the workload stopped before the duration
        end_s = self.last_s if ran_out else max(scenario.duration_s, self.last_s)
        arrival = np.array(self.arrival_s)
        done = np.array(self.done_s)
        latency = done - arrival
        busy = {w.name: np.array(w.busy, dtype=np.float64).reshape(-1, 2) for w in sim.workers}
        completed = len(self.done_s)
        stats = {"mean": float(latency.mean()) if completed else math.nan}
        for q in (50, 95, 99):
            stats[f"p{q}"] = float(np.percentile(latency, q)) if completed else math.nan
        stats["max"] = float(latency.max()) if completed else math.nan
        served_s = float(done.max() - arrival.min()) if completed else 0.0
        edges = np.linspace(0.0, end_s, TIMELINE_BINS + 1)
        busy_s = {name: float((b[:, 1] - b[:, 0]).sum()) for name, b in busy.items()}
        energy = energy_used(sim, end_s, busy_s)
        return SimResult(
            scenario=scenario.name,
            seed=sim.seed,
            policy=sim.policy.name,
            algorithm=scenario.algorithm,
            objective=scenario.objective,
            devices=sim.device_names,
            duration_s=scenario.duration_s,
            end_s=end_s,
            predicted_makespan_s=predicted_makespan_s,
            latency_s=stats,
            served_s=served_s,
            throughput_per_s=completed / served_s if served_s > 0 else 0.0,
            requests={"arrived": self.arrivals, "completed": completed, "failed": self.outcomes["failed"],
                      "lost": self.outcomes["lost"], "retried": self.retried,
                      "rerouted": self.rerouted},
            utilisation={name: seconds / end_s if end_s > 0 else 0.0 for name, seconds in busy_s.items()},
            bytes_per_link=sim.network.bytes_moved(),
            plans=tuple(self.plans),
            rebalances=len(self.plans) - 1,
            migrated_bytes=sum(m[2] for m in self.migrations),
            failures=tuple(self.failures),
            errors=tuple(self.errors),
            events=tuple(self.marks),
            op_executions=self.op_executions,
            energy_J=energy,
            energy_per_request_J=energy["total"] / completed if completed and energy is not None else None,
            power_W={name: {"idle": p.idle_W, "busy": p.busy_W} for name, p in sim.world.energy.power.items()}
            if sim.world.energy is not None else {},
            timeline=_timeline(edges, done, latency, busy),
            request_arrival_s=arrival,
            request_latency_s=latency,
            busy_intervals=busy,
            trace=tuple(self.trace),
            trace_dropped=self.trace_dropped,
        )


def _busy_until(intervals: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Busy seconds in [0, t] for each t, from non-overlapping, time-ordered intervals."""
    if len(intervals) == 0:
        return np.zeros(len(times))
    starts, ends = intervals[:, 0], intervals[:, 1]
    full = np.concatenate([[0.0], np.cumsum(ends - starts)])
    index = np.searchsorted(ends, times, side="right")
    partial = np.where(index < len(starts), np.clip(times - starts[np.minimum(index, len(starts) - 1)], 0.0, None), 0.0)
    return full[index] + partial


def _timeline(edges: np.ndarray, done: np.ndarray, latency: np.ndarray, busy: Mapping[str, np.ndarray]) -> tuple[dict[str, Any], ...]:
    width = edges[1] - edges[0] if len(edges) > 1 else 0.0
    which = np.clip(np.searchsorted(edges, done, side="right") - 1, 0, len(edges) - 2)
    used = {name: np.diff(_busy_until(b, edges)) for name, b in busy.items()}
    rows = []
    for i in range(len(edges) - 1):
        values = latency[which == i]
        row: dict[str, Any] = {"t_s": float(edges[i]), "completed": int(len(values))}
        row["p50_s"] = float(np.percentile(values, 50)) if len(values) else None
        row["p95_s"] = float(np.percentile(values, 95)) if len(values) else None
        row["utilisation"] = {name: float(u[i] / width) if width > 0 else 0.0 for name, u in used.items()}
        rows.append(row)
    return tuple(rows)


@dataclass(frozen=True, eq=False)
class SimResult:
    """The record of one simulation; to_dict() is RESULT.json."""

    scenario: str
    seed: int
    policy: str
    algorithm: str
    objective: str
    devices: tuple[str, ...]
    duration_s: float
    end_s: float
    predicted_makespan_s: float
    latency_s: Mapping[str, float]
    served_s: float
    throughput_per_s: float
    requests: Mapping[str, int]
    utilisation: Mapping[str, float]
    bytes_per_link: Mapping[str, int]
    plans: tuple[Mapping[str, Any], ...]
    rebalances: int
    migrated_bytes: int
    failures: tuple[Mapping[str, Any], ...]
    errors: tuple[str, ...]
    events: tuple[Mapping[str, Any], ...]
    op_executions: int
    energy_J: Mapping[str, Any] | None
    energy_per_request_J: float | None
    power_W: Mapping[str, Mapping[str, float]]
    timeline: tuple[Mapping[str, Any], ...]
    request_arrival_s: np.ndarray = field(repr=False)
    request_latency_s: np.ndarray = field(repr=False)
    busy_intervals: Mapping[str, np.ndarray] = field(repr=False)
    trace: tuple[TraceEvent, ...] = field(default=(), repr=False)
    trace_dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The RESULT.json form (NaN written as null)."""
        data = {
            "format": RESULT_FORMAT,
            "version": RESULT_VERSION,
            "scenario": self.scenario,
            "seed": self.seed,
            "policy": self.policy,
            "scheduler": {"algorithm": self.algorithm, "objective": self.objective},
            "devices": list(self.devices),
            "duration_s": self.duration_s,
            "end_s": self.end_s,
            "predicted_makespan_s": self.predicted_makespan_s,
            "latency_s": dict(self.latency_s),
            "served_s": self.served_s,
            "throughput_per_s": self.throughput_per_s,
            "energy_J": None if self.energy_J is None else json.loads(json.dumps(self.energy_J)),
            "energy_per_request_J": self.energy_per_request_J,
            "power_W": {name: dict(p) for name, p in self.power_W.items()},
            "requests": dict(self.requests),
            "utilisation": dict(self.utilisation),
            "bytes_per_link": dict(self.bytes_per_link),
            "rebalances": self.rebalances,
            "migrated_bytes": self.migrated_bytes,
            "plans": [dict(p) for p in self.plans],
            "failures": [dict(f) for f in self.failures],
            "errors": list(self.errors),
            "events": [dict(e) for e in self.events],
            "op_executions": self.op_executions,
            "timeline": [dict(row) for row in self.timeline],
        }
        return json_safe(data)
