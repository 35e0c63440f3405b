"""The hetero command line: devices, inspect, run, demo, and one-line errors with exit status 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hetero.app.cli import main
from hetero.ir.datasets import load_digits_28


@pytest.mark.opencl
def test_devices_lists_reference_cpu_and_opencl(capsys):
    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [d["name"] for d in report["devices"]]
    assert names[:2] == ["reference", "cpu"]
    assert any(n.startswith("opencl:") for n in names)
    for device in report["devices"]:
        assert device["compute_units"] >= 1
    kinds_accounted = {d["kind"] for d in report["devices"]} | {a["kind"] for a in report["absent"]}
    assert {"cpu", "opencl", "cuda"} <= kinds_accounted
    for absent in report["absent"]:
        assert absent["reason"]


@pytest.mark.opencl
def test_devices_table_says_why_cuda_is_absent(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "opencl:0" in out
    assert "cuda" in out


def test_inspect_json_totals_match_nodes(capsys):
    assert main(["inspect", "builtin:seed-cnn", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    nodes = report["nodes"]
    assert [n["type"] for n in nodes] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]
    conv = nodes[0]
    assert conv["outputs"] == [[1, 32, 26, 26]]
    assert conv["flops"] == 2 * 32 * 26 * 26 * 9 + 32 * 26 * 26
    assert report["totals"]["flops"] == sum(n["flops"] for n in nodes)
    assert report["totals"]["param_bytes"] == 4 * (32 * 9 + 32 + 64 * 5408 + 64 + 10 * 64 + 10)


def test_inspect_table(capsys):
    assert main(["inspect", "builtin:mobilenetv2"]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "total: " in out


def test_run_writes_outputs_that_match_the_digit(tmp_path, capsys):
    images, labels = load_digits_28("test")
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, images[:1])
    assert main(["run", "builtin:seed-cnn", "--input", str(x_path), "-o", str(y_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    logits = np.load(y_path)
    assert logits.shape == (1, 10)
    assert summary["top1"] == [int(logits.argmax())]
    assert summary["top1"] == [int(labels[0])]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["inspect", "builtin:nope"], "unknown builtin model 'nope'"),
        (["inspect", "missing.onnx"], "missing.onnx: no such model file"),
        (["run", "builtin:seed-cnn", "--input", "missing.npy"], "missing.npy: no such input file"),
        (["run", "builtin:seed-cnn", "--input", "x.npy", "--device", "tpu:7"], "tpu:7"),
    ],
)
def test_errors_are_one_line_with_status_1(argv, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert err.startswith("hetero: error: ")
    assert len(err.strip().splitlines()) == 1


def test_wrong_input_shape_is_named(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 28, 28), np.float32))
    assert main(["run", "builtin:seed-cnn", "--input", str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert "input 'input' has shape [1, 3, 28, 28]" in err and "[1, 1, 28, 28]" in err


def test_failed_run_leaves_no_output_file(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 28, 28), np.float32))
    out = tmp_path / "y.npy"
    assert main(["run", "builtin:seed-cnn", "--input", str(tmp_path / "x.npy"), "-o", str(out)]) == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "x.npy"]


def test_corrupt_model_file_through_installed_entry_point(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(Path(__file__).read_bytes()[:200])
    proc = subprocess.run(
        [sys.executable, "-m", "hetero", "inspect", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_demo_runs_the_whole_story(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("fp32 "))
    fp32, int8 = (float(part.split("%")[0]) for part in line.replace("fp32", "").split("int8"))
    assert fp32 >= 95.0 and abs(fp32 - int8) <= 1.0
    assert "bit-identical to single-device int8: True" in out
    assert "latency predicted" in out
    for name in ("report.md", "gantt.png", "simulation.png", "profile.int8.json", "run.trace.json", "seed_cnn.int8.onnx"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "![Gantt chart" in report and "## 8. Predicted vs measured" in report


@pytest.mark.opencl
def test_quantize_then_run_int8_on_opencl(tmp_path, capsys):
    from hetero.ir.datasets import calibration_digits

    cal, model = tmp_path / "cal.npy", tmp_path / "seed.int8.onnx"
    np.save(cal, calibration_digits(16))
    assert main(["quantize", "builtin:seed-cnn", "--calibration", str(cal), "-o", str(model)]) == 0
    assert "QDQ model" in capsys.readouterr().out
    images, labels = load_digits_28("test")
    x_path = tmp_path / "x.npy"
    np.save(x_path, images[:1])
    outputs = {}
    for device in ("reference", "opencl:0"):
        y_path = tmp_path / f"{device.replace(':', '')}.npy"
        assert main(["run", str(model), "--input", str(x_path), "--precision", "int8", "--device", device, "-o", str(y_path)]) == 0
        outputs[device] = np.load(y_path)
    assert np.array_equal(outputs["reference"], outputs["opencl:0"])
    assert int(outputs["reference"].argmax()) == int(labels[0])


def test_run_repeat_json_reports_latency(tmp_path, capsys):
    np.save(tmp_path / "x.npy", load_digits_28("test")[0][:1])
    argv = ["run", "builtin:seed-cnn", "--input", str(tmp_path / "x.npy"), "--precision", "int8", "--repeat", "3", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["device"] == "reference" and summary["repeat"] == 3
    assert 0 < summary["median_s"] <= summary["p90_s"]


def test_quantize_rejects_mismatched_calibration(tmp_path, capsys):
    np.save(tmp_path / "cal.npy", np.zeros((4, 3, 28, 28), np.float32))
    assert main(["quantize", "builtin:seed-cnn", "--calibration", str(tmp_path / "cal.npy"), "-o", str(tmp_path / "q.onnx")]) == 1
    assert "calibration samples have shape [3, 28, 28]" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


def test_schedule_problem_file_heft_paper(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    plan, trace, gantt = tmp_path / "plan.json", tmp_path / "trace.json", tmp_path / "gantt.png"
    argv = ["schedule", "--problem", str(root / "examples/problems/heft_paper.json"), "--algorithm", "heft",
            "-o", str(plan), "--trace", str(trace), "--gantt", str(gantt), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["makespan"] == 80
    assert summary["algorithm"] == "heft"
    assert set(summary) >= {"makespan", "placement", "slots", "algorithm", "seconds"}
    assert json.loads(plan.read_text())["algorithm"] == "heft"
    assert json.loads(trace.read_text())["traceEvents"]
    assert gantt.read_bytes()[:4] == b"\x89PNG"


def test_schedule_model_on_profile_and_spec_devices(tmp_path, capsys):
    profile = tmp_path / "p.json"
    assert main(["profile", "builtin:seed-cnn", "--devices", "reference", "-o", str(profile), "--budget-s", "0.02", "--max-transfer-mib", "0.1"]) == 0
    capsys.readouterr()
    assert main(["schedule", "builtin:seed-cnn", "--profile", str(profile), "--devices", "reference,rpi5-cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["placement"].values()) <= {"reference", "rpi5-cpu"}
    assert len(summary["placement"]) == 7
    assert main(["schedule", "builtin:seed-cnn", "--profile", str(profile), "--devices", "reference,tpu9"]) == 1
    assert "device 'tpu9' is in neither the profile nor the catalog" in capsys.readouterr().err


def test_samples_along_a_leading_axis_are_separate_requests(tmp_path, capsys):
    images, labels = load_digits_28("test")
    np.save(tmp_path / "x.npy", images[:5])
    assert main(["run", "builtin:seed-cnn", "--input", str(tmp_path / "x.npy"), "--device", "cpu", "-o", str(tmp_path / "y.npy"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.load(tmp_path / "y.npy").shape == (5, 10)
    assert summary["top1"] == [int(l) for l in labels[:5]]


def test_simulate_writes_result_and_an_svg_plot_together(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    result, plot = tmp_path / "r.json", tmp_path / "latency.svg"
    argv = ["simulate", str(root / "examples/scenarios/phone_edge_wifi.yaml"), "-o", str(result), "--plot", str(plot)]
    assert main(argv) == 0
    assert f"wrote {plot}" in capsys.readouterr().out
    assert json.loads(result.read_text())["requests"]["completed"] > 0
    assert b"<svg" in plot.read_bytes()[:400]


def test_ops_lists_every_registered_operator_with_the_kinds_that_have_kernels(capsys):
    from hetero.backends.registry import device_class
    from hetero.ir import ops

    assert main(["ops", "--json"]) == 0
    coverage = json.loads(capsys.readouterr().out)
    assert sorted(coverage) == sorted(ops.supported_ops())
    for kind in ("reference", "cpu", "opencl"):
        table = device_class(kind).kernels
        assert {op for op, row in coverage.items() if row[kind]} == set(table) & set(coverage)
    assert all(row["reference"] for row in coverage.values())
    assert main(["ops", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| operator | reference | cpu | opencl | cuda |")
    assert len(lines) == len(coverage) + 3
