"""The end-to-end demo on the seed model: devices, int8, profile, schedule, simulate, run, compare.

Every step uses the same public functions as the CLI; the report (Markdown, with the Gantt
chart, the simulation plot, traces and tables) lands in one output folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from hetero.backends import open_device
from hetero.devices import discover
from hetero.executor import run_on_device
from hetero.io import write_atomic

MODEL = "builtin:seed-cnn"


def _accuracy(graph, device, images: np.ndarray, labels: np.ndarray) -> float:
    name = graph.inputs[0].name
    output = graph.outputs[0].name
    hits = sum(int(run_on_device(graph, device, {name: images[i : i + 1]})[output].argmax()) == int(labels[i]) for i in range(len(labels)))
    return hits / len(labels)


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print) -> Path:
    """Run the whole story and write ``report.md`` into ``out_dir``; returns the report's path."""
    from hetero.datasets import calibration_digits, load_digits_28
    from hetero.lowering import lower_qdq
    from hetero.model_source import load_graph, load_onnx
    from hetero.onnx_import import import_onnx
    from hetero.plots import write_gantt
    from hetero.policy import PolicyContext, make_policy
    from hetero.profile import save_profile
    from hetero.profiler import Budget, profile_graph
    from hetero.quant import quantize_model
    from hetero.runtime import Runtime
    from hetero.schedulers import schedule, schedule_summary, summary_lines
    from hetero.sim.outputs import run_scenario_file
    from hetero.trace import write_chrome_trace, write_schedule_trace
    from hetero.validate import validate

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

    section("2. int8 quantization (calibrated on 100 training digits)")
    fp32_model = load_onnx(MODEL)
    qdq = quantize_model(fp32_model, calibration_digits(100))
    write_atomic(out / "seed_cnn.int8.onnx", qdq.SerializeToString())
    int8_graph = lower_qdq(import_onnx(qdq, label="seed_cnn.int8.onnx"))
    fp32_graph = load_graph(MODEL)
    say(f"wrote {out / 'seed_cnn.int8.onnx'}: {sum(1 for n in qdq.graph.node if n.op_type == 'QuantizeLinear')} QuantizeLinear nodes; lowered to "
        + ", ".join(sorted({op.type for op in int8_graph.ops_in_order()})))

    section("3. Accuracy on the 360 held-out digits")
    images, labels = load_digits_28("test")
    cpu = open_device("cpu")
    fp32_acc = _accuracy(fp32_graph, cpu, images, labels)
    int8_acc = _accuracy(int8_graph, cpu, images, labels)
    say(f"fp32 {fp32_acc:.2%}   int8 {int8_acc:.2%}")
    lines += ["| precision | accuracy |", "| --- | --- |", f"| fp32 | {fp32_acc:.2%} |", f"| int8 | {int8_acc:.2%} |"]

    section(f"4. Profile on {', '.join(names)}")
    opened = {n: (cpu if n == "cpu" else open_device(n)) for n in names}
    profile = profile_graph(int8_graph, list(opened.values()), MODEL, "int8", Budget(seconds_per_op=0.2),
                            transfer_sizes=[1024 * 4**i for i in range(8)])
    profile_path = out / "profile.int8.json"
    save_profile(profile, profile_path)
    lines += ["| device | op | median | wall median |", "| --- | --- | --- | --- |"]
    for device, entry in profile.devices.items():
        for stats in sorted(entry.ops.values(), key=lambda s: -s.median_s):
            lines.append(f"| {device} | {stats.op_type} | {stats.median_s * 1e6:.1f} us | {stats.expected_s * 1e6:.1f} us |")
    say(f"wrote {profile_path}")

    section("5. Schedule")
    from hetero.pipeline import cost_model_for

    cost, memory = cost_model_for(int8_graph, str(profile_path), names, "int8")
    plans = {}
    for objective in ("latency", "throughput"):
        plans[objective] = schedule(int8_graph, cost, "auto", objective, memory)
        summary = summary_lines(schedule_summary(plans[objective], int8_graph, cost, memory))
        say(f"[{objective}]")
        for line in summary:
            say("  " + line)
        lines += [f"**{objective}**", "", "```", *summary, "```", ""]
    write_gantt(out / "gantt.png", plans["latency"])
    write_schedule_trace(out / "schedule.trace.json", plans["latency"])
    lines.append("![Gantt chart of the latency plan](gantt.png)")

    section("6. Simulate: background load slows the cpu down 10x for 2 s; the periodic policy re-plans")
    scenario = out / "slowdown.yaml"
    devices_yaml = "\n".join(f"  - {{name: {n.replace(':', '')}, profile: profile.int8.json, device: '{n}'}}" for n in names)
    scenario.write_text(
        f"name: demo-slowdown\nmodel: {MODEL}\nprecision: int8\nhost: host\ndevices:\n{devices_yaml}\n"
        "workload: {kind: closed, clients: 2}\nscheduler: {algorithm: auto, objective: latency}\n"
        "events:\n  - {at: 2 s, kind: slowdown, device: cpu, factor: 10, duration: 2 s}\n"
        "policy: {name: periodic, period: 0.25 s, alpha: 0.5, stale: 1 s}\nduration: 6 s\nseed: 1\n"
    )
    result = run_scenario_file(scenario, output=out / "simulation.json", trace=out / "simulation.trace.json",
                               plot=out / "simulation.png", progress=False)
    sim_lines = [line for line in _sim_summary(result)]
    for line in sim_lines:
        say(line)
    lines += ["```", *sim_lines, "```", "", "![Simulated latency over time](simulation.png)"]

    section("7. Run partitioned int8 on the real devices (throughput plan, 4 in flight)")
    context = PolicyContext(int8_graph, cost, memory=memory)
    runtime = Runtime(int8_graph, opened, make_policy("static"), context, initial=plans["throughput"])
    requests = [{"input": images[i : i + 1]} for i in range(len(labels))]
    report = runtime.serve(requests, inflight=4)
    single = [run_on_device(int8_graph, cpu, r)["logits"] for r in requests]
    identical = all(o is not None and np.array_equal(o["logits"], s) for o, s in zip(report.outputs, single))
    run_acc = float(np.mean([int(o["logits"].argmax()) == int(l) for o, l in zip(report.outputs, labels)]))
    write_chrome_trace(out / "run.trace.json", report.events, names, label="hetero demo run")
    used = sorted(set(plans["throughput"].placement.values()))
    run_summary = report.summary()
    say(f"{len(labels)} requests on {', '.join(used)}: accuracy {run_acc:.2%}, bit-identical to single-device int8: {identical}")
    say(f"median latency {run_summary['median_s'] * 1e3:.2f} ms, throughput {run_summary['throughput_rps']:.0f} requests/s")
    lines += [f"- devices used: {', '.join(used)}", f"- accuracy: {run_acc:.2%}", f"- outputs bit-identical to single-device int8: {identical}",
              f"- median latency {run_summary['median_s'] * 1e3:.2f} ms, throughput {run_summary['throughput_rps']:.0f} requests/s"]

    section("8. Predicted vs measured (one request at a time, latency plan)")
    check = validate(MODEL, names, str(profile_path), requests=40, inflight=1).to_dict()
    say(f"latency predicted {check['predicted_s'] * 1e3:.3f} ms, measured {check['measured_s'] * 1e3:.3f} ms, error {check['latency_rel_error']:+.1%}")
    lines += ["| | predicted | measured | error |", "| --- | --- | --- | --- |",
              f"| latency | {check['predicted_s'] * 1e3:.3f} ms | {check['measured_s'] * 1e3:.3f} ms | {check['latency_rel_error']:+.1%} |",
              f"| throughput | {check['predicted_throughput_rps']:.0f}/s | {check['measured_throughput_rps']:.0f}/s | {check['throughput_rel_error']:+.1%} |"]
    write_atomic(out / "validation.json", json.dumps(check, indent=1).encode())

    lines += ["", f"Total demo time: {time.perf_counter() - started:.1f} s."]
    report_path = out / "report.md"
    write_atomic(report_path, ("\n".join(lines) + "\n").encode())
    return report_path


def _sim_summary(result) -> list[str]:
    from hetero.sim.outputs import summary_lines

    return list(summary_lines(result))
