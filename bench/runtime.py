"""Partitioned int8 inference: runtime overhead per op, and latency/throughput against the best
single device and onnxruntime int8, all measured in the same run.

Run: ``.venv/bin/python bench/runtime.py [--models seed-cnn,resnet18] [--devices cpu,opencl:0] [--requests 60] [--inflight 4]``

- overhead per op = (measured request latency - sum of its ops' wall times - its transfers) / ops,
  from the runtime's own trace (target: under 50 us per op);
- latency: one request at a time; throughput: ``--inflight`` requests at a time;
- peers: the same int8 graph on each single device through the runtime, and onnxruntime on the
  same QDQ model with the same thread count (2); on the cpu device also with the runtime's
  same-device segments off (every op its own queue task, as before hetero.exec.segments).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import onnxruntime as ort

from hetero.backends import open_device
from hetero.cost.model import ProfileCostModel
from hetero.backends.discovery import discover
from hetero.errors import HeteroError
from hetero.quant.lowering import lower_qdq
from hetero.ir.onnx_import import import_onnx
from hetero.quant.precision import quantized_onnx
from hetero.policy import PolicyContext, make_policy
from hetero.cost.profiler import Budget, profile_graph
from hetero.exec.dispatch import measure_dispatch
from hetero.exec.runtime import Runtime
from hetero.schedulers import fixed_schedule, schedule


def overhead_per_op(report, ops: int) -> float:
    """Median over requests of (latency - op wall times - transfer times) / ops."""
    busy: dict[int, float] = defaultdict(float)
    for event in report.events:
        request = event.args.get("request")
        if request is not None:
            busy[request] += event.duration_s
    transfers = sum(e.duration_s for e in report.events if e.kind == "transfer") / max(1, len(report.latencies_s))
    values = [(latency - busy[i] - transfers) / ops for i, latency in enumerate(report.latencies_s) if latency is not None]
    return statistics.median(values)


def bench(model: str, names: list[str], requests: int, inflight: int) -> None:
    qdq = quantized_onnx(f"builtin:{model}")
    graph = lower_qdq(import_onnx(qdq, label=model))
    devices = {n: open_device(n) for n in names}
    profile = profile_graph(graph, list(devices.values()), model, "int8", Budget(seconds_per_op=0.1),
                            transfer_sizes=[4096, 1 << 16, 1 << 20, 1 << 22], dispatch_s=measure_dispatch(list(devices.values())))
    cost = ProfileCostModel(graph, profile, names, precision="int8")
    spec = graph.inputs[0]
    x = np.random.default_rng(0).random(spec.shape, dtype=np.float32)
    feeds = [{spec.name: x}] * requests
    plans = {f"single {n}": fixed_schedule(graph, cost, {op: n for op in graph.nodes}) for n in names}
    plans["partitioned (latency plan)"] = schedule(graph, cost, "auto", "latency")
    plans["partitioned (throughput plan)"] = schedule(graph, cost, "auto", "throughput")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    print(f"\n{model} int8 ({len(graph)} ops; {requests} requests; throughput with {inflight} in flight)")
    print(f"  {'configuration':<32} {'latency ms':>10} {'req/s':>8} {'overhead us/op':>15} {'ORT latency / this':>19}")
    for _ in range(3):
        session.run(None, {spec.name: x})
    ort_samples = []
    for _ in range(requests):
        start = time.perf_counter()
        session.run(None, {spec.name: x})
        ort_samples.append(time.perf_counter() - start)
    ort_latency = statistics.median(ort_samples)
    print(f"  {'onnxruntime':<32} {ort_latency * 1e3:>10.3f} {1 / ort_latency:>8.0f} {'':>15} {1.0:>18.2f}x")
    rows = [(label, plan, True) for label, plan in plans.items()]
    if "cpu" in names:  # the runtime before same-device segments: every op its own queue task
        rows.insert(1, ("single cpu, op by op", plans["single cpu"], False))
    for label, plan, segments in rows:
        used = sorted(set(plan.placement.values()))
        runtime = Runtime(graph, {n: devices[n] for n in used}, make_policy("static"), PolicyContext(graph, cost),
                          initial=plan, segments=segments)
        runtime.serve(feeds[:3])
        latency_run = runtime.serve(feeds, inflight=1)
        throughput_run = runtime.serve(feeds, inflight=inflight)
        latency = statistics.median(v for v in latency_run.latencies_s if v is not None)
        rps = throughput_run.completed / throughput_run.wall_s
        overhead = overhead_per_op(latency_run, len(graph))
        name = f"{label} [{'+'.join(used)}]" if label.startswith("partitioned") else label
        print(f"  {name:<32} {latency * 1e3:>10.3f} {rps:>8.0f} {overhead * 1e6:>15.1f} {ort_latency / latency:>18.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="seed-cnn,resnet18")
    parser.add_argument("--devices", help="default: cpu and the first usable OpenCL device (cpu alone when none is)")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--inflight", type=int, default=4)
    args = parser.parse_args()
    usable, absent = discover(["cpu", "opencl"])
    names = args.devices.split(",") if args.devices else ["cpu"] + [d.name for d in usable if d.kind == "opencl"][:1]
    print(f"devices: {', '.join(names)}")
    for entry in absent:
        print(f"  not benchmarked: {entry.kind}: {entry.reason}")
    try:
        for model in args.models.split(","):
            bench(model, names, args.requests, args.inflight)
    except HeteroError as err:
        sys.exit(f"bench/runtime.py: error: {err}")


if __name__ == "__main__":
    main()
