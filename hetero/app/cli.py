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
from typing import NoReturn, Sequence

from hetero import __version__
from hetero.app.options import add_input_shape_option, device_list, nonnegative_int, percent, positive_float, positive_int
from hetero.app.profile_cli import add_profile_parser
from hetero.app.run import add_run_parser
from hetero.app.train_cli import add_train_parsers
from hetero.app.validate_cli import add_validate_parser
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

    add_profile_parser(sub)

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
