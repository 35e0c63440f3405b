"""The runtime's same-device segments (hetero.exec.segments): the rule, and runs through them.

A cpu partition's runs of ops go to the device as one compiled plan each; the outputs stay
bit-identical to the numpy int8 reference and to the runtime running every op on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hetero.backends import open_device
from hetero.cost.model import ProfileCostModel
from hetero.cost.profiler import quick_profile
from hetero.exec.executor import run_reference
from hetero.exec.runtime import Runtime
from hetero.exec.segments import plan_segments
from hetero.ir.graph import Graph
from hetero.ir.onnx_import import import_onnx
from hetero.policy import PolicyContext, make_policy
from hetero.quant.lowering import lower_qdq
from hetero.quant.qdq import quantize_model
from hetero.schedulers import fixed_schedule

from test_runtime_layout import branchy_cnn


@pytest.fixture(scope="module")
def branchy() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    calibration = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    graph = lower_qdq(import_onnx(quantize_model(import_onnx(branchy_cnn()), calibration, activation_dtype="uint8")))
    requests = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(3)]
    devices = {n: open_device(n) for n in ("cpu", "reference")}
    profile = quick_profile(graph, list(devices.values()), "branchy", "int8")
    yield {"graph": graph, "requests": requests, "devices": devices, "profile": profile,
           "expected": [run_reference(graph, r) for r in requests]}
    for device in devices.values():
        device.close()


def _wiring(graph: Graph) -> tuple[list, dict[str, str], dict[str, list[str]], list[str]]:
    order = list(graph.ops_in_order())
    producer = {t: op.name for op in order for t in op.outputs}
    readers: dict[str, list[str]] = {}
    for op in order:
        for t in op.activation_inputs:
            readers.setdefault(t, []).append(op.name)
    return order, producer, readers, [s.name for s in graph.outputs]


def _placement(graph: Graph, seed: int, share: float) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    return {op.name: "cpu" if rng.random() < share else "reference" for op in graph.ops_in_order()}


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.3, 1.0))
def test_segments_follow_the_rule_for_any_placement(branchy: dict[str, Any], seed: int, share: float) -> None:
    graph = branchy["graph"]
    order, producer, readers, outputs = _wiring(graph)
    placement = _placement(graph, seed, share)
    segments = plan_segments(order, placement, producer, readers, outputs, {"cpu"})
    position = {op.name: i for i, op in enumerate(order)}
    seen: set[str] = set()
    for root, segment in segments.items():
        names = [op.name for op in segment.ops]
        assert root == names[0] and len(names) >= 2 and segment.device == "cpu"
        assert all(placement[n] == "cpu" for n in names)
        assert names == sorted(names, key=position.__getitem__)  # topological order
        assert not seen & set(names)  # an op is in one segment at most
        seen |= set(names)
        for op in segment.ops[1:]:  # a member reads only from its segment (or graph inputs)
            assert {producer[t] for t in op.activation_inputs if t in producer} <= segment.members
        for op in segment.ops[:-1]:  # only the last op may hand a tensor off the device
            assert not any(placement[r] != "cpu" for t in op.outputs for r in readers.get(t, ()))
            assert not set(op.outputs) & set(outputs)
        made = {t for op in segment.ops for t in op.outputs}
        assert set(segment.inputs) == {t for op in segment.ops for t in op.activation_inputs} - made
        assert set(segment.outputs) == {t for t in made if t in outputs or set(readers.get(t, ())) - segment.members}
    assert not segments or set(placement.values()) != {"reference"}


def test_all_reference_or_alternating_placements_have_no_segments(branchy: dict[str, Any]) -> None:
    graph = branchy["graph"]
    order, producer, readers, outputs = _wiring(graph)
    assert plan_segments(order, {op.name: "reference" for op in order}, producer, readers, outputs, {"cpu"}) == {}
    every = plan_segments(order, {op.name: "cpu" for op in order}, producer, readers, outputs, {"cpu"})
    assert [len(s.ops) for s in every.values()] == [len(order)]  # one segment: the whole graph


def _serve(model: dict[str, Any], placement: dict[str, str], segments: bool, inflight: int = 2):
    graph, devices = model["graph"], model["devices"]
    cost = ProfileCostModel(graph, model["profile"], list(devices), precision="int8")
    runtime = Runtime(graph, devices, make_policy("static", {}), PolicyContext(graph, cost),
                      initial=fixed_schedule(graph, cost, placement), segments=segments)
    report = runtime.serve(model["requests"], inflight=inflight)
    assert report.failed_requests == 0
    return report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_through_segments_are_bit_identical_and_traced_per_op(branchy: dict[str, Any], seed: int) -> None:
    graph = branchy["graph"]
    placement = _placement(graph, seed, 0.8) if seed else {op.name: "cpu" for op in graph.ops_in_order()}
    by_segments = _serve(branchy, placement, segments=True)
    one_by_one = _serve(branchy, placement, segments=False)
    for report in (by_segments, one_by_one):
        for got, want in zip(report.outputs, branchy["expected"]):
            for name, value in want.items():
                np.testing.assert_array_equal(got[name], value, err_msg=name)
    requests = len(branchy["requests"])
    computed = [e for e in by_segments.events if e.kind == "compute"]
    assert len(computed) == requests * len(graph)  # one compute event per op and request, as before
    in_segments = {e.name for e in computed if "segment" in e.args}
    order, producer, readers, outputs = _wiring(graph)
    expected = {op.name for s in plan_segments(order, placement, producer, readers, outputs, {"cpu"}).values() for op in s.ops}
    assert in_segments == expected and expected
    assert not any("segment" in e.args for e in one_by_one.events)
    for name in graph.nodes:  # every op observed once per request, on both paths
        assert len(by_segments.op_seconds[name]) == len(one_by_one.op_seconds[name]) == requests


def test_each_segment_is_compiled_once(branchy: dict[str, Any]) -> None:
    graph, cpu = branchy["graph"], branchy["devices"]["cpu"]
    cpu.close()  # drops compiled plans
    placement = _placement(graph, 3, 0.8)
    order, producer, readers, outputs = _wiring(graph)
    count = len(plan_segments(order, placement, producer, readers, outputs, {"cpu"}))
    assert count >= 1
    _serve(branchy, placement, segments=True, inflight=3)
    _serve(branchy, placement, segments=True, inflight=1)
    assert len(cpu._segment_plans) == 2 * count  # one Runtime each: its own segment graphs, compiled once


def test_a_fault_falls_back_to_ops_one_by_one(branchy: dict[str, Any]) -> None:
    """A fault injected on the cpu device fails the request at the op it counts down to (the
    segment declines to run while one is pending); failover retries it on the reference device."""
    graph, devices = branchy["graph"], branchy["devices"]
    cost = ProfileCostModel(graph, branchy["profile"], list(devices), precision="int8")
    placement = {op.name: "cpu" for op in graph.ops_in_order()}
    runtime = Runtime(graph, devices, make_policy("failover", {}), PolicyContext(graph, cost),
                      initial=fixed_schedule(graph, cost, placement))
    report = runtime.serve(branchy["requests"], inflight=1, faults={1: ["cpu"]})
    assert report.failed_devices == ("cpu",) and report.retries >= 1 and report.failed_requests == 0
    for got, want in zip(report.outputs, branchy["expected"]):
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
