"""The runtime: partitioned int8 inference on real devices, bit-exact for every placement,
failover on a device fault, live rebalancing when a device slows down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hetero.backends import open_device
from hetero.app.run import random_placement
from hetero.cost.model import ProfileCostModel
from hetero.ir.datasets import load_digits_28
from hetero.errors import DeviceError
from hetero.exec.executor import run_on_device
from hetero.cost.profiler import quick_profile
from hetero.quant.precision import load_for_precision
from hetero.policy import PolicyContext, make_policy
from hetero.exec.runtime import Runtime
from hetero.schedulers import fixed_schedule
from hetero.trace import chrome_trace

pytestmark = pytest.mark.opencl  # every test runs a plan across cpu and opencl:0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
DEVICES = ("cpu", "opencl:0", "reference")


def _setup(model: str, names=DEVICES):
    graph = load_for_precision(model, "int8")
    devices = {n: open_device(n) for n in names}
    profile = quick_profile(graph, list(devices.values()), model, "int8")
    cost = ProfileCostModel(graph, profile, list(devices), precision="int8", can_run=lambda op, n: devices[n].supports(op))
    return graph, devices, cost


@pytest.fixture(scope="module")
def seed():
    graph, devices, cost = _setup("builtin:seed-cnn")
    images, _ = load_digits_28("test")
    requests = [{"input": images[i : i + 1]} for i in range(12)]
    expected = [run_on_device(graph, devices["cpu"], r)["logits"] for r in requests]
    return graph, devices, cost, requests, expected


def _serve(graph, devices, cost, requests, placement=None, policy="static", inflight=3, **params):
    initial = None if placement is None else fixed_schedule(graph, cost, placement)
    runtime = Runtime(graph, devices, make_policy(policy, params), PolicyContext(graph, cost), initial=initial)
    return runtime.serve(requests, inflight=inflight)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed_value=st.integers(0, 10_000), inflight=st.integers(1, 4))
def test_every_placement_gives_identical_outputs(seed, seed_value, inflight):
    graph, devices, cost, requests, expected = seed
    placement = random_placement(graph, devices, seed_value)
    report = _serve(graph, devices, cost, requests, placement, inflight=inflight)
    assert report.failed_requests == 0
    for got, want in zip(report.outputs, expected):
        assert np.array_equal(got["logits"], want)
    assert dict(report.placements[0]) == placement


def test_trace_has_compute_and_transfers_in_the_simulator_format(seed):
    graph, devices, cost, requests, _ = seed
    placement = {name: ("cpu" if i % 2 else "opencl:0") for i, name in enumerate(graph.nodes)}
    report = _serve(graph, devices, cost, requests[:3], placement)
    kinds = {e.kind for e in report.events}
    assert kinds == {"compute", "transfer"}
    computes = [e for e in report.events if e.kind == "compute"]
    assert len(computes) == 3 * len(graph)
    assert all(e.end_s >= e.start_s for e in report.events)
    assert chrome_trace(report.events, list(devices))["traceEvents"]


def test_failover_moves_work_off_a_failing_device(seed):
    graph, devices, cost, requests, expected = seed
    placement = {name: "opencl:0" for name in graph.nodes}
    devices["opencl:0"].inject_failure(after_ops=10)
    try:
        report = _serve(graph, devices, cost, requests, placement, policy="failover")
    finally:
        devices["opencl:0"].repair()
    assert report.failed_devices == ("opencl:0",)
    assert report.failed_requests == 0 and report.retries >= 1
    assert "opencl:0" not in set(report.placements[-1].values())
    for got, want in zip(report.outputs, expected):
        assert np.array_equal(got["logits"], want)


def test_no_device_left_is_a_clear_error(seed):
    graph, devices, cost, requests, _ = seed
    only_cpu = {"cpu": devices["cpu"]}
    _, _, cpu_cost = _setup("builtin:seed-cnn", ("cpu",))
    only_cpu["cpu"].inject_failure(after_ops=0)
    try:
        with pytest.raises(DeviceError, match="no device left to run on after cpu failed"):
            _serve(graph, only_cpu, cpu_cost, requests[:2], policy="failover")
    finally:
        only_cpu["cpu"].repair()


def test_static_policy_loses_requests_on_a_fault(seed):
    graph, devices, cost, requests, _ = seed
    placement = {name: "opencl:0" for name in graph.nodes}
    devices["opencl:0"].inject_failure(after_ops=3)
    try:
        report = _serve(graph, devices, cost, requests[:4], placement, policy="static", inflight=1)
    finally:
        devices["opencl:0"].repair()
    assert report.failed_requests >= 1
    assert report.completed + report.failed_requests == 4


def test_threshold_policy_moves_work_away_from_a_slowed_device(seed):
    graph, devices, cost, requests, expected = seed
    placement = {name: "cpu" for name in graph.nodes}
    devices["cpu"].throttle = 40.0
    try:
        report = _serve(graph, devices, cost, requests, placement, policy="threshold", inflight=1, drift=0.5, cooldown=0.0)
    finally:
        devices["cpu"].throttle = 1.0
    assert report.rebalances >= 1
    moved = report.placements[-1]
    assert sum(1 for d in moved.values() if d == "cpu") < len(graph)
    for got, want in zip(report.outputs, expected):
        assert np.array_equal(got["logits"], want)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["builtin:resnet18", "squeezenet1_1", "mobilenet_v2"])
def test_big_models_random_placements_are_bit_exact(model):
    if not model.startswith("builtin:"):
        path = SHARED / f"{model}.onnx"
        if not path.exists():
            pytest.skip(f"{path} is not present")
        model = str(path)
    graph, devices, cost = _setup(model, ("cpu", "opencl:0"))
    x = np.random.default_rng(0).random(graph.inputs[0].shape, dtype=np.float32)
    request = {graph.inputs[0].name: x}
    expected = run_on_device(graph, devices["cpu"], request)
    for seed_value in (1, 2):
        report = _serve(graph, devices, cost, [request, request], random_placement(graph, devices, seed_value), inflight=2)
        for got in report.outputs:
            for name, want in expected.items():
                assert np.array_equal(got[name], want)
