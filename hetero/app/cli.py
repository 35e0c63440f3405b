"""The hetero command line: devices, inspect, quantize, run, profile, schedule, simulate, validate, demo.

Every failure ends in one line on stderr, ``hetero: error: ...``, and exit status 1: hetero's own
errors (HeteroError), the parser's (an unknown option, a bad choice or number, a missing
argument), and, as a last resort, an unexpected exception (its traceback with ``-v``).
Ctrl-C ends with ``hetero: error: interrupted`` and status 130. A command writes all its output
files or none (hetero.io.OutputSet).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from typing import Any, NoReturn, Sequence

from hetero import __version__
from hetero.app.options import add_input_shape_option, device_list, nonnegative_int, open_fraction, percent, positive_float, positive_int
from hetero.app.run import add_run_parser, add_validate_parser
from hetero.app.train_cli import add_train_parsers
from hetero.app.sweep import add_sweep_parser
from hetero.app.worker_cli import add_worker_parser
from hetero.errors import HeteroError, InputError, UsageError
from hetero.io import OutputSet, json_safe

log = logging.getLogger("hetero")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _human_flops(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} T"


def cmd_ops(args: argparse.Namespace) -> int:
    from hetero.backends.registry import kernel_coverage

    coverage = kernel_coverage()
    kinds = list(next(iter(coverage.values())))
    if args.json:
        print(json.dumps(coverage, indent=2))
        return 0
    if args.markdown:
        counts = {k: sum(row[k] for row in coverage.values()) for k in kinds}
        print(f"| operator | {' | '.join(kinds)} |")
        print(f"|---|{'|'.join(':---:' for _ in kinds)}|")
        for op, row in coverage.items():
            print(f"| {op} | {' | '.join('yes' if row[k] else '' for k in kinds)} |")
        print(f"| **{len(coverage)} operators** | {' | '.join(str(counts[k]) for k in kinds)} |")
        return 0
    print(f"{'operator':<28} " + " ".join(f"{k:>9}" for k in kinds))
    for op, row in coverage.items():
        print(f"{op:<28} " + " ".join(f"{'yes' if row[k] else '-':>9}" for k in kinds))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from hetero.backends.discovery import discover

    devices, absent = discover()
    if args.cluster:
        from hetero.remote import Cluster

        with Cluster(args.cluster) as cluster:
            devices = devices + cluster.devices()
    if args.json:
        print(json.dumps({"devices": [d.to_dict() for d in devices], "absent": [vars(a) for a in absent]}, indent=2))
        return 0
    print(f"{'device':<11} {'kind':<10} {'units':>5} {'memory':>10}  description")
    for d in devices:
        print(f"{d.name:<11} {d.kind:<10} {d.compute_units:>5} {_human_bytes(d.memory_bytes):>10}  {d.description}")
        if d.driver:  # which OpenCL driver this is, so two PoCLs can be told apart
            print(f"{'':<39}  driver: {d.driver}")
    for a in absent:
        print(f"{a.kind + ':':<11} absent: {a.reason}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from hetero.ir.source import load_graph

    graph = load_graph(args.model, args.input_shape)
    rows = []
    for op in graph.ops_in_order():
        rows.append(
            {
                "name": op.name,
                "type": op.type,
                "inputs": [list(s.shape) for s in op.input_specs if s is not None and s.name not in op.weights],
                "outputs": [list(s.shape) for s in op.output_specs],
                "dtype": op.output_specs[0].dtype,
                "flops": op.flops,
                "param_bytes": op.param_bytes,
                "bytes_read": op.bytes_read,
                "bytes_written": op.bytes_written,
            }
        )
    totals = graph.totals()
    if args.json:
        print(json.dumps({
            "model": args.model,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.inputs],
            "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in graph.outputs],
            "nodes": rows,
            "totals": totals,
        }, indent=2))
        return 0
    width = max([len(r["name"]) for r in rows] + [4])
    print(f"{'node':<{width}}  {'op':<18} {'output shape':<20} {'FLOPs':>12} {'params':>11}")
    for r in rows:
        shape = "x".join(map(str, r["outputs"][0]))
        print(f"{r['name']:<{width}}  {r['type']:<18} {shape:<20} {_human_flops(r['flops']):>12} {_human_bytes(r['param_bytes']):>11}")
    print(f"total: {totals['ops']} ops, {_human_flops(totals['flops'])}FLOPs, {_human_bytes(totals['param_bytes'])} of parameters")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from hetero.io import read_arrays, requests_from
    from hetero.ir.source import load_onnx
    from hetero.ir.onnx_import import import_onnx
    from hetero.quant.precision import has_qdq
    from hetero.quant.calibrate import calibration_for
    from hetero.quant.qdq import quantize_model

    outputs = OutputSet({"-o": args.output})
    model = load_onnx(args.model)
    if has_qdq(model):
        raise InputError(f"{args.model} is already quantized (it has QuantizeLinear/DequantizeLinear nodes); "
                         "run it with --precision int8")
    graph = import_onnx(model, label=args.model)
    if args.calibration:
        # dtypes and shapes checked as hetero run checks inputs; NaN/Inf are the quantizer's to refuse
        calibration = requests_from(graph, read_arrays(args.calibration), args.calibration, allow_nonfinite=True,
                                    extra_axis=True)
    else:
        calibration = calibration_for(args.model, graph)
    quantized = quantize_model(graph, calibration, method=args.method, percentile=args.percentile, activation_dtype=args.activation_type,
                               source=args.calibration or "calibration data")
    outputs.put("-o", quantized.SerializeToString())
    outputs.commit()
    counts: dict[str, int] = {}
    for node in quantized.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    print(f"wrote {args.output}: QDQ model, {counts.get('QuantizeLinear', 0)} QuantizeLinear, {counts.get('DequantizeLinear', 0)} DequantizeLinear, {args.activation_type} activations, int8 per-channel weights ({args.method} calibration)")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from hetero.schedule import plan_bytes
    from hetero.app.summary import json_summary, schedule_summary, summary_lines
    from hetero.schedulers import schedule

    if args.problem:
        given = [flag for flag, value in (("MODEL", args.model), ("--profile", args.profile), ("--devices", args.devices),
                                          ("--precision", args.precision)) if value is not None]
        if given:
            raise InputError(f"give either --problem PROBLEM.json or MODEL --profile PROFILE.json --devices ..., not both "
                             f"({given[0]} was given with --problem)")
    elif not args.model or args.devices is None:
        raise InputError("hetero schedule needs MODEL --profile PROFILE.json --devices a,b (or --problem PROBLEM.json)")
    names = device_list(args.devices) if args.devices is not None else []
    if args.gantt:
        from hetero.app.plots import image_format

        image_format(args.gantt, "--gantt")
    outputs = OutputSet({"-o": args.output, "--trace": args.trace, "--gantt": args.gantt})
    if args.problem:
        from hetero.problem import load_problem

        problem = load_problem(args.problem)
        graph, cost, memory, energy = problem.graph, problem.cost, problem.memory_bytes, problem.energy
    else:
        from hetero.cost.catalog import energy_model_for
        from hetero.cost.model import cost_model_for
        from hetero.quant.precision import load_with_precision
        from hetero.cost.profile import load_profile

        precision = args.precision or (load_profile(args.profile).precision if args.profile else None)
        graph, precision = load_with_precision(args.model, precision, getattr(args, "input_shape", None))
        cost, memory = cost_model_for(graph, args.profile, names, precision)
        energy = energy_model_for(names, precision, load_profile(args.profile) if args.profile else None)
    plan = schedule(graph, cost, algorithm=args.algorithm, objective=args.objective, memory_bytes=memory,
                    energy=energy, energy_budget_J=args.energy_budget)
    if args.output:
        outputs.put("-o", plan_bytes(plan))
    if args.trace:
        from hetero.trace import chrome_trace, schedule_events

        trace = chrome_trace(schedule_events(plan), plan.devices, label=f"hetero schedule ({plan.algorithm})")
        outputs.put("--trace", json.dumps(trace).encode())
    if args.gantt:
        from hetero.app.plots import gantt_image

        outputs.put("--gantt", gantt_image(args.gantt, plan))
    outputs.commit()
    if args.json:
        print(json.dumps(json_safe(json_summary(plan))))
        return 0
    for line in summary_lines(schedule_summary(plan, graph, cost, memory, energy)):
        print(line)
    for path in outputs.paths:
        print(f"wrote {path}")
    return 0


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
    if args.cluster:  # devices on other hosts: their request crossings, measured around the actor calls (no
        from hetero.remote.calibrate import with_remote_calibration  # progress bar redrawing meanwhile)

        profile = with_remote_calibration(profile, devices)
    save_profile(profile, args.output)
    counts = ", ".join(
        f"{name}: {len(d.ops)} op signatures" + (f" ({sum(1 for s in d.ops.values() if s.features.get('synthetic'))} synthetic)" if args.sweep else "")
        for name, d in profile.devices.items()
    )
    print(f"wrote {args.output} ({counts}; {len(profile.links)} links)")
    return 0


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
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from hetero.app.sim_outputs import run_scenario_file, summary_lines

    result = run_scenario_file(args.scenario, output=args.output, trace=args.trace, plot=args.plot, seed=args.seed,
                               progress=True, max_events=args.max_events, objective=args.objective)
    for line in summary_lines(result):
        print(line)
    for path in (args.output, args.trace, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hetero.app.demo import run_demo
    from hetero.io import staged_folder

    target = Path(args.output)
    with staged_folder(target, "-o") as staging:  # all the demo's files, or none of them
        report = run_demo(staging, say=lambda text: print(text.replace(str(staging), str(target))))
    print(f"\nreport: {(target / report.relative_to(staging)).resolve()}")
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError (one ``hetero: error:`` line, status 1), not exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="hetero", description="Heterogeneous compute scheduling simulator and runtime.")
    parser.add_argument("--version", action="version", version=f"hetero {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what hetero does (and show the traceback of an unexpected error)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("devices", help="list the devices present and why absent backends are absent")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--cluster", metavar="tcp://SCHEDULER:8786", help="also list the devices hetero workers serve in this Dask cluster, as HOST/DEVICE")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("ops", help="every supported ONNX operator and which device kinds have a kernel for it")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (the README's)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("inspect", help="ops, shapes, FLOPs and parameter bytes of a model")
    p.add_argument("model", help="an .onnx path or builtin:NAME (seed-cnn, resnet18, mobilenetv2, ...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_input_shape_option(p)
    p.set_defaults(func=cmd_inspect)

    add_run_parser(sub)
    add_validate_parser(sub)

    p = sub.add_parser("quantize", help="post-training static int8 quantization to a QDQ ONNX model")
    p.add_argument("model", help="an fp32 .onnx path or builtin:NAME")
    p.add_argument("--calibration", help="calibration inputs: .npy stacked along a first axis, or .npz by input name")
    p.add_argument("-o", "--output", required=True, help="where to write the QDQ model (.onnx)")
    p.add_argument("--method", default="minmax", choices=["minmax", "percentile"])
    p.add_argument("--percentile", type=percent, default=99.99, help="with --method percentile, in (0, 100]")
    p.add_argument("--activation-type", default="uint8", choices=["uint8", "int8"])
    p.set_defaults(func=cmd_quantize)

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

    p = sub.add_parser("schedule", help="partition a model (or a problem file's task graph) across devices")
    p.add_argument("model", nargs="?", help="an .onnx path or builtin:NAME (with --profile and --devices)")
    p.add_argument("--profile", help="measured profile JSON (hetero profile)")
    p.add_argument("--devices", help="comma-separated devices: measured (in the profile) or catalog spec names")
    p.add_argument("--precision", default=None, choices=["fp32", "int8"], help="default: the profile's precision, else the model's own")
    p.add_argument("--problem", help="a problem file: devices, links, tasks and edges as JSON")
    p.add_argument("--objective", default="latency", choices=["latency", "throughput", "energy"],
                   help="energy: the least energy per request (device power and link energy; auto, dp or single)")
    p.add_argument("--energy-budget", type=positive_float, default=None, metavar="J",
                   help="with --objective latency: the least latency within J joules per request")
    p.add_argument("--algorithm", default="auto", help="auto, single, greedy, dp, heft, peft, ilp or pipeline")
    p.add_argument("-o", "--output", help="write the plan JSON")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace JSON")
    p.add_argument("--gantt", help="write a Gantt chart: .png, .svg or .pdf")
    p.add_argument("--json", action="store_true", help="print makespan, placement, slots, algorithm, seconds as JSON")
    add_input_shape_option(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("simulate", help="play out a scenario (devices, links, workload, events, policy) in simpy")
    p.add_argument("scenario", help="a scenario YAML file (see examples/scenarios/)")
    p.add_argument("-o", "--output", help="write RESULT.json")
    p.add_argument("--trace", help="write a Chrome/Perfetto trace")
    p.add_argument("--plot", help="write a plot (.png, .svg or .pdf): latency over time with events, utilisation per device")
    p.add_argument("--seed", type=nonnegative_int, help="override the scenario's seed (a whole number >= 0)")
    p.add_argument("--objective", choices=["latency", "throughput", "energy"], default=None,
                   help="override the scenario's scheduler objective")
    p.add_argument("--max-events", type=positive_int, default=None, metavar="N",
                   help="refuse a scenario estimated to need more than N op executions (default: 20,000,000)")
    p.set_defaults(func=cmd_simulate)

    add_sweep_parser(sub)
    add_worker_parser(sub)

    add_train_parsers(sub)

    p = sub.add_parser("demo", help="the end-to-end job on the shipped seed model")
    p.add_argument("-o", "--output", default="out/demo", help="folder for the report, plots, traces and profile (default: out/demo)")
    p.set_defaults(func=cmd_demo)
    return parser


def _say_error(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    one_line = re.sub(r"\s*\n\s*", " ", message).strip()
    print(f"hetero: error: {one_line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: every failure becomes one ``hetero: error:`` line on stderr and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return int(args.func(args) or 0)
    except HeteroError as err:
        _say_error(str(err))
        return 1
    except KeyboardInterrupt:
        _say_error("interrupted; no output file was written")
        return 130
    except BrokenPipeError:  # stdout closed early (| head); nothing more to say
        sys.stderr.close()
        return 0
    except MemoryError:
        _say_error("out of memory; try a smaller model, input or scenario")
        return 1
    except Exception as err:  # a bug in hetero: still one line; -v shows where
        if verbose:
            log.exception("unexpected error")
        _say_error(f"unexpected {type(err).__name__}: {err} (a bug in hetero; rerun with -v for the traceback and report it)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
