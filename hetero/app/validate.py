"""Simulation against reality: schedule, simulate, then run the same plan on the real devices.

``validate`` plans a model on measured devices with the profile's cost model, plays the plan out
in the simulator (closed loop, ``inflight`` requests at a time), runs the same plan with the same
concurrency through the runtime, and compares predicted with measured latency, throughput and
per-op times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from hetero.ir.graph import Graph
from hetero.cost.model import cost_model_for
from hetero.cost.protocol import HOST, Link
from hetero.errors import ProfileError
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
        }


def _simulate(graph: Graph, cost: Any, profile_path: str, devices: list[str], plan: Schedule, precision: str,
              requests: int, inflight: int) -> tuple[float, float]:
    """Predicted median latency and throughput of the plan under a closed loop of ``inflight`` clients."""
    from hetero.problem import as_task_graph
    from hetero.sim import simulate
    from hetero.sim.scenario import DeviceEntry, Scenario, Workload
    from hetero.sim.world import World

    profile = cost.profile
    links = []
    for name in devices:
        fit = profile.link(HOST, name) or profile.link(name, HOST)
        if fit is None:
            raise ProfileError(f"{profile_path}: links: no link between {name} and the {HOST} was measured; "
                               f"profile {name} again (hetero profile MODEL --devices {name} -o {profile_path})")
        links.append(Link(name, HOST, fit.latency_s, fit.bandwidth_Bps))
    scenario = Scenario(
        model="validate",
        devices=tuple(DeviceEntry(name=n, profile=profile_path, device=n) for n in devices),
        workload=Workload("closed", clients=inflight, requests=requests),
        duration_s=1e-9,  # the run ends when the last of the capped requests completes
        links=tuple(links),
        host=HOST,
        precision=precision,
        name="validate",
    )
    world = World(as_task_graph(graph), cost, tuple(links), name="validate")
    result = simulate(scenario, world=world, policy=make_policy("static"), initial=plan).to_dict()
    return float(result["latency_s"]["p50"]), float(result["throughput_per_s"])


def validate(model: str, device_names: list[str], profile_path: str, requests: int = 30, inflight: int = 1,
             algorithm: str = "auto", seed: int = 0, input_shapes: dict[str, tuple[int, ...]] | None = None,
             cluster: Any = None) -> Validation:
    """Schedule, simulate and run one plan; measured devices must be the profiled hardware
    (HOST/DEVICE ones on ``cluster``, a :class:`hetero.remote.Cluster`)."""
    from hetero.remote import open_devices

    profile = load_profile(profile_path)
    devices = open_devices(device_names, cluster)
    for name, device in devices.items():
        check_device(profile, profile_path, name, device.info)
    graph = load_for_precision(model, profile.precision, input_shapes)
    cost, memory = cost_model_for(graph, profile_path, device_names, profile.precision)
    plan = schedule(graph, cost, algorithm=algorithm, memory_bytes=memory)
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
    )


def _per_op(graph: Graph, plan: Schedule, cost: Any, seconds: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for op in graph.ops_in_order():
        device = plan.placement[op.name]
        predicted = cost.compute(op.name, device)
        measured = float(np.median(seconds[op.name])) if seconds.get(op.name) else math.nan
        rows.append({
            "node": op.name, "type": op.type, "device": device, "predicted_s": predicted, "measured_s": measured,
            "rel_error": (predicted - measured) / measured if measured > 0 else None,
        })
    return rows
