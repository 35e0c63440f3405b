"""The demo: its forced cross-device plan, and the report's quantization, profile and machine sections."""

from __future__ import annotations

import json

import pytest

from hetero.app.demo import cross_device_plan, qdq_summary
from hetero.cost.model import cost_model_for

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def int8_seed():
    from hetero.ir.datasets import calibration_digits
    from hetero.quant.lowering import lower_qdq
    from hetero.ir.source import load_onnx
    from hetero.ir.onnx_import import import_onnx
    from hetero.quant.qdq import quantize_model

    qdq = quantize_model(import_onnx(load_onnx("builtin:seed-cnn")), calibration_digits(16))
    return qdq, lower_qdq(import_onnx(qdq, label="seed.int8.onnx"))


def test_cross_device_plan_is_the_fastest_valid_head_tail_split(int8_seed) -> None:
    _, graph = int8_seed
    names = ["intel-i7-1165g7-cpu", "rpi5-cpu"]
    cost, memory = cost_model_for(graph, None, names, "int8")
    plan = cross_device_plan(graph, cost, names)
    plan.validate(graph, cost, memory)
    order = [op.name for op in graph.ops_in_order()]
    devices = [plan.placement[name] for name in order]
    assert len(set(devices)) == 2 and devices == sorted(devices, key=devices.index)  # one head, one tail
    assert any(t.src_device != t.dst_device and "<" not in t.src_node + t.dst_node for t in plan.transfers)
    from hetero.schedulers import fixed_schedule

    for split in range(1, len(order)):
        for head, tail in (names, names[::-1]):
            other = fixed_schedule(graph, cost, {n: head if i < split else tail for i, n in enumerate(order)})
            assert plan.makespan_s <= other.makespan_s + 1e-15
    assert cross_device_plan(graph, cost, names[:1]) is None
    from hetero.app.demo import _plan_to_run
    from hetero.schedulers import schedule

    alone = schedule(graph, cost, "single", "throughput")
    assert len(set(alone.placement.values())) == 1
    chosen, why = _plan_to_run(graph, cost, {"throughput": alone}, names)
    assert chosen.makespan_s == plan.makespan_s and why.startswith("a forced cross-device plan")
    chosen, why = _plan_to_run(graph, cost, {"throughput": alone}, names[:1])
    assert chosen is alone and "nothing crosses devices" in why


def test_qdq_summary_counts_what_the_quantizer_wrote(int8_seed) -> None:
    qdq, _ = int8_seed
    summary = qdq_summary(qdq)
    assert [a["tensor"] for a in summary["activations"]][0] == "input"
    assert {w["tensor"] for w in summary["weights"]} == {"conv.weight", "fc1.weight", "fc2.weight"}
    assert [w["channels"] for w in summary["weights"]] == [32, 64, 10]
    assert len(summary["biases"]) == 3 and all(b["dtype"] == "int32" for b in summary["biases"])
    assert all(0 < a["scale"] < 1 for a in summary["activations"])


@pytest.mark.slow
def test_demo_report_sections(tmp_path) -> None:
    """The whole demo (about 10 s): the report's sections carry their figures."""
    from hetero.app.demo import run_demo

    report = run_demo(tmp_path, say=lambda text: None).read_text()
    quant = report.split("## 2. int8 quantization")[1].split("## 3.")[0]
    for needle in ("min-max", "6 activations", "3 int8 weight tensors", "model size: fp32 ONNX", "int8 QDQ ONNX",
                   "quantizer warnings:", "| conv.weight | 32x1x3x3 |", "accuracy on the 360 held-out digits"):
        assert needle in quant, needle
    profile = report.split("## 4. Profile")[1].split("## 5.")[0]
    for node, op_type in (("conv", "QLinearConv"), ("fc1", "QGemm"), ("fc2", "QGemm"), ("pool", "MaxPool")):
        assert f"| {node} | {op_type} |" in profile
    machine = report.split("Measured on")[1].split("## 2.")[0]
    assert "cores" in machine and "numba" in machine and "flags:" in machine
    host = json.loads((tmp_path / "profile.int8.json").read_text())["host"]
    assert {"cpu", "cores"} <= set(host)
    if "cpu_flags" in host:  # x86 Linux: the flags that matter, each said yes or no
        assert "avx512_vnni " in machine and "avx512_vp2intersect " in machine
        assert all(f"{flag} yes" in machine for flag in host["cpu_flags"])
    assert (tmp_path / "gantt.png").read_bytes().startswith(PNG)
    if "gantt_run.png" in report:  # two usable devices: the plan run for real crosses them
        assert (tmp_path / "gantt_run.png").read_bytes().startswith(PNG)
        assert "devices per request" in report and "; 0 tensors cross" not in report
    simulation = json.loads((tmp_path / "simulation.json").read_text())
    assert all("opencl" not in d or ":" in d for d in simulation["utilisation"]), simulation["utilisation"]


def test_profiles_record_the_cpu_and_its_flags_that_matter() -> None:
    from pathlib import Path

    from hetero.cost.profiler import CPU_FLAGS, host_identity

    identity = host_identity()
    assert identity["cores"] >= 1 and identity["cpu"]
    cpuinfo = Path("/proc/cpuinfo")
    flags_line = next((l for l in cpuinfo.read_text().splitlines() if l.startswith("flags")), None) if cpuinfo.exists() else None
    if flags_line is None:
        pytest.skip("no /proc/cpuinfo flags on this machine (not x86 Linux)")
    present = set(flags_line.split(":", 1)[1].split())
    assert identity["cpu_flags"] == [f for f in CPU_FLAGS if f in present]
    assert identity["virtual_machine"] == ("hypervisor" in present)
    assert "family" in identity["cpu_id"]
