"""The demo's chapter on the article's other half: seed -> pruned -> int8 -> partitioned -> adapted
to a new domain (inverted digits) -> updated live on the running deployment.

Needs the train extra (PyTorch); without it the chapter says so and is skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from hetero.io import write_atomic

PRUNE_RATIO = 0.5
PRUNE_EPOCHS = 3
ADAPT_EPOCHS = 5
ADAPT_FRACTION = 0.8
DOMAIN = "inverted"
LATENCY_REPEAT = 50
UPDATE_REQUESTS = 64
UPDATE_AFTER = 16


@dataclass(frozen=True)
class Step:
    """One row of the chapter's table."""

    name: str
    size_bytes: int
    flops: int
    latency_s: float
    accuracy_old: float
    accuracy_new: float
    devices: str


def _int8(model: onnx.ModelProto, calibration: np.ndarray, label: str):
    from hetero.ir.onnx_import import import_onnx
    from hetero.quant.lowering import lower_qdq
    from hetero.quant.qdq import quantize_model

    qdq = quantize_model(import_onnx(model, label=label), calibration)
    return qdq, lower_qdq(import_onnx(qdq, label=f"{label}.int8"))


def _accuracy(graph, device, images: np.ndarray, labels: np.ndarray) -> float:
    from hetero.exec.executor import run_on_device

    name, output = graph.inputs[0].name, graph.outputs[0].name
    hits = [int(run_on_device(graph, device, {name: images[i : i + 1]})[output].argmax()) == int(labels[i]) for i in range(len(labels))]
    return float(np.mean(hits))


def _latency(graph, device, image: np.ndarray) -> float:
    from hetero.exec.executor import time_on_device

    _, seconds = time_on_device(graph, device, {graph.inputs[0].name: image}, repeat=LATENCY_REPEAT)
    return float(np.median(seconds))


def compress_chapter(out: Path, names: list[str], opened: dict, say: Callable[[str], None]) -> list[str]:
    """Run the chapter; the report's lines (the section heading is the caller's)."""
    from hetero.train import INSTALL_HINT, torch_available

    if not torch_available():
        why = f"skipped: PyTorch (the train extra) is not installed; {INSTALL_HINT} to run it"
        say(why)
        return [why]
    started = time.perf_counter()
    from hetero.exec.live_update import LiveUpdate
    from hetero.exec.runtime import Runtime
    from hetero.ir.datasets import calibration_digits
    from hetero.ir.onnx_import import import_onnx
    from hetero.ir.source import load_onnx
    from hetero.policy import PolicyContext, make_policy
    from hetero.train.adapt import adapt
    from hetero.train.compress import prune_and_finetune
    from hetero.train.data import digits
    from hetero.train.loop import flops

    old, new = digits(), digits(DOMAIN)
    cpu = opened.get("cpu")
    if cpu is None:
        from hetero.backends import open_device

        cpu = open_device("cpu")
    sample = old.x_test[:1]
    steps: list[Step] = []

    def row(name: str, size: int, graph, model_flops: int, latency: float | None = None, devices: str = "cpu") -> None:
        step = Step(name, size, model_flops, _latency(graph, cpu, sample) if latency is None else latency,
                    _accuracy(graph, cpu, old.x_test, old.y_test), _accuracy(graph, cpu, new.x_test, new.y_test), devices)
        steps.append(step)
        say(f"{name:<22} {size / 1024:7.1f} KiB {step.flops / 1e3:8.0f} KFLOPs {step.latency_s * 1e6:8.1f} us  "
            f"digits {step.accuracy_old:.2%}  {DOMAIN} {step.accuracy_new:.2%}  ({devices})")

    seed = load_onnx("builtin:seed-cnn")
    row("seed fp32", seed.ByteSize(), import_onnx(seed), flops(seed))
    pruned = prune_and_finetune(seed, PRUNE_RATIO, old, epochs=PRUNE_EPOCHS, label="the seed CNN").model
    write_atomic(out / "seed_cnn.pruned.onnx", pruned.SerializeToString())
    row(f"pruned {PRUNE_RATIO:.0%} fp32", pruned.ByteSize(), import_onnx(pruned), flops(pruned))
    qdq, int8_graph = _int8(pruned, calibration_digits(100), "seed_cnn.pruned")
    write_atomic(out / "seed_cnn.pruned.int8.onnx", qdq.SerializeToString())
    row("pruned int8", qdq.ByteSize(), int8_graph, flops(pruned))

    from hetero.app.demo import cross_device_plan
    from hetero.cost.model import ProfileCostModel
    from hetero.cost.profiler import quick_profile

    devices = {n: opened[n] for n in names}
    profile = quick_profile(int8_graph, list(devices.values()), "seed_cnn.pruned.int8", "int8")
    cost = ProfileCostModel(int8_graph, profile, list(devices), precision="int8", can_run=lambda op, n: devices[n].supports(op))
    plan = cross_device_plan(int8_graph, cost, names)
    if plan is None:
        from hetero.schedulers import schedule

        plan = schedule(int8_graph, cost, "auto", "latency")
    used = ", ".join(sorted(set(plan.placement.values())))
    probe = [{"input": old.x_test[i : i + 1]} for i in range(32)]
    served = Runtime(int8_graph, devices, make_policy("static"), PolicyContext(int8_graph, cost), initial=plan).serve(probe)
    row("pruned int8, split", qdq.ByteSize(), int8_graph, flops(pruned), float(np.median([s for s in served.latencies_s if s])), used)

    adapted = adapt(pruned, new, replay=old, old=old, fraction=ADAPT_FRACTION, epochs=ADAPT_EPOCHS)
    write_atomic(out / "seed_cnn.adapted.onnx", adapted.model.SerializeToString())
    mixed = np.concatenate([calibration_digits(50), 1.0 - calibration_digits(50)])
    adapted_qdq, adapted_graph = _int8(adapted.model, mixed, "seed_cnn.adapted")
    write_atomic(out / "seed_cnn.adapted.int8.onnx", adapted_qdq.SerializeToString())
    row(f"adapted int8 ({adapted.updated_fraction:.0%} updated)", adapted_qdq.ByteSize(), adapted_graph, flops(adapted.model))

    # The live update: the split deployment serves old and new digits while the adapted weights load.
    images = np.concatenate([old.x_test, new.x_test])
    order = np.random.default_rng(0).permutation(len(images))[:UPDATE_REQUESTS]
    requests = [{"input": images[i : i + 1]} for i in order]
    runtime = Runtime(int8_graph, devices, make_policy("static"), PolicyContext(int8_graph, cost), initial=plan)
    report = runtime.serve(requests, inflight=4, update=LiveUpdate(adapted_graph, UPDATE_AFTER, "the adapted model"))
    from hetero.exec.executor import run_on_device

    versions = report.model_versions
    graphs = (int8_graph, adapted_graph)
    equal = sum(1 for r, o, v in zip(requests, report.outputs, versions)
                if o is not None and v is not None and np.array_equal(o["logits"], run_on_device(graphs[v], cpu, r)["logits"]))
    switch = versions.index(1) if 1 in versions else None
    update = report.update or {}
    load_ms = max(update.get("load_s", {0: 0.0}).values()) * 1e3
    say(f"live update after request {UPDATE_AFTER} of {UPDATE_REQUESTS} (4 in flight) on {used}: weights loaded in "
        f"{load_ms:.1f} ms, first request on the new version {switch}, lost {report.failed_requests}, "
        f"outputs equal to their version's {equal} of {len(requests)}")
    say(f"chapter time {time.perf_counter() - started:.1f} s")
    lines = [
        f"The article's other half on the seed CNN: structured L1 pruning of {PRUNE_RATIO:.0%} of the channels with "
        f"{PRUNE_EPOCHS} fine-tuning epochs, int8, a split over {used}, incremental learning on {DOMAIN} digits "
        f"(eq. 5, the top {ADAPT_FRACTION:.0%} of the parameters by mean gradient norm, {ADAPT_EPOCHS} epochs, old digits "
        "replayed), and the adapted weights loaded on the running split deployment.", "",
        "| step | size | FLOPs | latency | digits accuracy | " + DOMAIN + " accuracy | devices |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {s.name} | {s.size_bytes / 1024:.1f} KiB | {s.flops / 1e3:.0f} K | {s.latency_s * 1e6:.1f} us | "
          f"{s.accuracy_old:.2%} | {s.accuracy_new:.2%} | {s.devices} |" for s in steps), "",
        "Latency: median of one request, host input to host output (the split row: through the runtime, one in flight). "
        "Accuracy: the 360 held-out digits, plain and " + DOMAIN + ".", "",
        f"- adapt: {adapted.updated_groups} of {adapted.groups} parameter groups updated ({adapted.updated_fraction:.1%} of the "
        f"parameters); fp32 accuracy {DOMAIN} {adapted.new_before:.2%} -> {adapted.new_after:.2%}, digits "
        f"{adapted.old_before:.2%} -> {adapted.old_after:.2%}",
        f"- live update: {UPDATE_REQUESTS} requests, 4 in flight, load started with request {UPDATE_AFTER}; weights loaded in "
        f"{load_ms:.1f} ms ({', '.join(f'{d} {b} bytes' for d, b in update.get('loaded_bytes', {}).items())}); "
        f"requests 0..{(switch or UPDATE_REQUESTS) - 1} ran the pruned model, {switch}.. the adapted one; "
        f"lost {report.failed_requests}; outputs equal to their version's single-device output: {equal} of {len(requests)}",
        f"- model versions per request: `{''.join(str(v) for v in versions)}`",
    ]
    return lines

