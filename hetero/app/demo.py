"""The end-to-end demo on the seed model: devices, int8, profile, schedule, simulate, run, compare.

Every step uses the same public functions as the CLI; the report (Markdown, with the Gantt
charts, the simulation plot, traces and tables) lands in one output folder, and says which
machine its figures were measured on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from hetero.backends import open_device
from hetero.backends.discovery import discover
from hetero.exec.executor import run_on_device
from hetero.io import write_atomic

MODEL = "builtin:seed-cnn"
CALIBRATION_IMAGES = 100


def _accuracy(graph, device, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Top-1 accuracy and the predicted classes, one image at a time."""
    name = graph.inputs[0].name
    output = graph.outputs[0].name
    predicted = np.array([int(run_on_device(graph, device, {name: images[i : i + 1]})[output].argmax()) for i in range(len(labels))])
    return float(np.mean(predicted == labels)), predicted


class _Collect(logging.Handler):
    """Keeps the warnings logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _parameter_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Initializer bytes per element type."""
    sizes: dict[str, int] = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        sizes[str(array.dtype)] = sizes.get(str(array.dtype), 0) + int(array.nbytes)
    return sizes


def qdq_summary(qdq: onnx.ModelProto) -> dict[str, Any]:
    """What a QDQ model quantizes: activation tensors (scale, zero point), int8 weights, int32 biases."""
    initializers = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    activations, weights, biases = [], [], []
    for node in qdq.graph.node:
        if node.op_type == "QuantizeLinear":
            scale, zero = initializers[node.input[1]], initializers[node.input[2]]
            activations.append({"tensor": node.input[0], "scale": float(scale), "zero_point": int(zero), "dtype": str(zero.dtype)})
        elif node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            values, scale = initializers[node.input[0]], np.atleast_1d(initializers[node.input[1]])
            record = {"tensor": node.output[0].removesuffix("_dequantized"), "dtype": str(values.dtype), "shape": list(values.shape),
                      "channels": int(scale.size), "scale_min": float(scale.min()), "scale_max": float(scale.max())}
            (weights if values.dtype == np.int8 else biases).append(record)
    return {"activations": activations, "weights": weights, "biases": biases}


def _quantization_lines(fp32_model: onnx.ModelProto, qdq: onnx.ModelProto, warnings: list[str], lowered_ops: list[str]) -> list[str]:
    summary = qdq_summary(qdq)
    acts, weights, biases = summary["activations"], summary["weights"], summary["biases"]
    fp32_params, int8_params = _parameter_bytes(fp32_model), _parameter_bytes(qdq)
    lines = [
        f"- calibration: min-max per tensor over the first {CALIBRATION_IMAGES} images of the digits training split "
        "(`hetero.ir.datasets.calibration_digits`); activations asymmetric uint8 per tensor, weights symmetric int8 per "
        "output channel, biases int32 at s_x * s_w",
        f"- quantized tensors: {len(acts)} activations (QuantizeLinear/DequantizeLinear pairs), {len(weights)} int8 weight "
        f"tensors ({sum(w['channels'] for w in weights)} channel scales), {len(biases)} int32 biases",
        f"- activation scales {min(a['scale'] for a in acts):.4g} .. {max(a['scale'] for a in acts):.4g}; "
        f"weight scales {min(w['scale_min'] for w in weights):.4g} .. {max(w['scale_max'] for w in weights):.4g}",
        f"- model size: fp32 ONNX {len(fp32_model.SerializeToString())} bytes (parameters {sum(fp32_params.values())} bytes), "
        f"int8 QDQ ONNX {len(qdq.SerializeToString())} bytes (parameters {sum(int8_params.values())} bytes: "
        + ", ".join(f"{dtype} {size}" for dtype, size in sorted(int8_params.items())) + ")",
        f"- lowered for the integer backends to: {', '.join(lowered_ops)}",
        "- quantizer warnings: " + ("none" if not warnings else "; ".join(warnings)),
        "",
        "| activation | scale | zero point |",
        "| --- | --- | --- |",
        *(f"| {a['tensor']} | {a['scale']:.6g} | {a['zero_point']} ({a['dtype']}) |" for a in acts),
        "",
        "| weight | shape | channel scales min | max |",
        "| --- | --- | --- | --- |",
        *(f"| {w['tensor']} | {'x'.join(map(str, w['shape']))} | {w['scale_min']:.4g} | {w['scale_max']:.4g} |" for w in weights),
    ]
    return lines


def machine_lines(profile) -> list[str]:
    """Where the figures were measured: the profile's host record, libraries and OpenCL platforms."""
    from hetero.cost.profiler import CPU_FLAGS

    host, libraries = profile.host, profile.libraries
    flags = set(host.get("cpu_flags", ()))
    known = "cpu_flags" in host
    lines = [
        f"- CPU: {host.get('cpu', '?')} ({host.get('cpu_id', 'family/model unknown')}), {host.get('cores', '?')} cores"
        + (", a virtual machine" if host.get("virtual_machine") else ""),
        "- flags: " + (", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS) if known else "unknown"),
        f"- {host.get('platform', '?')}; " + ", ".join(f"{name} {version}" for name, version in sorted(libraries.items())),
    ]
    for name, entry in profile.devices.items():
        if entry.identity.get("platform"):
            lines.append(f"- {name}: {entry.identity.get('description', '')}; platform {entry.identity['platform']}"
                         + (f"; driver {entry.identity['driver']}" if entry.identity.get("driver") else ""))
    return lines


def _profile_table(graph, profile) -> list[str]:
    """One row per node of the graph, with its op type and each device's medians."""
    devices = list(profile.devices)
    lines = ["| node | op type | " + " | ".join(f"{d} median (wall)" for d in devices) + " |",
             "| --- | --- | " + " | ".join("---" for _ in devices) + " |"]
    for op in graph.ops_in_order():
        cells = []
        for device in devices:
            stats = profile.devices[device].ops.get(op.signature())
            cells.append("not measured" if stats is None else f"{stats.median_s * 1e6:.1f} us ({stats.expected_s * 1e6:.1f} us)")
        lines.append(f"| {op.name} | {op.type} | " + " | ".join(cells) + " |")
    return lines


def cross_device_plan(graph, cost, names: list[str]):
    """The fastest plan that splits the graph's topological order into a head on one device and
    a tail on another (None with fewer than two devices that can run it)."""
    from hetero.errors import InputError
    from hetero.schedulers import fixed_schedule

    order = [op.name for op in graph.ops_in_order()]
    best = None
    for head in names:
        for tail in names:
            if head == tail:
                continue
            for split in range(1, len(order)):
                placement = {name: head if i < split else tail for i, name in enumerate(order)}
                try:
                    plan = fixed_schedule(graph, cost, placement, algorithm="split")
                except InputError:
                    continue  # a device without a kernel for a node
                if best is None or plan.makespan_s < best.makespan_s:
                    best = plan
    return best


def _plan_to_run(graph, cost, plans: dict, names: list[str]):
    """The plan section 7 runs for real, and why that one: it crosses devices whenever two are usable."""
    throughput = plans["throughput"]
    used = sorted(set(throughput.placement.values()))
    if len(used) > 1:
        return throughput, "the throughput plan"
    if len(names) < 2:
        return throughput, f"the throughput plan; only {', '.join(names)} is usable here, so nothing crosses devices"
    forced = cross_device_plan(graph, cost, names)
    if forced is None:
        return throughput, "the throughput plan; no device but " + used[0] + " can run every node of a split"
    head, tail = forced.slots[0].device, forced.slots[-1].device
    why = (f"a forced cross-device plan: the throughput plan keeps every node on {used[0]}, so the demo runs the fastest "
           f"split of the graph between {head} and {tail} (predicted {forced.makespan_s * 1e3:.3f} ms a request, against "
           f"{throughput.makespan_s * 1e3:.3f} ms on {used[0]} alone) to exercise cross-device transfers")
    return forced, why


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print) -> Path:
    """Run the whole story and write ``report.md`` into ``out_dir``; returns the report's path."""
    from hetero.ir.datasets import calibration_digits, load_digits_28
    from hetero.quant.lowering import lower_qdq
    from hetero.ir.source import load_onnx
    from hetero.ir.onnx_import import import_onnx
    from hetero.app.plots import write_gantt
    from hetero.policy import PolicyContext, make_policy
    from hetero.cost.profile import save_profile
    from hetero.cost.profiler import Budget, profile_graph
    from hetero.exec.dispatch import measure_dispatch
    from hetero.quant.qdq import quantize_model
    from hetero.exec.runtime import Runtime
    from hetero.app.summary import schedule_summary, summary_lines
    from hetero.schedulers import schedule
    from hetero.app.sim_outputs import run_scenario_file
    from hetero.trace import write_chrome_trace, write_schedule_trace
    from hetero.app.validate import validate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines: list[str] = ["# hetero demo: the seed CNN end to end", ""]

    def section(title: str) -> None:
        say(f"\n== {title}")
        lines.extend(["", f"## {title}", ""])

    section("1. Devices")
    devices, absent = discover()
    lines += ["| device | kind | units | description |", "| --- | --- | --- | --- |"]
    for d in devices:
        say(f"{d.name:<10} {d.kind:<9} {d.description}")
        lines.append(f"| {d.name} | {d.kind} | {d.compute_units} | {d.description} |")
    for a in absent:
        say(f"{a.kind}: absent ({a.reason})")
        lines.append(f"| {a.kind} | absent | | {a.reason} |")
    names = [d.name for d in devices if d.kind in ("cpu", "opencl", "cuda")]
    machine_at = len(lines)  # the machine record goes here once the profile has measured it

    section(f"2. int8 quantization (calibrated on {CALIBRATION_IMAGES} training digits)")
    fp32_model = load_onnx(MODEL)
    fp32_graph = import_onnx(fp32_model, label=MODEL)  # the one import of the seed model
    collect = _Collect()
    quant_log = logging.getLogger("hetero")
    quant_log.addHandler(collect)
    try:
        qdq = quantize_model(fp32_graph, calibration_digits(CALIBRATION_IMAGES))
    finally:
        quant_log.removeHandler(collect)
    write_atomic(out / "seed_cnn.int8.onnx", qdq.SerializeToString())
    int8_graph = lower_qdq(import_onnx(qdq, label="seed_cnn.int8.onnx"))
    lowered = sorted({op.type for op in int8_graph.ops_in_order()})
    quant_lines = _quantization_lines(fp32_model, qdq, collect.messages, lowered)
    for line in quant_lines[:6]:
        say(line.removeprefix("- "))
    quant_at = len(lines)

    section("3. Accuracy on the 360 held-out digits")
    images, labels = load_digits_28("test")
    cpu = open_device("cpu")
    fp32_acc, fp32_pred = _accuracy(fp32_graph, cpu, images, labels)
    int8_acc, int8_pred = _accuracy(int8_graph, cpu, images, labels)
    agree = int(np.sum(fp32_pred == int8_pred))
    say(f"fp32 {fp32_acc:.2%}   int8 {int8_acc:.2%}")
    say(f"int8 and fp32 agree on {agree} of {len(labels)} predictions")
    lines += ["| precision | accuracy |", "| --- | --- |", f"| fp32 | {fp32_acc:.2%} |", f"| int8 | {int8_acc:.2%} |", "",
              f"int8 and fp32 predict the same class for {agree} of {len(labels)} digits."]
    quant_lines.insert(5, f"- accuracy on the {len(labels)} held-out digits: fp32 {fp32_acc:.2%}, int8 {int8_acc:.2%} "
                          f"(same prediction on {agree}); section 3")
    lines[quant_at:quant_at] = quant_lines

    section(f"4. Profile on {', '.join(names)}")
    opened = {n: (cpu if n == "cpu" else open_device(n)) for n in names}
    profile = profile_graph(int8_graph, list(opened.values()), MODEL, "int8", Budget(seconds_per_op=0.2),
                            transfer_sizes=[1024 * 4**i for i in range(8)], dispatch_s=measure_dispatch(list(opened.values())),
                            handoffs=True)  # request start/end, hand-offs, wake-up, contention (~3 s): what the runtime adds
    profile_path = out / "profile.int8.json"
    save_profile(profile, profile_path)
    lines += ["Medians by each device's clock inside whole-graph runs; in brackets the host wall clock of a launch.", "",
              *_profile_table(int8_graph, profile)]
    say(f"wrote {profile_path}")
    machine = ["", "Measured on (also recorded in `profile.int8.json` under `host`, `libraries` and each device's `identity`):", "",
               *machine_lines(profile)]
    for line in machine[3:]:
        say(line.removeprefix("- "))
    lines[machine_at:machine_at] = machine

    section("5. Schedule")
    from hetero.cost.model import cost_model_for

    cost, memory = cost_model_for(int8_graph, str(profile_path), names, "int8")
    plans = {}
    for objective in ("latency", "throughput"):
        plans[objective] = schedule(int8_graph, cost, "auto", objective, memory)
        summary = summary_lines(schedule_summary(plans[objective], int8_graph, cost, memory))
        say(f"[{objective}]")
        for line in summary:
            say("  " + line)
        lines += [f"**{objective}**", "", "```", *summary, "```", ""]
    run_plan, why = _plan_to_run(int8_graph, cost, plans, names)
    if run_plan is not plans["throughput"]:
        run_plan.validate(int8_graph, cost, memory)
    write_gantt(out / "gantt.png", plans["latency"], "latency plan (what section 8 runs)")
    write_schedule_trace(out / "schedule.trace.json", plans["latency"])
    lines.append("![Gantt chart of the latency plan](gantt.png)")
    if dict(run_plan.placement) != dict(plans["latency"].placement):
        write_gantt(out / "gantt_run.png", run_plan, "the plan section 7 runs on the real devices")
        write_schedule_trace(out / "run_plan.trace.json", run_plan)
        lines += ["", f"Section 7 runs {why}.", "", "![Gantt chart of the plan run on the real devices](gantt_run.png)"]

    section("6. Simulate: background load slows the cpu down 10x for 2 s; the periodic policy re-plans")
    scenario = out / "slowdown.yaml"
    devices_yaml = "\n".join(f"  - {{name: '{n}', profile: profile.int8.json, device: '{n}'}}" for n in names)
    scenario.write_text(
        f"name: demo-slowdown\nmodel: {MODEL}\nprecision: int8\nhost: host\ndevices:\n{devices_yaml}\n"
        "workload: {kind: closed, clients: 2}\nscheduler: {algorithm: auto, objective: latency}\n"
        "events:\n  - {at: 2 s, kind: slowdown, device: cpu, factor: 10, duration: 2 s}\n"
        "policy: {name: periodic, period: 0.25 s, alpha: 0.5, stale: 1 s}\nduration: 6 s\nseed: 1\n"
    )
    result = run_scenario_file(scenario, output=out / "simulation.json", trace=out / "simulation.trace.json",
                               plot=out / "simulation.png", progress=False)
    sim_lines = _sim_summary(result)
    for line in sim_lines:
        say(line)
    lines += ["```", *sim_lines, "```", "", "![Simulated latency over time](simulation.png)"]

    section("7. Run partitioned int8 on the real devices (4 in flight)")
    say(f"running {why}")
    context = PolicyContext(int8_graph, cost, memory_bytes=memory)
    runtime = Runtime(int8_graph, opened, make_policy("static"), context, initial=run_plan)
    requests = [{"input": images[i : i + 1]} for i in range(len(labels))]
    report = runtime.serve(requests, inflight=4)
    single = [run_on_device(int8_graph, cpu, r)["logits"] for r in requests]
    identical = all(o is not None and np.array_equal(o["logits"], s) for o, s in zip(report.outputs, single))
    run_acc = float(np.mean([int(o["logits"].argmax()) == int(l) for o, l in zip(report.outputs, labels)]))
    write_chrome_trace(out / "run.trace.json", report.events, names, label="hetero demo run")
    used = sorted(set(run_plan.placement.values()))
    crossing = sum(1 for t in run_plan.transfers if "<" not in t.src_node + t.dst_node)
    run_summary = report.summary()
    say(f"{len(labels)} requests on {', '.join(used)}: accuracy {run_acc:.2%}, bit-identical to single-device int8: {identical}")
    say(f"median latency {run_summary['median_s'] * 1e3:.2f} ms, throughput {run_summary['throughput_rps']:.0f} requests/s")
    lines += [f"Runs {why}.", "", f"- devices used: {', '.join(used)}; {crossing} tensor{' crosses' if crossing == 1 else 's cross'} devices per request",
              f"- accuracy: {run_acc:.2%}", f"- outputs bit-identical to single-device int8: {identical}",
              f"- median latency {run_summary['median_s'] * 1e3:.2f} ms, throughput {run_summary['throughput_rps']:.0f} requests/s"]

    section("8. Predicted vs measured (one request at a time, latency plan)")
    check = validate(MODEL, names, str(profile_path), requests=40, inflight=1).to_dict()
    say(f"latency predicted {check['predicted_s'] * 1e3:.3f} ms, measured {check['measured_s'] * 1e3:.3f} ms, error {check['latency_rel_error']:+.1%}")
    lines += ["| | predicted | measured | error |", "| --- | --- | --- | --- |",
              f"| latency | {check['predicted_s'] * 1e3:.3f} ms | {check['measured_s'] * 1e3:.3f} ms | {check['latency_rel_error']:+.1%} |",
              f"| throughput | {check['predicted_throughput_rps']:.0f}/s | {check['measured_throughput_rps']:.0f}/s | {check['throughput_rel_error']:+.1%} |"]
    write_atomic(out / "validation.json", json.dumps(check, indent=1).encode())

    section("9. Compress, adapt to a new domain, update live (pruning, int8, incremental learning)")
    from hetero.app.demo_compress import compress_chapter

    lines += compress_chapter(out, names, opened, say)

    lines += ["", f"Total demo time: {time.perf_counter() - started:.1f} s."]
    report_path = out / "report.md"
    write_atomic(report_path, ("\n".join(lines) + "\n").encode())
    return report_path


def _sim_summary(result) -> list[str]:
    from hetero.app.sim_outputs import summary_lines

    return list(summary_lines(result))
