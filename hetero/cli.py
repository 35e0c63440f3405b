"""The hetero command line: devices, inspect, run, demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Sequence

import numpy as np

from hetero import __version__
from hetero.errors import HeteroError, InputError

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


def cmd_devices(args: argparse.Namespace) -> int:
    from hetero.devices import discover

    devices, absent = discover()
    if args.json:
        print(json.dumps({"devices": [d.to_dict() for d in devices], "absent": [vars(a) for a in absent]}, indent=2))
        return 0
    print(f"{'device':<11} {'kind':<10} {'units':>5} {'memory':>10}  description")
    for d in devices:
        print(f"{d.name:<11} {d.kind:<10} {d.compute_units:>5} {_human_bytes(d.memory_bytes):>10}  {d.description}")
    for a in absent:
        print(f"{a.kind + ':':<11} absent: {a.reason}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from hetero.model_source import load_graph

    graph = load_graph(args.model)
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


def _feeds(graph, path: str) -> dict[str, np.ndarray]:
    from hetero.io import read_arrays

    loaded = read_arrays(path)
    if isinstance(loaded, dict):
        return loaded
    if len(graph.inputs) != 1:
        raise InputError(f"{path}: model {graph.name} has {len(graph.inputs)} inputs; pass an .npz keyed by input name")
    return {graph.inputs[0].name: loaded}


def cmd_run(args: argparse.Namespace) -> int:
    from hetero.backends import open_device
    from hetero.executor import run_on_device, time_on_device
    from hetero.io import write_arrays
    from hetero.pipeline import load_for_precision

    if args.repeat < 0:
        raise InputError(f"--repeat must be >= 0, got {args.repeat}")
    options = {"threads": args.threads} if args.threads and args.device == "cpu" else {}
    device = open_device(args.device, **options)
    graph = load_for_precision(args.model, args.precision)
    feeds = _feeds(graph, args.input)
    summary: dict[str, object] = {"device": args.device, "precision": args.precision}
    if args.repeat:
        outputs, seconds = time_on_device(graph, device, feeds, repeat=args.repeat)
        summary.update(
            repeat=args.repeat,
            median_s=float(np.median(seconds)),
            p90_s=float(np.percentile(seconds, 90)),
            min_s=float(np.min(seconds)),
        )
    else:
        start = time.perf_counter()
        outputs = run_on_device(graph, device, feeds)
        summary["seconds"] = time.perf_counter() - start
    if args.output:
        write_arrays(args.output, outputs)
    summary["outputs"] = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in outputs.items()}
    first = next(iter(outputs.values()))
    if first.ndim == 2:
        summary["top1"] = [int(i) for i in first.argmax(axis=1)]
    if args.json:
        print(json.dumps(summary))
        return 0
    for name, info in summary["outputs"].items():  # type: ignore[union-attr]
        print(f"{name}: {info['shape']} {info['dtype']}")
    if "top1" in summary:
        print(f"top-1 class: {summary['top1']}")
    if args.repeat:
        print(f"{args.precision} on {args.device}: median {summary['median_s'] * 1e3:.2f} ms, p90 {summary['p90_s'] * 1e3:.2f} ms over {args.repeat} runs")
    else:
        print(f"{args.precision} on {args.device} in {summary['seconds'] * 1e3:.1f} ms")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hetero.backends.reference import run_graph
    from hetero.datasets import load_digits_28
    from hetero.model_source import load_graph

    images, labels = load_digits_28("test")
    print(f"seed model: builtin:seed-cnn; held-out digits: {len(labels)} images 28x28")
    graph = load_graph("builtin:seed-cnn", input_shapes={"input": images.shape})
    totals = graph.totals()
    print(f"imported {totals['ops']} ops, {totals['flops'] / len(labels) / 1e6:.2f} MFLOPs per image")
    start = time.perf_counter()
    logits = run_graph(graph, {"input": images})["logits"]
    seconds = time.perf_counter() - start
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    print(f"fp32 reference accuracy: {accuracy * 100:.2f}% ({int(round(accuracy * len(labels)))}/{len(labels)}) in {seconds:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hetero", description="Heterogeneous compute scheduling simulator and runtime.")
    parser.add_argument("--version", action="version", version=f"hetero {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what hetero does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("devices", help="list the devices present and why absent backends are absent")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("inspect", help="ops, shapes, FLOPs and parameter bytes of a model")
    p.add_argument("model", help="an .onnx path or builtin:NAME (seed-cnn, resnet18, mobilenetv2, ...)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="run a model on an input array and save its outputs")
    p.add_argument("model", help="an .onnx path or builtin:NAME")
    p.add_argument("--input", required=True, help="input array: .npy (single input) or .npz (by input name)")
    p.add_argument("-o", "--output", help="where to write the outputs (.npy, or .npz for several)")
    p.add_argument("--device", default="reference", help="reference, cpu, opencl:N or cuda:N (default: reference)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="fp32, or int8 (quantizes an fp32 model first)")
    p.add_argument("--repeat", type=int, default=0, help="time N runs after warm-up, host input to host output")
    p.add_argument("--threads", type=int, default=0, help="threads for the cpu device (default: all cores)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (with --repeat: median_s, p90_s)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the end-to-end job on the shipped seed model")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: a HeteroError becomes one line on stderr and exit status 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except HeteroError as err:
        print(f"hetero: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hetero: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
