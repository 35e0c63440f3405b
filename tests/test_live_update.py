"""Live model update in the runtime: new weights loaded on every device while requests flow; every
request runs wholly on one version; nothing lost or repeated. And the inference path never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from hetero.app.cli import main
from hetero.backends import open_device
from hetero.cost.model import ProfileCostModel
from hetero.cost.profiler import quick_profile
from hetero.errors import InputError
from hetero.exec.executor import run_on_device
from hetero.exec.live_update import LiveUpdate, check_same_structure
from hetero.exec.runtime import Runtime
from hetero.ir.datasets import load_digits_28
from hetero.ir.models import seed_cnn
from hetero.ir.onnx_import import import_onnx
from hetero.policy import PolicyContext, make_policy
from hetero.quant.precision import load_for_precision
from hetero.schedulers import fixed_schedule
from hetero.train.prune import prune_model

pytestmark = pytest.mark.opencl  # the plan spans cpu and opencl:0


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """The seed CNN and a model of the same graph with other weights, both int8, on cpu + opencl:0."""
    new_path = tmp_path_factory.mktemp("live") / "new.onnx"
    onnx.save(seed_cnn(seed=7), new_path)
    old = load_for_precision("builtin:seed-cnn", "int8")
    new = load_for_precision(str(new_path), "int8")
    devices = {n: open_device(n) for n in ("cpu", "opencl:0")}
    profile = quick_profile(old, list(devices.values()), "builtin:seed-cnn", "int8")
    cost = ProfileCostModel(old, profile, list(devices), precision="int8", can_run=lambda op, n: devices[n].supports(op))
    images, _ = load_digits_28("test")
    requests = [{"input": images[i : i + 1]} for i in range(24)]
    reference = open_device("reference")
    expected = [[run_on_device(g, reference, r)["logits"] for r in requests] for g in (old, new)]
    return old, new, new_path, devices, cost, requests, expected


def test_live_update_under_load_switches_between_requests(versions):
    old, new, _, devices, cost, requests, expected = versions
    placement = {name: ("cpu" if i % 2 else "opencl:0") for i, name in enumerate(old.nodes)}  # every request crosses devices
    runtime = Runtime(old, devices, make_policy("static", {}), PolicyContext(old, cost), initial=fixed_schedule(old, cost, placement))
    report = runtime.serve(requests, inflight=4, update=LiveUpdate(new, after_request=6))
    assert report.failed_requests == 0 and report.completed == len(requests)  # none lost
    versions_seen = report.model_versions
    assert versions_seen[:6] == [0] * 6  # started before the update
    assert 1 in versions_seen and versions_seen == sorted(versions_seen)  # one switch, never back
    for index, (got, version) in enumerate(zip(report.outputs, versions_seen)):
        assert np.array_equal(got["logits"], expected[version][index]), f"request {index} (version {version})"
    assert not np.array_equal(expected[0][0], expected[1][0])  # the versions really differ
    assert set(report.update["loaded_bytes"]) == set(devices) and all(b > 0 for b in report.update["loaded_bytes"].values())
    assert report.update["switch_s"] >= report.update["started_s"]
    loads = [e for e in report.events if e.name.startswith("load weights")]
    assert {e.device for e in loads} == set(devices)
    computes = [e for e in report.events if e.kind == "compute"]
    assert len(computes) == len(requests) * len(old)  # nothing repeated


def test_a_model_of_another_structure_is_refused():
    old = import_onnx(seed_cnn())
    pruned = import_onnx(prune_model(seed_cnn(), 0.5).model)
    with pytest.raises(InputError, match="node conv has shapes"):
        check_same_structure(old, pruned)
    check_same_structure(old, import_onnx(seed_cnn(seed=3)))  # weights alone may differ


def test_cli_run_update_lists_model_versions(versions, tmp_path, capsys):
    _, _, new_path, *_ = versions
    images, _ = load_digits_28("test")
    np.save(tmp_path / "x.npy", images[:8])
    args = ["run", "builtin:seed-cnn", "--devices", "cpu,opencl:0", "--input", str(tmp_path / "x.npy"), "--requests", "16",
            "--inflight", "4", "--update", str(new_path), "--update-after", "4", "--precision", "int8", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["model_versions"]) == 16 and summary["model_versions"][:4] == [0] * 4
    assert summary["failed_requests"] == 0 and summary["model_versions"] == sorted(summary["model_versions"])
    assert main([*args[:-5], "--update-after", "16", "--json"]) == 1
    assert "--update-after 16: the run has 16 requests" in capsys.readouterr().err


def test_inference_path_never_imports_torch(tmp_path):
    images, _ = load_digits_28("test")
    np.save(tmp_path / "x.npy", images[:2])
    code = ("import sys; from hetero.app.cli import main; "
            f"assert main(['run', 'builtin:seed-cnn', '--input', {str(tmp_path / 'x.npy')!r}, '--json']) == 0; "
            "assert main(['inspect', 'builtin:seed-cnn-tiny', '--json']) == 0; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hetero') and m.startswith(('torch', 'hetero.train'))); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_simulated_update_moves_the_weights_then_switches(tmp_path):
    scenario = tmp_path / "update.yaml"
    scenario.write_text(
        "name: live-update\nmodel: builtin:seed-cnn\nprecision: int8\n"
        "devices:\n  - {name: cpu, spec: rpi5-cpu}\n  - {name: gpu, spec: jetson-orin-nano-gpu}\n"
        "workload: {kind: poisson, rate: 100, requests: 60}\n"
        "events:\n  - {at: 0.2 s, kind: update, switch: 5 ms}\nduration: 1 s\nseed: 1\n")
    out = tmp_path / "result.json"
    assert main(["simulate", str(scenario), "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    (update,) = [e for e in result["events"] if e["kind"] == "update"]
    graph = load_for_precision("builtin:seed-cnn", "int8")
    assert sum(update["loaded_bytes"].values()) == sum(op.param_bytes for op in graph.ops_in_order())
    assert update["loaded_s"] > 0.2  # the weights crossed a link: it took time
    assert update["switch_s"] == pytest.approx(update["loaded_s"] + 0.005)
    assert 0 < update["requests_before_switch"] < 60
    assert result["migrated_bytes"] >= sum(update["loaded_bytes"].values())
