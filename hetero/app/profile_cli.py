"""``hetero profile``: measure a model's ops on devices, profile devices' kernels (--kernels), show,
evaluate or re-calibrate a profile (the command line side of hetero.cost.profiler and
hetero.cost.kernel_profile)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hetero.app.options import add_input_shape_option, device_list, nonnegative_int, open_fraction, positive_float
from hetero.errors import InputError
from hetero.io import OutputSet, json_safe


def add_profile_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure every op on every device, show or evaluate a profile")
    p.add_argument("model", nargs="?", help="an .onnx path or builtin:NAME")
    p.add_argument("-o", "--output", help="where to write the profile JSON")
    p.add_argument("--precision", default=None, choices=["fp32", "int8"], help="default: the model's own (int8 if it has QDQ or QLinear nodes, else fp32)")
    p.add_argument("--devices", help="comma-separated devices (default: every present device but reference)")
    p.add_argument("--cluster", metavar="tcp://SCHEDULER:8786", help="a Dask cluster whose hetero workers serve the HOST/DEVICE "
                   "devices in --devices: their ops and the link to each host are measured")
    p.add_argument("--reuse", action="store_true", help="keep entries of the existing -o profile measured on the same device")
    p.add_argument("--target-spread", type=positive_float, default=0.05, help="stop timing an op when (p90-p10)/median is at most this (> 0)")
    p.add_argument("--budget-s", type=positive_float, default=0.5, help="time budget per op and device, seconds (> 0)")
    p.add_argument("--max-transfer-mib", type=positive_float, default=64, help="largest transfer size calibrated, MiB (> 0)")
    p.add_argument("--sweep", type=nonnegative_int, default=0, metavar="N", help="also time N synthetic variants per kernel class and device (for the regressions; 0: none)")
    p.add_argument("--kernels", action="store_true", help="a model-independent kernel profile of each device (no MODEL): "
                   "sampled kernel configurations, predictors per kernel class refitted on load")
    p.add_argument("--budget-min", type=positive_float, default=3.0, help="with --kernels: sampling minutes per device (> 0)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="with --kernels: the sampling seed")
    p.add_argument("--show", metavar="PROFILE", help="print a profile as a table, slowest ops first")
    p.add_argument("--update-calibration", metavar="PROFILE", help="re-measure only PROFILE's hand-offs, wake-up and "
                   "contention on --devices (probe ops from MODEL, default the profile's) and rewrite it")
    p.add_argument("--evaluate", metavar="PROFILE", help="report the cost model's prediction error")
    p.add_argument("--holdout", type=open_fraction, default=0.3, help="with --evaluate: share of signatures held out, in (0, 1)")
    p.add_argument("--against", metavar="OTHER", help="with --evaluate: predict OTHER's entries from PROFILE")
    p.add_argument("--json", action="store_true", help="with --evaluate: print JSON")
    add_input_shape_option(p)
    p.set_defaults(func=cmd_profile)


def _device_list(text: str | None) -> list[str]:
    """--devices as names; absent: every present device but reference."""
    from hetero.backends.discovery import discover

    if text is not None:
        return device_list(text)
    return [d.name for d in discover()[0] if d.kind != "reference"]


def cmd_profile(args: argparse.Namespace) -> int:
    from hetero.cost.profile import load_profile

    modes = [flag for flag, value in (("--show", args.show), ("--evaluate", args.evaluate)) if value]
    if len(modes) > 1:
        raise InputError("give one of --show PROFILE or --evaluate PROFILE")
    if modes and (args.model or args.output):
        raise InputError(f"{modes[0]} reads a profile; drop MODEL and -o (or drop {modes[0]} to measure one)")
    if args.against and not args.evaluate:
        raise InputError("--against goes with --evaluate PROFILE")
    if getattr(args, "update_calibration", None):  # issue 14: hand-offs, wake-up, contention only
        from hetero.app.calibrate import update_profile_calibration

        if modes or args.output:
            raise InputError("--update-calibration rewrites its own PROFILE; drop -o, --show and --evaluate")
        remote = [name for name in _device_list(args.devices) if "/" in name]
        if remote or args.cluster:
            raise InputError(f"--update-calibration measures devices of this host only ({remote[0] if remote else '--cluster'} "
                             f"is not); for devices on other hosts re-run hetero profile MODEL --devices ... --cluster ...")
        updated = update_profile_calibration(args.update_calibration, _device_list(args.devices), args.model)
        print(f"updated {args.update_calibration}: hand-offs, wake-up and contention of {', '.join(_device_list(args.devices))}"
              f" ({sum(len(r) for r in updated.handoffs.values())} hand-offs)")
        return 0
    if args.show:
        return _profile_show(load_profile(args.show), args)
    if args.evaluate:
        return _profile_evaluate(args)
    if args.kernels:
        return _profile_kernels(args)
    if not args.model or not args.output:
        raise InputError("hetero profile needs MODEL and -o PROFILE.json (or --show / --evaluate PROFILE.json)")
    from pathlib import Path

    from hetero.quant.precision import load_with_precision
    from hetero.cost.profiler import TRANSFER_SIZES

    sizes = [n for n in TRANSFER_SIZES if n <= args.max_transfer_mib * 2**20]
    if not sizes:
        raise InputError(f"--max-transfer-mib {args.max_transfer_mib:g} is below the smallest transfer calibrated "
                         f"({min(TRANSFER_SIZES) / 2**20:.3g} MiB); give at least that")
    names = _device_list(args.devices)
    OutputSet({"-o": args.output})  # checks the path before the measurement starts
    previous = load_profile(args.output) if args.reuse and Path(args.output).exists() else None
    graph, args.precision = load_with_precision(args.model, args.precision, getattr(args, "input_shape", None))
    from hetero.app.run import open_cluster
    from hetero.remote import open_devices

    cluster = open_cluster(args.cluster, names)
    try:
        devices = list(open_devices(names, cluster).values())
        return _profile_measure(args, graph, devices, previous, sizes)
    finally:
        if cluster is not None:
            cluster.close()


def _profile_measure(args: argparse.Namespace, graph: Any, devices: list, previous: Any, sizes: list[int]) -> int:
    from rich.progress import Progress

    from hetero.cost.profile import save_profile
    from hetero.cost.profiler import Budget, profile_graph
    from hetero.exec.dispatch import measure_dispatch

    budget = Budget(target_spread=args.target_spread, seconds_per_op=args.budget_s)
    steps = len({op.signature() for op in graph.ops_in_order()}) * len(devices) + 1
    with Progress(transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("profiling", total=steps)

        def advance(what: str) -> None:
            bar.update(task, advance=1, description=what[:60])

        profile = profile_graph(graph, devices, args.model, args.precision, budget, previous, sizes, advance, sweep=args.sweep,
                                dispatch_s=measure_dispatch(devices), handoffs=True)
    profile = _with_model_dispatch(profile, graph, devices)
    if args.cluster:  # devices on other hosts: their request crossings, measured around the actor calls (no
        from hetero.remote.calibrate import with_remote_calibration  # progress bar redrawing meanwhile)

        profile = with_remote_calibration(profile, devices, graph=graph)
    save_profile(profile, args.output)
    counts = ", ".join(
        f"{name}: {len(d.ops)} op signatures" + (f" ({sum(1 for s in d.ops.values() if s.features.get('synthetic'))} synthetic)" if args.sweep else "")
        for name, d in profile.devices.items()
    )
    print(f"wrote {args.output} ({counts}; {len(profile.links)} links)")
    return 0


def _with_model_dispatch(profile: Any, graph: Any, devices: list) -> Any:
    """``profile`` with ``runtime.dispatch_s`` raised to what the runtime adds per op serving the
    profiled model on a host device of this machine (``hetero.exec.dispatch.model_dispatch_s``),
    when that is more than the Identity chain's figure (kept as ``runtime.dispatch_identity_s``)."""
    import dataclasses

    from hetero.cost.protocol import HOST
    from hetero.exec.dispatch import HOST_KINDS, REMOTE_KIND_PREFIX, model_dispatch_s

    here = [d for d in devices if d.kind in HOST_KINDS and not d.kind.startswith(REMOTE_KIND_PREFIX)]
    entry = profile.devices.get(here[0].name) if here else None
    if entry is None:
        return profile
    device = here[0]
    ops = list(graph.ops_in_order())
    if any(op.signature() not in entry.ops for op in ops):
        return profile
    op_s = {op.name: entry.ops[op.signature()].expected_s for op in ops}
    up, down = profile.link(HOST, device.name), profile.link(device.name, HOST)
    outside = profile.handoff_s(HOST, device.name) + profile.handoff_s(device.name, HOST)
    outside += sum(up.seconds(spec.nbytes) for spec in graph.inputs) if up is not None else 0.0
    outside += sum(down.seconds(spec.nbytes) for spec in graph.outputs) if down is not None else 0.0
    from hetero.backends.registry import open_device

    import gc

    gc.collect()  # the profile's garbage, collected now rather than inside the timed requests
    fresh = open_device(device.name)  # the profiled device has run thousands of timed plan runs
    try:  # right after profiling the runtime ran 35-42 us an op slower for the first ~0.1 s (seed CNN:
        # 41, 42, 13, 7 us in four calls; a new process 6-11 us): the least of four calls
        found = [model_dispatch_s(graph, fresh, op_s, outside) for _ in range(4)]
        measured = None if any(m is None for m in found) else min(found)
    finally:
        fresh.close()
    identity = float(profile.runtime.get("dispatch_s", 0.0))
    if measured is None or measured <= identity:
        return profile
    return dataclasses.replace(profile, runtime={**profile.runtime, "dispatch_s": measured, "dispatch_identity_s": identity})


def _profile_kernels(args: argparse.Namespace) -> int:
    """hetero profile --kernels: a model-independent kernel profile of each device (hetero.cost.kernel_profile)."""
    from rich.progress import Progress

    from hetero.cost.kernel_profile import profile_kernels, save_kernel_profile
    from hetero.remote import open_devices

    if args.model or not args.output:
        raise InputError("hetero profile --kernels takes no MODEL and needs -o KERNELS.json")
    names = _device_list(args.devices)
    OutputSet({"-o": args.output})
    precisions = [args.precision] if args.precision else ["int8", "fp32"]
    devices = list(open_devices(names, None).values())
    with Progress(transient=True, console=_stderr_console()) as bar:
        tasks = {d.name: bar.add_task(d.name, total=1.0) for d in devices}

        def advance(device: str):
            return lambda done, what: bar.update(tasks[device], completed=done, description=what[:60])

        measured = [profile_kernels([d], precisions, args.budget_min * 60.0, args.seed, advance(d.name)) for d in devices]
    profile = measured[0]
    if len(measured) > 1:
        from dataclasses import replace

        profile = replace(profile, devices={k: v for m in measured for k, v in m.devices.items()},
                          links=tuple(link for m in measured for link in m.links))
    save_kernel_profile(profile, args.output)
    counts = ", ".join(f"{n}: {len(d.samples)} samples in {len(d.kinds)} kernel classes" for n, d in profile.devices.items())
    print(f"wrote {args.output} ({counts}; {args.budget_min:g} min per device)")
    return 0


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _profile_show(profile, args: argparse.Namespace) -> int:
    print(f"profile of {profile.model} ({profile.precision}), measured {profile.created} on {profile.host.get('hostname')}")
    for name, device in profile.devices.items():
        print(f"\n{name}: {device.identity.get('description')}")
        print(f"  {'op signature':<70} {'median':>10} {'p10':>10} {'p90':>10} {'n':>4}")
        for signature, stats in sorted(device.ops.items(), key=lambda kv: -kv[1].median_s):
            short = signature if len(signature) <= 70 else signature[:67] + "..."
            print(f"  {short:<70} {stats.median_s * 1e6:>8.1f}us {stats.p10_s * 1e6:>8.1f}us {stats.p90_s * 1e6:>8.1f}us {stats.count:>4}")
    if profile.links:
        print("\nlinks (latency + bytes / bandwidth):")
        for link in profile.links:
            print(f"  {link.src:>10} -> {link.dst:<10} via {link.via:<6} {link.latency_s * 1e6:8.1f} us  {link.bandwidth_Bps / 1e9:8.2f} GB/s")
    return 0


def _profile_evaluate(args: argparse.Namespace) -> int:
    from hetero.cost.evaluate import evaluate_against, evaluate_holdout
    from hetero.cost.profile import load_profile

    profile = load_profile(args.evaluate)
    if profile.kernels is not None:
        return _kernels_evaluate(args, profile.kernels)
    if args.against:
        report = evaluate_against(profile, load_profile(args.against))
        how = f"entries of {args.against} predicted from {args.evaluate}"
    else:
        report = evaluate_holdout(profile, fraction=args.holdout)
        how = f"{args.holdout:.0%} of op signatures held out"
    if args.json:
        summary = {k: v for k, v in report.items() if k != "devices"} | {
            "devices": {n: {k: v for k, v in d.items() if k != "rows"} for n, d in report["devices"].items()}
        }
        print(json.dumps(json_safe(summary)))
        return 0
    print(f"cost model evaluation: {how}")
    for name, device in [("all", report)] + list(report["devices"].items()):
        print(
            f"  {name:<10} n={device['n']:<4} within 10%: {device['within_10pct']:.0%}  within 20%: {device['within_20pct']:.0%}  "
            f"RMSPE: {device['rmspe']:.1%}  Spearman: {device['spearman']:.3f}  unpredictable: {device['unpredictable']}"
        )
    return 0


def _kernels_evaluate(args: argparse.Namespace, kernels: Any) -> int:
    from hetero.cost.evaluate import evaluate_kernels_against, evaluate_kernels_holdout
    from hetero.cost.profile import load_profile

    if args.against:
        from hetero.quant.precision import load_with_precision

        other = load_profile(args.against)
        if other.kernels is not None or not other.model:
            raise InputError(f"--against {args.against}: give a model profile (hetero profile MODEL), not a kernel profile")
        graph, _ = load_with_precision(other.model, other.precision, getattr(args, "input_shape", None))
        report = evaluate_kernels_against(kernels, other, graph)
        how = f"ops of {args.against} ({other.model}) predicted from kernel profile {args.evaluate}"
    else:
        report = evaluate_kernels_holdout(kernels, fraction=args.holdout)
        how = f"{args.holdout:.0%} of each kernel class's samples held out"
    if args.json:
        drop = lambda d: {k: v for k, v in d.items() if k != "rows"}  # noqa: E731
        print(json.dumps(json_safe(drop(report) | {"devices": {n: drop(d) for n, d in report["devices"].items()}})))
        return 0
    print(f"kernel model evaluation: {how}")
    line = "  {:<58} n={:<5} within 10%: {:>4.0%}  within 20%: {:>4.0%}  RMSPE: {:>6.1%}  Spearman: {:.3f}"
    for name, device in report["devices"].items():
        print(line.format(f"{name}: all", device["n"], device["within_10pct"], device["within_20pct"], device["rmspe"], device["spearman"]))
        for kernel_class, m in device["classes"].items():
            print(line.format(kernel_class[:58], m["n"], m["within_10pct"], m["within_20pct"], m["rmspe"], m["spearman"]))
        if "model_predicted_s" in device:
            print(f"  {name}: whole model predicted {device['model_predicted_s'] * 1e3:.3f} ms (kernels, layout conversions, "
                  f"plan dispatch); its ops measured {device['model_ops_measured_s'] * 1e3:.3f} ms; unpredictable ops: {device['unpredictable']}")
        if "speed" in device:
            m = device["speed"]
            print(f"  {name}: at the machine's speed when {args.against} was measured (speed probe {m['factor']:.2f}x the "
                  f"kernel profile's): within 10%: {m['within_10pct']:.0%}  within 20%: {m['within_20pct']:.0%}  RMSPE: "
                  f"{m['rmspe']:.1%}  Spearman: {m['spearman']:.3f}; whole model {m['model_predicted_s'] * 1e3:.3f} ms")
    return 0
