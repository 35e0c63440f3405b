"""hetero run: one device (``--device``) or partitioned across several (``--devices``)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hetero.app.options import add_input_shape_option, device_list, positive_int
from hetero.errors import DeviceError, InputError
from hetero.ir.graph import Graph

log = logging.getLogger(__name__)


def feeds_from(graph: Graph, path: str, allow_nonfinite: bool = False) -> list[dict[str, np.ndarray]]:
    """Requests from an input file: one per sample along a leading axis, or the file as one request."""
    from hetero.io import read_arrays, requests_from

    return requests_from(graph, read_arrays(path), path, allow_nonfinite)


# ----------------------------------------------------------------------------- hetero run


def add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run a model on one device, or partitioned across several")
    p.add_argument("model", help="an .onnx path or builtin:NAME")
    p.add_argument("--input", required=True, help="input array: .npy (single input; a leading axis of samples is split into requests) or .npz by input name; "
                        "of the model's dtype (float16 for a float32 input is cast, with a warning; any other dtype is refused) "
                        "and finite (see --allow-nonfinite)")
    p.add_argument("-o", "--output", help="where to write the outputs (.npy, or .npz for several)")
    p.add_argument("--device", default=None, help="one device: reference, cpu, opencl:N or cuda:N (default: reference)")
    p.add_argument("--devices", help="several devices, comma-separated: run partitioned with one worker per device")
    p.add_argument("--cluster", metavar="tcp://SCHEDULER:8786", help="with --devices: a Dask cluster whose hetero workers serve "
                   "the HOST/DEVICE devices named in --devices (start them with 'hetero worker SCHEDULER --name HOST')")
    p.add_argument("--precision", default=None, choices=["fp32", "int8"], help="fp32, or int8 (quantizes an fp32 model first); default: the model's own (int8 if it has QDQ or QLinear nodes)")
    p.add_argument("--allow-nonfinite", action="store_true", help="run on inputs that hold NaN or Inf (refused by default)")
    p.add_argument("--repeat", type=positive_int, metavar="N", help="one device: time N runs after warm-up, host input to host output")
    p.add_argument("--threads", type=positive_int, help="threads for the cpu device (default: all cores)")
    p.add_argument("--placement", help="with --devices: auto (default), a PLAN.json from hetero schedule, or random:SEED")
    p.add_argument("--profile", help="with --devices and --placement auto: the profile to plan with (else a quick one is measured)")
    p.add_argument("--algorithm", help="with --devices: the scheduling algorithm (default: auto)")
    p.add_argument("--requests", type=positive_int, metavar="N", help="with --devices: number of requests (default: one per input sample)")
    p.add_argument("--inflight", type=positive_int, metavar="K", help="with --devices: requests in flight at once (default: 1)")
    p.add_argument("--policy", help="with --devices: static (default), threshold, periodic, failover or least-loaded")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE", help="a policy parameter, e.g. period=0.5")
    p.add_argument("--fault", action="append", default=[], metavar="DEVICE@REQUEST",
                   help="with --devices: break DEVICE just before request REQUEST starts (requests count from 0, "
                        "as in the trace); every later op on it fails, as a device that hangs or loses its "
                        "context does; repeatable, one per device. Try failover with --policy failover")
    p.add_argument("--trace", help="with --devices: write the run's Chrome/Perfetto trace")
    p.add_argument("--update", metavar="NEW", help="with --devices: load NEW's weights (same graph, new weights: an .onnx or "
                   "builtin:NAME) on every device while serving, and switch to them between requests")
    p.add_argument("--update-after", type=int, metavar="K", help="with --update: start loading NEW when request K starts "
                   "(requests count from 0; default: half way)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    add_input_shape_option(p)
    p.set_defaults(func=cmd_run)


MAX_REQUESTS = 1_000_000
PARTITIONED_ONLY = ("cluster", "placement", "profile", "algorithm", "requests", "inflight", "policy", "policy_param", "fault", "trace",
                    "update", "update_after")


def _policy_params(pairs: list[str]) -> dict[str, float]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--policy-param {pair!r}: write KEY=VALUE, e.g. period=0.5")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise InputError(f"--policy-param {key}: {value!r} is not a number") from None
    return params


@dataclass(frozen=True)
class Fault:
    """--fault DEVICE@REQUEST: the device breaks just before request ``request`` (0-based) starts."""

    device: str
    request: int

    @staticmethod
    def parse(text: str, devices: Sequence[str]) -> "Fault":
        device, sep, number = text.rpartition("@")
        if not sep or not device:
            raise InputError(f"--fault {text!r}: write DEVICE@REQUEST, e.g. cpu@3 (requests count from 0)")
        if device not in devices:
            from hetero.io import did_you_mean

            raise InputError(f"--fault {text}: '{device}' is not one of --devices {','.join(devices)}{did_you_mean(device, devices)}")
        try:
            request = int(number)
        except ValueError:
            raise InputError(f"--fault {text}: {number!r} is not a request number (requests count from 0)") from None
        if request < 0:
            raise InputError(f"--fault {text}: the request number must be >= 0 (requests count from 0)")
        return Fault(device, request)


def _faults(texts: list[str], devices: Sequence[str]) -> list[Fault]:
    faults = [Fault.parse(t, devices) for t in texts]
    seen: set[str] = set()
    for fault in faults:
        if fault.device in seen:
            raise InputError(f"--fault: {fault.device} is given twice; a broken device stays broken, give it once")
        seen.add(fault.device)
    return faults


@dataclass(frozen=True)
class Partitioned:
    """The options of a partitioned run, checked before any work: devices, policy, faults, plan file."""

    names: list[str]
    policy: Any
    policy_name: str
    faults: list[Fault]
    placement: str
    plan: Any  # the Schedule read from a --placement PLAN.json, else None

    @staticmethod
    def from_args(args: argparse.Namespace) -> "Partitioned":
        from hetero.policy import make_policy

        names = device_list(args.devices)
        if args.repeat:
            raise InputError("--repeat times one device; drop --devices, or drop --repeat (a partitioned run reports its latencies)")
        policy_name = args.policy or "static"
        policy = make_policy(policy_name, _policy_params(args.policy_param))
        placement = args.placement or "auto"
        return Partitioned(names, policy, policy_name, _faults(args.fault, names), placement, plan_file(placement))


def _stack(outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(outputs) == 1:
        return outputs[0]
    return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def cmd_run(args: argparse.Namespace) -> int:
    from hetero.io import OutputSet, array_bytes
    from hetero.quant.precision import load_with_precision

    partitioned = args.devices is not None
    if partitioned and args.device:
        raise InputError("give --device (one device) or --devices (partitioned), not both")
    setup = Partitioned.from_args(args) if partitioned else None
    if not partitioned:
        given = [f"--{key.replace('_', '-')}" for key in PARTITIONED_ONLY if getattr(args, key) not in (None, [])]
        if given:
            raise InputError(f"{given[0]} is for partitioned runs; add --devices a,b (or drop {given[0]})")
    outputs = OutputSet({"-o": args.output, "--trace": args.trace})
    if args.output is not None and not str(args.output).endswith((".npy", ".npz")):
        raise InputError(f"-o {args.output}: outputs are written as .npy (one output) or .npz (by name); end the name in one of those")
    from hetero.io import read_arrays
    from hetero.quant.precision import shapes_from_data

    shapes = shapes_from_data(args.model, read_arrays(args.input), args.input_shape)
    graph, args.precision = load_with_precision(args.model, args.precision, shapes)
    requests = feeds_from(graph, args.input, args.allow_nonfinite)
    if setup is not None:
        summary, results, trace = run_partitioned(graph, requests, args, setup)
        if trace is not None:
            outputs.put("--trace", trace)
    else:
        summary, results = run_single(graph, requests, args)
    stacked = _stack(results)
    if args.output:
        outputs.put("-o", array_bytes(args.output, stacked))
    outputs.commit()
    summary["outputs"] = {name: {"shape": list(a.shape), "dtype": a.dtype.name} for name, a in stacked.items()}
    first = next(iter(stacked.values()))
    if len(stacked) == 1 and is_class_scores(first):
        summary["top1"] = [int(i) for i in first.argmax(axis=1)]
    if args.json:
        print(json.dumps(summary))
        return 0
    for name, array in stacked.items():
        print(f"{name}: {list(array.shape)} {array.dtype}")
    if "top1" in summary and len(summary["top1"]) <= 16:
        print(f"top-1 class: {summary['top1']}")
    for key in ("median_s", "p90_s"):
        if summary.get(key) is not None:
            print(f"{key[:-2]}: {summary[key] * 1e3:.2f} ms")
    for key in ("seconds", "throughput_rps", "rebalances", "retries", "failed_requests", "failed_devices", "faults"):
        if summary.get(key) not in (None, []):
            print(f"{key}: {summary[key]}")
    if "model_versions" in summary:
        versions = summary["model_versions"]
        switch = versions.index(1) if 1 in versions else None
        print(f"live update: {versions.count(0)} requests on the old weights, {versions.count(1)} on --update's"
              + (f" (from request {switch})" if switch is not None else " (the load finished after the last request started)"))
    if "placement" in summary:
        devices = sorted(set(summary["placement"].values()))
        counts = {d: sum(1 for v in summary["placement"].values() if v == d) for d in devices}
        print("placement: " + ", ".join(f"{d} {n} ops" for d, n in counts.items()))
    for path in outputs.paths:
        print(f"wrote {path}")
    return 0


def is_class_scores(array: np.ndarray) -> bool:
    """Whether a model's output reads as a batch of class scores (float [batch, classes], classes > 1),
    the one case where hetero run reports a top-1 class; otherwise it reports only the shape."""
    return array.ndim == 2 and array.shape[1] > 1 and np.issubdtype(array.dtype, np.floating)


def run_single(graph: Graph, requests: list[dict[str, np.ndarray]], args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    from hetero.backends import open_device
    from hetero.exec.executor import run_on_device, time_on_device

    name = args.device or "reference"
    options = {"threads": args.threads} if args.threads and name == "cpu" else {}
    if args.repeat and len(requests) != 1:
        raise InputError(f"{args.input}: --repeat times one input, the file holds {len(requests)} samples; pass a single sample")
    device = open_device(name, **options)
    summary: dict[str, Any] = {"device": name, "precision": args.precision}
    if args.repeat:
        outputs, seconds = time_on_device(graph, device, requests[0], repeat=args.repeat)
        summary.update(repeat=args.repeat, median_s=float(np.median(seconds)), p90_s=float(np.percentile(seconds, 90)), min_s=float(np.min(seconds)))
        return summary, [outputs]
    start = time.perf_counter()
    results = [run_on_device(graph, device, feeds) for feeds in requests]
    summary["seconds"] = time.perf_counter() - start
    return summary, results


def plan_file(placement: str) -> Any:
    """--placement checked before any work: random:SEED parsed, a plan file read (None: none)."""
    from hetero.schedule import read_plan

    if placement == "auto":
        return None
    if placement.startswith("random:"):
        try:
            int(placement.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--placement {placement}: write random:SEED with a whole-number seed") from None
        return None
    return read_plan(placement)


def run_partitioned(graph: Graph, requests: list[dict[str, np.ndarray]], args: argparse.Namespace,
                    setup: Partitioned) -> tuple[dict[str, Any], list[dict[str, np.ndarray]], bytes | None]:
    """Serve the requests on several devices; the summary, outputs per request and the trace's bytes."""
    names = setup.names
    count = args.requests or len(requests)
    if count > MAX_REQUESTS:
        raise InputError(f"--requests {count}: a run serves at most {MAX_REQUESTS:,} requests (it keeps every output "
                         "in memory); run several times instead")
    for fault in setup.faults:
        if fault.request >= count:
            raise InputError(f"--fault {fault.device}@{fault.request}: the run has {count} requests, numbered 0 to "
                             f"{count - 1}; pick one of those (or raise --requests)")
    if setup.plan is not None:
        check_plan_fits(setup.placement, setup.plan, graph, names)
    cluster = open_cluster(getattr(args, "cluster", None), names)
    try:
        return _serve_partitioned(graph, requests, args, setup, count, cluster)
    finally:
        if cluster is not None:
            cluster.close()


def open_cluster(address: str | None, names: Sequence[str]) -> Any:
    """The Cluster for --cluster (None without one); HOST/DEVICE names without it are refused."""
    remote = [n for n in names if "/" in n]
    if address is None:
        if remote:
            raise InputError(f"--devices names {remote[0]}, a device on another host: add --cluster tcp://SCHEDULER:8786")
        return None
    from hetero.remote import Cluster

    return Cluster(address)


def _serve_partitioned(graph: Graph, requests: list[dict[str, np.ndarray]], args: argparse.Namespace, setup: Partitioned,
                       count: int, cluster: Any) -> tuple[dict[str, Any], list[dict[str, np.ndarray]], bytes | None]:
    from hetero.policy import PolicyContext
    from hetero.exec.runtime import Runtime
    from hetero.remote import open_devices

    names = setup.names
    options = {"cpu": {"threads": args.threads}} if args.threads else {}
    devices = open_devices(names, cluster, **options)
    for device in devices.values():
        learn = getattr(device, "learn", None)
        if learn is not None:  # a remote device: its capabilities in one call
            learn(list(graph.ops_in_order()))
    cost, memory = planning_cost(graph, devices, args)
    algorithm = args.algorithm or "auto"
    context = PolicyContext(graph, cost, algorithm=algorithm, memory_bytes=memory)
    initial = initial_plan(graph, cost, devices, setup.placement, setup.plan)
    runtime = Runtime(graph, devices, setup.policy, context, initial=initial)
    work = [requests[i % len(requests)] for i in range(count)]
    faults: dict[int, list[str]] = {}
    for fault in setup.faults:
        faults.setdefault(fault.request, []).append(fault.device)
    report = runtime.serve(work, inflight=args.inflight or 1, faults=faults, update=live_update(graph, args, count))
    for fault in setup.faults:
        if fault.device not in report.failed_devices:
            log.warning("--fault %s@%d: no op ran on %s after request %d, so the fault was never met",
                        fault.device, fault.request, fault.device, fault.request)
    trace = None
    if args.trace:
        from hetero.trace import chrome_trace

        trace = json.dumps(chrome_trace(report.events, names, label=f"hetero run {args.model}")).encode()
    if report.completed == 0:
        raise DeviceError(f"no request completed (devices failed: {', '.join(report.failed_devices) or 'none'}); nothing was written")
    if report.failed_requests and args.output:
        raise DeviceError(f"{report.failed_requests} of {count} requests failed ({', '.join(report.failed_devices)} failed) "
                          f"under policy {setup.policy_name}; nothing was written to {args.output} "
                          "(--policy failover retries them on the devices left)")
    summary = {"devices": names, "precision": args.precision, "policy": setup.policy_name, **report.summary()}
    if setup.faults:
        summary["faults"] = [f"{f.device}@{f.request}" for f in setup.faults]
    outputs = [o for o in report.outputs if o is not None]
    return summary, outputs, trace


def live_update(graph: Graph, args: argparse.Namespace, count: int) -> Any:
    """--update NEW [--update-after K]: the LiveUpdate to serve with (NEW at the run's precision), or None."""
    from hetero.exec.live_update import LiveUpdate, check_same_structure
    from hetero.quant.precision import load_with_precision

    if args.update is None:
        if args.update_after is not None:
            raise InputError("--update-after K needs --update NEW (the model to switch to)")
        return None
    after = count // 2 if args.update_after is None else args.update_after
    if not 0 <= after < count:
        raise InputError(f"--update-after {after}: the run has {count} requests, numbered 0 to {count - 1}; pick one of those")
    new, _ = load_with_precision(args.update, args.precision)
    check_same_structure(graph, new, args.model, f"--update {args.update}")
    return LiveUpdate(new, after, f"--update {args.update}")


def check_plan_fits(path: str, plan: Any, graph: Graph, names: Sequence[str]) -> None:
    """A --placement plan file names this graph's nodes and only --devices devices."""
    nodes = [op.name for op in graph.ops_in_order()]
    missing = [n for n in nodes if n not in plan.placement]
    extra = [n for n in plan.placement if n not in set(nodes)]
    fix = "make one for this run with hetero schedule ... -o PLAN.json"
    if missing or extra:
        what = f"does not place node {missing[0]}" if missing else f"places node {extra[0]}, which this model lacks"
        raise InputError(f"{path}: the plan {what}; it is for another model or precision: {fix}")
    foreign = sorted(set(plan.placement.values()) - set(names))
    if foreign:
        raise InputError(f"{path}: the plan puts ops on {foreign[0]}, which is not in --devices {','.join(names)}; "
                         f"add it to --devices or {fix}")


def planning_cost(graph: Graph, devices: dict, args: argparse.Namespace):
    """The cost model a partitioned run plans with: the given profile, else a quick measurement."""
    from hetero.cost.model import ProfileCostModel
    from hetero.cost.model import cost_model_for
    from hetero.cost.profiler import quick_profile

    if args.profile:
        from hetero.cost.profile import check_device, load_profile

        profile = load_profile(args.profile)
        for name, device in devices.items():
            if name in profile.devices:
                check_device(profile, args.profile, name, device.info)
        return cost_model_for(graph, args.profile, list(devices), args.precision)
    profile = quick_profile(graph, list(devices.values()), args.model, args.precision)
    memory = {n: d.info.memory_bytes for n, d in devices.items() if d.info.memory_bytes}
    can_run = lambda op, name: devices[name].supports(op)  # noqa: E731
    return ProfileCostModel(graph, profile, list(devices), precision=args.precision, can_run=can_run), memory


def initial_plan(graph: Graph, cost: Any, devices: dict, placement: str, plan: Any = None):
    """None for auto (the policy plans), else the Schedule of a plan file or a random placement."""
    from hetero.schedule import read_plan
    from hetero.schedulers import fixed_schedule

    if placement == "auto":
        return None
    if placement.startswith("random:"):
        try:
            seed = int(placement.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--placement {placement}: write random:SEED with a whole-number seed") from None
        return fixed_schedule(graph, cost, random_placement(graph, devices, seed), algorithm=placement)
    plan = plan if plan is not None else read_plan(placement)
    try:
        return fixed_schedule(graph, cost, dict(plan.placement), algorithm=f"plan {placement}")
    except InputError as err:
        raise InputError(f"{placement}: {err}; the plan is for another model, precision or devices: "
                         "make one for this run with hetero schedule ... -o PLAN.json") from None


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
