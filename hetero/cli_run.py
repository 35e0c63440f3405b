"""hetero run: one device (``--device``) or partitioned across several (``--devices``)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

from hetero.errors import InputError
from hetero.graph import Graph

log = logging.getLogger(__name__)


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a model on one device, or partitioned across several")
    p.add_argument("model", help="an .onnx path or builtin:NAME")
    p.add_argument("--input", required=True, help="input array: .npy (single input; a leading axis of samples is split into requests) or .npz by input name")
    p.add_argument("-o", "--output", help="where to write the outputs (.npy, or .npz for several)")
    p.add_argument("--device", default=None, help="one device: reference, cpu, opencl:N or cuda:N (default: reference)")
    p.add_argument("--devices", help="several devices, comma-separated: run partitioned with one worker per device")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="fp32, or int8 (quantizes an fp32 model first)")
    p.add_argument("--repeat", type=int, default=0, help="one device: time N runs after warm-up, host input to host output")
    p.add_argument("--threads", type=int, default=0, help="threads for the cpu device (default: all cores)")
    p.add_argument("--placement", default="auto", help="with --devices: auto, a PLAN.json from hetero schedule, or random:SEED")
    p.add_argument("--profile", help="with --devices and --placement auto: the profile to plan with (else a quick one is measured)")
    p.add_argument("--algorithm", default="auto", help="with --placement auto: the scheduling algorithm")
    p.add_argument("--requests", type=int, default=0, help="with --devices: number of requests (default: one per input sample)")
    p.add_argument("--inflight", type=int, default=1, help="with --devices: requests in flight at once")
    p.add_argument("--policy", default="static", help="with --devices: static, threshold, periodic, failover or least-loaded")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE", help="a policy parameter, e.g. period=0.5")
    p.add_argument("--trace", help="with --devices: write the run's Chrome/Perfetto trace")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_run)


def feeds_from(graph: Graph, path: str) -> list[dict[str, np.ndarray]]:
    """Requests from an input file: one per sample along a leading axis, or the file as one request."""
    from hetero.io import read_arrays

    loaded = read_arrays(path)
    if isinstance(loaded, dict):
        return [loaded]
    if len(graph.inputs) != 1:
        raise InputError(f"{path}: model {graph.name} has {len(graph.inputs)} inputs; pass an .npz keyed by input name")
    spec = graph.inputs[0]
    if loaded.shape == spec.shape:
        return [{spec.name: loaded}]
    if loaded.ndim == len(spec.shape) and spec.shape[0] == 1 and loaded.shape[1:] == spec.shape[1:]:
        return [{spec.name: loaded[i : i + 1]} for i in range(loaded.shape[0])]
    raise InputError(f"input '{spec.name}' has shape {list(loaded.shape)}, model {graph.name} expects {list(spec.shape)}")


def _stack(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(outputs) == 1:
        return outputs[0]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def _policy_params(pairs: list[str]) -> dict[str, float]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"--policy-param {pair!r}: write KEY=VALUE")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--policy-param {key}: {value!r} is not a number") from None
    return params


def cmd_run(args: argparse.Namespace) -> int:
    from hetero.pipeline import load_for_precision

    if args.repeat < 0 or args.requests < 0 or args.inflight < 1:
        raise InputError("--repeat and --requests must be >= 0 and --inflight >= 1")
    if args.devices and args.device:
        raise InputError("give --device (one device) or --devices (partitioned), not both")
    graph = load_for_precision(args.model, args.precision)
    requests = feeds_from(graph, args.input)
    if args.devices:
        summary, outputs = run_partitioned(graph, requests, args)
    else:
        summary, outputs = run_single(graph, requests, args)
    if args.output:
        from hetero.io import write_arrays

        write_arrays(args.output, _stack(outputs))
    first = next(iter(_stack(outputs).values()))
    if first.ndim == 2:
        summary["top1"] = [int(i) for i in first.argmax(axis=1)]
    if args.json:
        print(json.dumps(summary))
        return 0
    for name, array in _stack(outputs).items():
        print(f"{name}: {list(array.shape)} {array.dtype}")
    if "top1" in summary and len(summary["top1"]) <= 16:
        print(f"top-1 class: {summary['top1']}")
    for key in ("median_s", "p90_s"):
        if summary.get(key) is not None:
            print(f"{key[:-2]}: {summary[key] * 1e3:.2f} ms")
    for key in ("seconds", "throughput_rps", "rebalances", "retries", "failed_requests", "failed_devices"):
        if summary.get(key) not in (None, []):
            print(f"{key}: {summary[key]}")
    if "placement" in summary:
        devices = sorted(set(summary["placement"].values()))
        counts = {d: sum(1 for v in summary["placement"].values() if v == d) for d in devices}
        print("placement: " + ", ".join(f"{d} {n} ops" for d, n in counts.items()))
    if args.output:
        print(f"wrote {args.output}")
    return 0


def run_single(graph: Graph, requests: list[dict[str, np.ndarray]], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    from hetero.backends import open_device
    from hetero.executor import run_on_device, time_on_device

    name = args.device or "reference"
    options = {"threads": args.threads} if args.threads and name == "cpu" else {}
    device = open_device(name, **options)
    summary: dict[str, Any] = {"device": name, "precision": args.precision}
    if args.repeat:
        if len(requests) != 1:
            raise InputError("--repeat times one input; pass a single sample")
        outputs, seconds = time_on_device(graph, device, requests[0], repeat=args.repeat)
        summary.update(repeat=args.repeat, median_s=float(np.median(seconds)), p90_s=float(np.percentile(seconds, 90)), min_s=float(np.min(seconds)))
        return summary, [outputs]
    start = time.perf_counter()
    results = [run_on_device(graph, device, feeds) for feeds in requests]
    summary["seconds"] = time.perf_counter() - start
    return summary, results


def run_partitioned(graph: Graph, requests: list[dict[str, np.ndarray]], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    from hetero.backends import open_device
    from hetero.errors import DeviceError
    from hetero.policy import PolicyContext, make_policy
    from hetero.runtime import Runtime

    names = [d.strip() for d in args.devices.split(",") if d.strip()]
    if len(set(names)) != len(names):
        raise InputError(f"--devices lists a device twice: {args.devices}")
    policy = make_policy(args.policy, _policy_params(args.policy_param))
    devices = {n: open_device(n, **({"threads": args.threads} if args.threads and n == "cpu" else {})) for n in names}
    cost, memory = planning_cost(graph, devices, args)
    context = PolicyContext(graph, cost, algorithm=args.algorithm, memory=memory)
    initial = initial_plan(graph, cost, devices, args.placement)
    runtime = Runtime(graph, devices, policy, context, initial=initial)
    count = args.requests or len(requests)
    work = [requests[i % len(requests)] for i in range(count)]
    report = runtime.serve(work, inflight=args.inflight)
    if args.trace:
        from hetero.trace import write_chrome_trace

        write_chrome_trace(args.trace, report.events, names, label=f"hetero run {args.model}")
    if report.completed == 0:
        raise DeviceError(f"no request completed (devices failed: {', '.join(report.failed_devices) or 'none'})")
    summary = {"devices": names, "precision": args.precision, "policy": args.policy, **report.summary()}
    outputs = [o for o in report.outputs if o is not None]
    return summary, outputs


def planning_cost(graph: Graph, devices: dict, args: argparse.Namespace):
    """The cost model a partitioned run plans with: the given profile, else a quick measurement."""
    from hetero.cost_profile import ProfileCostModel
    from hetero.pipeline import cost_model_for, quick_profile

    if args.profile:
        return cost_model_for(graph, args.profile, list(devices), args.precision)
    profile = quick_profile(graph, list(devices.values()), args.model, args.precision)
    memory = {n: d.info.memory_bytes for n, d in devices.items() if d.info.memory_bytes}
    can_run = lambda op, name: devices[name].supports(op)  # noqa: E731
    return ProfileCostModel(graph, profile, list(devices), precision=args.precision, can_run=can_run), memory


def initial_plan(graph: Graph, cost: Any, devices: dict, placement: str):
    """None for auto (the policy plans), else the Schedule of a plan file or a random placement."""
    from hetero.schedule import read_plan
    from hetero.schedulers import fixed_schedule

    if placement == "auto":
        return None
    if placement.startswith("random:"):
        try:
            seed = int(placement.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--placement {placement}: write random:SEED with an integer seed") from None
        return fixed_schedule(graph, cost, random_placement(graph, devices, seed), algorithm=placement)
    plan = read_plan(placement)
    return fixed_schedule(graph, cost, dict(plan.placement), algorithm=f"plan {placement}")


def random_placement(graph: Graph, devices: dict, seed: int) -> dict[str, str]:
    """Each op on a random device that has a kernel for it."""
    rng = np.random.default_rng(seed)
    placement = {}
    for op in graph.ops_in_order():
        able = [name for name, device in devices.items() if device.supports(op)]
        if not able:
            raise InputError(f"no device among {', '.join(devices)} has a kernel for {op.type} (node {op.name})")
        placement[op.name] = able[int(rng.integers(len(able)))]
    return placement


def add_validate_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="schedule, simulate and run the same plan for real; compare predicted and measured")
    p.add_argument("model", help="an .onnx path or builtin:NAME")
    p.add_argument("--devices", required=True, help="comma-separated measured devices (they must be in the profile)")
    p.add_argument("--profile", required=True, help="the profile measured on these devices (its precision is used)")
    p.add_argument("--requests", type=int, default=30, help="requests run for real and simulated")
    p.add_argument("--inflight", type=int, default=1, help="requests in flight at once (1: latency; more: throughput)")
    p.add_argument("--algorithm", default="auto", help="the scheduling algorithm")
    p.add_argument("--json", action="store_true", help="print predicted_s, measured_s, latency_rel_error, per-op rows as JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from hetero.validate import validate

    if args.requests < 1 or args.inflight < 1:
        raise InputError("--requests and --inflight must be >= 1")
    names = [d.strip() for d in args.devices.split(",") if d.strip()]
    result = validate(args.model, names, args.profile, requests=args.requests, inflight=args.inflight, algorithm=args.algorithm).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"plan: {result['algorithm']}, " + ", ".join(f"{d} {sum(1 for v in result['placement'].values() if v == d)} ops" for d in names))
    print(f"latency    predicted {result['predicted_s'] * 1e3:9.3f} ms  measured {result['measured_s'] * 1e3:9.3f} ms  error {result['latency_rel_error']:+.1%}")
    print(f"throughput predicted {result['predicted_throughput_rps']:9.1f} /s  measured {result['measured_throughput_rps']:9.1f} /s  error {result['throughput_rel_error']:+.1%}")
    print(f"  {'node':<28} {'device':<10} {'predicted':>11} {'measured':>11} {'error':>8}")
    for row in result["per_op"]:
        error = "" if row["rel_error"] is None else f"{row['rel_error']:+.0%}"
        print(f"  {row['node'][:28]:<28} {row['device']:<10} {row['predicted_s'] * 1e6:9.1f}us {row['measured_s'] * 1e6:9.1f}us {error:>8}")
    return 0
