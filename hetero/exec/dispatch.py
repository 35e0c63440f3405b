"""The runtime's own cost per op: thread hand-offs, queueing and bookkeeping around each kernel.

Measured by serving a chain of tiny Identity ops on one device through the real Runtime and
subtracting the ops' own wall time; a profile records it (``runtime.dispatch_s``) and the
profile cost model adds it to every op, so plans price what the runtime really costs.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.protocol import TableCostModel
from hetero.exec.runtime import Runtime
from hetero.ir.graph import Graph, Op, TensorSpec, make_op
from hetero.policy import PolicyContext, make_policy
from hetero.schedulers import fixed_schedule

HOST_KINDS = ("cpu", "reference")
REMOTE_KIND_PREFIX = "remote-"  # the kinds hetero.remote.client gives devices on other hosts (remote-cpu, ...)


def op_wall_s(device: Device, graph: Graph, warmup: int = 2, count: int = 30) -> float:
    """Median host wall time of one launch of the graph's first op on the device (synchronised)."""
    op = next(iter(graph.ops_in_order()))
    spec = graph.inputs[0]
    buffers = [device.upload(np.zeros(spec.shape, spec.dtype))]
    for _ in range(warmup):
        device.run(op, buffers)
    device.synchronize()
    walls = []
    for _ in range(count):
        start = time.perf_counter()
        device.run(op, buffers)
        device.synchronize()
        walls.append(time.perf_counter() - start)
    return float(np.median(walls))


def identity_chain(length: int) -> Graph:
    """``length`` Identity ops on a 16-float tensor, one after the other."""
    spec = TensorSpec("t0", (16,), "float32")
    ops, specs = [], {"t0": spec}
    for i in range(length):
        op = make_op(f"id{i}", "Identity", [f"t{i}"], [f"t{i + 1}"], {}, specs, {})
        specs[f"t{i + 1}"] = op.output_specs[0]
        ops.append(op)
    return Graph.build(ops, [spec], [f"t{length}"], name="dispatch-calibration")


def single_device_runtime(graph: Graph, device: Device, op_s: float | Mapping[str, float], links: Sequence = (),
                          host: str | None = None) -> Runtime:
    """A static Runtime serving every op of ``graph`` on ``device``, its plan priced at ``op_s``
    seconds an op (one figure, or by node) with ``links``: the harness of the calibrations that
    serve a graph through the real runtime (this module's, hetero.remote.calibrate's)."""
    seconds = {name: op_s if isinstance(op_s, float) else op_s[name] for name in graph.nodes}
    cost = TableCostModel([device.name], {name: {device.name: s} for name, s in seconds.items()}, list(links), host=host)
    plan = fixed_schedule(graph, cost, {name: device.name for name in graph.nodes})
    return Runtime(graph, {device.name: device}, make_policy("static"), PolicyContext(graph, cost), initial=plan)


def probe_ops(device: Device, graph: Graph, count: int) -> list[Op]:
    """Up to ``count`` ops of distinct signatures the device runs, spread from small to large (the
    very smallest and largest left out when there are more): the probes of the wake-up and
    contention calibrations."""
    unique: dict[str, Op] = {}
    for op in graph.ops_in_order():
        if device.supports(op):
            unique.setdefault(op.signature(), op)
    ranked = sorted(unique.values(), key=lambda o: o.flops + o.bytes_read + o.bytes_written)
    if len(ranked) <= count:
        return ranked
    picks = np.linspace(0, len(ranked) - 1, count + 2)[1:-1]
    return [ranked[int(round(i))] for i in picks]


def calibrate_dispatch(device: Device, length: int = 24, requests: int = 60) -> float:
    """Seconds the runtime adds per op: a chain of tiny Identity ops served on one device,
    latency minus the ops' own wall time, per op. On a device that runs same-device segments as
    one plan (``run_segment``: the cpu device) the chain is one segment: there it is the gaps
    between the ops' spans inside the plan, per op (a request's start and end are the host
    hand-off the profile measures apart, ``hetero.cost.links.calibrate_handoffs``)."""
    graph = identity_chain(length)
    op_s = op_wall_s(device, graph)
    runtime = single_device_runtime(graph, device, op_s)
    feeds = [{"t0": np.zeros(16, np.float32)}] * requests
    runtime.serve(feeds[:5])
    report = runtime.serve(feeds)
    if hasattr(device, "run_segment"):
        spans: dict[int, list[tuple[float, float]]] = {}
        for event in report.events:
            if event.kind == "compute":
                spans.setdefault(int(event.args["request"]), []).append((event.start_s, event.end_s))
        gaps = [(max(e for _, e in s) - min(b for b, _ in s) - sum(e - b for b, e in s)) / length for s in spans.values()]
        return max(0.0, float(np.median(gaps))) if gaps else 0.0
    latency = float(np.median([x for x in report.latencies_s if x is not None]))
    return max(0.0, (latency - length * op_s) / length)


def measure_dispatch(devices: Sequence[Device]) -> float:
    """The runtime's per-op cost, calibrated on the first host device among ``devices`` (else the
    first device here); 0.0 for no devices. What ``profile_graph`` records as ``runtime.dispatch_s``.
    Never on a device of another host (kind ``remote-*``): a chain there would charge every op the
    network round trips of its partition; with only such devices, on this host's reference device."""
    if not devices:
        return 0.0
    here = [d for d in devices if not d.kind.startswith(REMOTE_KIND_PREFIX)]
    host = [d for d in here if d.kind in HOST_KINDS] or here
    if host:
        return calibrate_dispatch(host[0])
    from hetero.backends.registry import open_device

    reference = open_device("reference")
    try:
        return calibrate_dispatch(reference)
    finally:
        reference.close()


def model_dispatch_s(graph: Graph, device: Device, op_s: dict[str, float], outside_s: float,
                     requests: int = 30, seed: int = 0) -> float | None:
    """Seconds the runtime adds per op when it serves ``graph`` all on ``device``: the median
    latency less the ops' profiled seconds (``op_s`` by node) and ``outside_s`` (the request's
    start, end and host links), per op; None when the device lacks a kernel for an op. Unlike the
    Identity chain of :func:`calibrate_dispatch` it sees what the device's one-op path adds to a
    kernel timed inside a compiled plan (on the cpu device: 13-19 us an op for the seed CNN)."""
    from hetero.ir.graph import random_input

    if not all(device.supports(op) for op in graph.ops_in_order()):
        return None
    rng = np.random.default_rng(seed)
    runtime = single_device_runtime(graph, device, op_s)
    feeds = [{spec.name: random_input(spec, rng) for spec in graph.inputs}] * max(3, requests // ROUNDS)
    runtime.serve(feeds[:12] if len(feeds) >= 12 else feeds * 2)  # past the cpu device's thread-count learning
    medians = []
    for _ in range(ROUNDS):  # the quietest round's median: a slow spell of the machine is not the runtime's cost
        report = runtime.serve(feeds)
        medians.append(float(np.median([x for x in report.latencies_s if x is not None])))
    return max(0.0, (min(medians) - sum(op_s.values()) - outside_s) / max(1, graph.number_of_nodes()))


ROUNDS = 3
"""model_dispatch_s serves its requests in this many rounds and keeps the lowest median."""
