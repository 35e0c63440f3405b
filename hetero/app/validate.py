"""Simulation against reality: schedule, simulate, then run the same plan on the real devices.

``validate`` plans a model on measured devices with the profile's cost model (or takes the plan
``--placement`` gives: a PLAN.json or random:SEED, as ``hetero run`` does), plays the plan out in
the simulator (closed loop, ``inflight`` requests at a time), runs the same plan with the same
concurrency through the runtime, and compares predicted with measured latency, throughput, per-op
times and per-hand-off times (``per_op``, ``handoffs`` and their :func:`totals`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from hetero.ir.graph import Graph
from hetero.cost.model import cost_model_for
from hetero.cost.protocol import HOST
from hetero.quant.precision import load_for_precision
from hetero.policy import PolicyContext, make_policy
from hetero.cost.profile import check_device, load_profile
from hetero.exec.runtime import RunReport, Runtime
from hetero.schedule import Schedule
from hetero.schedulers import schedule


@dataclass(frozen=True)
class Validation:
    plan: Schedule
    predicted_latency_s: float
    measured_latency_s: float
    predicted_throughput_rps: float
    measured_throughput_rps: float
    per_op: list[dict[str, Any]]
    report: RunReport
    handoffs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def rel(predicted: float, measured: float) -> float | None:
            return (predicted - measured) / measured if measured > 0 and math.isfinite(predicted) else None

        return {
            "predicted_s": self.predicted_latency_s,
            "measured_s": self.measured_latency_s,
            "latency_rel_error": rel(self.predicted_latency_s, self.measured_latency_s),
            "predicted_throughput_rps": self.predicted_throughput_rps,
            "measured_throughput_rps": self.measured_throughput_rps,
            "throughput_rel_error": rel(self.predicted_throughput_rps, self.measured_throughput_rps),
            "makespan_s": self.plan.makespan_s,
            "algorithm": self.plan.algorithm,
            "placement": dict(self.plan.placement),
            "requests": len(self.report.latencies_s),
            "failed_requests": self.report.failed_requests,
            "per_op": self.per_op,
            "handoffs": self.handoffs,
            "totals": totals(self.per_op, self.handoffs, self.plan.makespan_s, self.measured_latency_s),
        }


def _simulate(graph: Graph, cost: Any, profile_path: str, devices: list[str], plan: Schedule, precision: str,
              requests: int, inflight: int) -> tuple[float, float]:
    """Predicted median latency and throughput of the plan under a closed loop of ``inflight`` clients."""
    from hetero.problem import as_task_graph
    from hetero.sim import simulate
    from hetero.sim.scenario import DeviceEntry, Scenario, Workload
    from hetero.sim.world import World

    from hetero.sim.effects import effects_from_profile, host_link, pair_links

    profile = cost.profile
    # each device's host link carries the mean of its up and down fits with the request's start and
    # end (handoffs.host.D), as the scenario simulator's (a device on another host: two actor calls)
    links = [host_link(profile, profile_path, name, name) for name in devices]
    links.extend(pair_links(profile, {name: name for name in devices}))
    effects = effects_from_profile(profile, {name: name for name in devices})
    scenario = Scenario(
        model="validate",
        devices=tuple(DeviceEntry(name=n, profile=profile_path, device=n) for n in devices),
        workload=Workload("closed", clients=inflight, requests=requests),
        duration_s=1e6,  # the run ends when the last of the capped requests completes: each client serves
        # requests one after another, so a device's idle time between requests (its wake-up) is simulated
        links=tuple(links),
        host=HOST,
        precision=precision,
        name="validate",
    )
    world = World(as_task_graph(graph), cost, tuple(links), name="validate", effects=effects or None)
    result = simulate(scenario, world=world, policy=make_policy("static"), initial=plan).to_dict()
    return float(result["latency_s"]["p50"]), float(result["throughput_per_s"])


def validate(model: str, device_names: list[str], profile_path: str, requests: int = 30, inflight: int = 1,
             algorithm: str = "auto", seed: int = 0, input_shapes: dict[str, tuple[int, ...]] | None = None,
             cluster: Any = None, placement: str = "auto") -> Validation:
    """Schedule (or take ``placement``: auto, a PLAN.json path or random:SEED), simulate and run one
    plan; measured devices must be the profiled hardware (HOST/DEVICE ones on ``cluster``, a
    :class:`hetero.remote.Cluster`)."""
    from hetero.app.run import plan_file
    from hetero.remote import open_devices

    fixed = plan_file(placement)  # a bad --placement is refused before any device is opened
    profile = load_profile(profile_path)
    devices = open_devices(device_names, cluster)
    try:
        return _validate_on(model, devices, device_names, profile, profile_path, requests, inflight, algorithm, seed,
                            input_shapes, placement, fixed)
    finally:
        for device in devices.values():  # released here: left open, each call's OpenCL contexts and
            device.close()  # device threads stayed, and the next call in the process ran slower


def _validate_on(model: str, devices: dict, device_names: list[str], profile: Any, profile_path: str, requests: int,
                 inflight: int, algorithm: str, seed: int, input_shapes: dict[str, tuple[int, ...]] | None,
                 placement: str, fixed: Any) -> Validation:
    from hetero.app.run import check_plan_fits, initial_plan

    for name, device in devices.items():
        check_device(profile, profile_path, name, device.info)
    graph = load_for_precision(model, profile.precision, input_shapes)
    cost, memory = cost_model_for(graph, profile_path, device_names, profile.precision)
    if placement == "auto":
        plan = schedule(graph, cost, algorithm=algorithm, memory_bytes=memory)
    else:
        if fixed is not None:
            check_plan_fits(placement, fixed, graph, device_names)
        for device in devices.values():
            learn = getattr(device, "learn", None)
            if learn is not None:  # a remote device: its capabilities in one call
                learn(list(graph.ops_in_order()))
        plan = initial_plan(graph, cost, devices, placement, fixed)
    predicted_latency, predicted_throughput = _simulate(graph, cost, profile_path, device_names, plan, profile.precision, requests, inflight)
    rng = np.random.default_rng(seed)
    spec = graph.inputs[0]
    feeds = [{spec.name: rng.random(spec.shape, dtype=np.float32).astype(spec.dtype)} for _ in range(requests)]
    policy = make_policy("static")
    runtime = Runtime(graph, devices, policy, PolicyContext(graph, cost, algorithm=algorithm, memory_bytes=memory), initial=plan)
    runtime.serve(feeds[: min(3, requests)], inflight=inflight)  # warm-up: kernels compiled, weights prepared
    report = runtime.serve(feeds, inflight=inflight)
    done = [latency for latency in report.latencies_s if latency is not None]
    per_op = _per_op(graph, plan, cost, report.op_wall_s)
    return Validation(
        plan=plan,
        predicted_latency_s=predicted_latency,
        measured_latency_s=float(np.median(done)) if done else math.nan,
        predicted_throughput_rps=predicted_throughput,
        measured_throughput_rps=len(done) / report.wall_s if report.wall_s > 0 else math.nan,
        per_op=per_op,
        report=report,
        handoffs=_handoffs(graph, plan, cost, report.events),
    )


def _per_op(graph: Graph, plan: Schedule, cost: Any, seconds: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for op in graph.ops_in_order():
        device = plan.placement[op.name]
        predicted = cost.compute(op.name, device)
        measured = float(np.median(seconds[op.name])) if seconds.get(op.name) else math.nan
        rows.append({
            "node": op.name, "type": op.type, "device": device, "predicted_s": predicted, "measured_s": measured,
            "error_s": predicted - measured if math.isfinite(measured) else None,
            "rel_error": (predicted - measured) / measured if measured > 0 else None,
        })
    return rows


def _handoffs(graph: Graph, plan: Schedule, cost: Any, events: Any) -> list[dict[str, Any]]:
    """One row per cross-device edge of the plan: the predicted transfer against the measured gap,
    the median over requests of the consumer's start minus the end of its last producer to finish
    (host clock; for the edge from that producer: its end). The gap holds what a hand-off costs for
    real: download, queue wake-up, upload, synchronisation, and waiting for the consumer's device to
    be free; ``waited_s`` (median) is how long the tensor was ready before the consumer's other
    inputs were, time spent on another path and not on this hand-off."""
    started: dict[tuple[int, str], float] = {}
    ended: dict[tuple[int, str], float] = {}
    for event in events:  # sorted by start; a retried op's last run counts
        if event.kind == "compute" and "request" in event.args:
            key = (int(event.args["request"]), event.name)
            started[key], ended[key] = event.start_s, event.end_s
    predicted = {(t.src_node, t.dst_node): t.end_s - t.start_s for t in plan.transfers}
    requests = sorted({request for request, _ in started})
    rows = []
    for src, dst, data in graph.edges(data=True):
        src_device, dst_device = plan.placement[src], plan.placement[dst]
        if src_device == dst_device:
            continue
        nbytes = int(data["nbytes"])
        expected = predicted.get((src, dst))
        if expected is None:
            expected = cost.transfer(nbytes, src_device, dst_device)
        gaps, waits = [], []
        for r in requests:
            if (r, src) not in ended or (r, dst) not in started:
                continue
            ready = max(ended[(r, p)] for p in graph.predecessors(dst) if (r, p) in ended)
            gaps.append(started[(r, dst)] - ready)
            waits.append(ready - ended[(r, src)])
        measured = float(np.median(gaps)) if gaps else math.nan
        rows.append({
            "src": src, "dst": dst, "src_device": src_device, "dst_device": dst_device, "bytes": nbytes,
            "predicted_s": float(expected), "measured_s": measured, "waited_s": float(np.median(waits)) if waits else None,
            "error_s": float(expected) - measured if gaps else None,
            "rel_error": (float(expected) - measured) / measured if gaps and measured > 0 else None,
        })
    return rows


def totals(per_op: list[dict[str, Any]], handoffs: list[dict[str, Any]], predicted_makespan_s: float,
           measured_latency_s: float) -> dict[str, Any]:
    """Where the error comes from: the sum of the per-op errors, of the hand-off errors, the makespan
    error (the plan's makespan against the measured median latency) and the rest (host I/O, waits on a
    busy device, overlap of parallel branches: what neither sum explains)."""
    op_error = sum(row["error_s"] for row in per_op if row["error_s"] is not None)
    handoff_error = sum(row["error_s"] for row in handoffs if row["error_s"] is not None)
    makespan_error = predicted_makespan_s - measured_latency_s if math.isfinite(measured_latency_s) else None
    return {
        "op_predicted_s": sum(row["predicted_s"] for row in per_op),
        "op_measured_s": sum(row["measured_s"] for row in per_op if math.isfinite(row["measured_s"])),
        "op_error_s": op_error,
        "handoffs": len(handoffs),
        "handoff_predicted_s": sum(row["predicted_s"] for row in handoffs),
        "handoff_measured_s": sum(row["measured_s"] for row in handoffs if math.isfinite(row["measured_s"])),
        "handoff_error_s": handoff_error,
        "makespan_predicted_s": predicted_makespan_s,
        "makespan_measured_s": measured_latency_s,
        "makespan_error_s": makespan_error,
        "rest_error_s": makespan_error - op_error - handoff_error if makespan_error is not None else None,
    }
