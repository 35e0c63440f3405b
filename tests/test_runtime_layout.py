"""The partitioned runtime on the cpu device keeps tensors in the layout their step wrote.

A run of ops on the cpu device converts NCHW<->NHWC only where a step wants the other layout
or where a tensor leaves the device (download), as the compiled plan does: counted with the
plan's conversion counter, not timed. Random placements over cpu, reference (and opencl:0)
stay bit-identical to the numpy int8 reference on the seed CNN and on a CNN written here
(depthwise, residual add, concat, grouped conv, pools, Gemm).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetero.backends import open_device
from hetero.backends.base import Buffer
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.cpu.plan import LAYOUT_CONVERSIONS, CpuBuffer, own_step
from hetero.backends.cpu.steps import NCHW, NHWC
from hetero.cost.model import ProfileCostModel
from hetero.cost.profiler import quick_profile
from hetero.errors import DeviceError
from hetero.exec.executor import run_reference
from hetero.exec.runtime import Runtime
from hetero.ir.datasets import load_digits_28
from hetero.ir.graph import Graph
from hetero.ir.onnx_import import import_onnx
from hetero.policy import PolicyContext, make_policy
from hetero.quant.lowering import lower_qdq
from hetero.quant.precision import load_for_precision
from hetero.quant.qdq import quantize_model
from hetero.schedulers import fixed_schedule

from conftest import usable_opencl


def branchy_cnn() -> onnx.ModelProto:
    """Stem 3x3/2, depthwise 3x3 + pointwise, a residual add, a concat of a depthwise 5x5 and a
    3x3 branch, max pool, grouped 3x3, global pool, Gemm (random weights, 32x32 input)."""
    rng = np.random.default_rng(11)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def tensor(stem: str) -> str:
        return f"{stem}{len(nodes)}_{len(inits)}"

    def const(array: np.ndarray) -> str:
        name = tensor("w")
        inits.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = tensor(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        y = node("Conv", [x, const(w), const(b)], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)
        return node("Relu", [y]) if relu else y

    x = conv("x", 3, 16, 3, stride=2)  # 16x16
    y = conv(conv(x, 16, 16, 3, group=16), 16, 24, 1, relu=False)  # depthwise, pointwise
    y = node("Add", [y, conv(y, 24, 24, 1)])  # residual
    y = node("Concat", [conv(y, 24, 24, 5, group=24), conv(y, 24, 8, 3)], axis=1)  # 32 channels
    y = node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])  # 8x8
    y = conv(y, 32, 32, 3, group=4)
    y = node("Flatten", [node("GlobalAveragePool", [y])])
    logits = node("Gemm", [y, const((0.1 * rng.standard_normal((32, 10))).astype(np.float32)), const(np.zeros(10, np.float32))],
                  transB=0)
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _branchy() -> tuple[Graph, list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(5)
    calibration = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    graph = lower_qdq(import_onnx(quantize_model(import_onnx(branchy_cnn()), calibration, activation_dtype="uint8")))
    requests = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)]
    return graph, requests


def _seed() -> tuple[Graph, list[dict[str, np.ndarray]]]:
    images, _ = load_digits_28("test")
    return load_for_precision("builtin:seed-cnn", "int8"), [{"input": images[i : i + 1]} for i in range(4)]


@pytest.fixture(scope="module", params=["seed", "branchy"])
def model(request: pytest.FixtureRequest) -> dict[str, Any]:
    graph, requests = _seed() if request.param == "seed" else _branchy()
    names = ["cpu", "reference"] + (["opencl:0"] if usable_opencl()[0] else [])
    devices = {n: open_device(n) for n in names}
    profile = quick_profile(graph, list(devices.values()), request.param, "int8")
    expected = [run_reference(graph, r) for r in requests]
    yield {"graph": graph, "requests": requests, "devices": devices, "profile": profile, "expected": expected}
    for device in devices.values():
        device.close()


def _serve(model: Mapping[str, Any], devices: Mapping[str, Any], placement: Mapping[str, str], inflight: int = 2) -> Any:
    graph = model["graph"]
    cost = ProfileCostModel(graph, model["profile"], list(devices), precision="int8",
                            can_run=lambda op, n: devices[n].supports(op))
    runtime = Runtime(graph, devices, make_policy("static", {}), PolicyContext(graph, cost),
                      initial=fixed_schedule(graph, cost, placement))
    before = LAYOUT_CONVERSIONS.value
    report = runtime.serve(model["requests"], inflight=inflight)
    assert report.failed_requests == 0
    for got, want in zip(report.outputs, model["expected"]):
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    return report, LAYOUT_CONVERSIONS.value - before


def _random_placement(graph: Graph, devices: Mapping[str, Any], seed: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    placement = {}
    for op in graph.ops_in_order():
        able = sorted(name for name, device in devices.items() if device.supports(op))
        placement[op.name] = able[int(rng.integers(len(able)))]
    return placement


def _boundary_conversions(graph: Graph, device: CpuDevice, placement: Mapping[str, str]) -> int:
    """Conversions one request needs when each 4-D tensor on the cpu device changes layout only
    where a step wants the other one (once per tensor and layout) or to leave the device as NCHW;
    steps chosen as the compiled plan chooses them (``own_step`` for the inputs' layouts)."""
    ops = list(graph.ops_in_order())
    rank = {s.name: len(s.shape) for op in ops for s in (*op.input_specs, *op.output_specs) if s is not None}
    rank.update({s.name: len(s.shape) for s in graph.inputs})
    readers: dict[str, list[str]] = {}
    for op in ops:
        for t in op.activation_inputs:
            readers.setdefault(t, []).append(op.name)
    held: dict[str, set[str]] = {}  # cpu tensors: the layouts held
    layout: dict[str, str] = {}  # cpu tensors: the layout written
    count = 0
    for op in ops:
        if placement[op.name] != "cpu":
            continue
        for t in op.activation_inputs:
            if t not in layout:  # uploaded from the host: NCHW
                layout[t], held[t] = NCHW, {NCHW}
        step = own_step(device, op, tuple(layout[t] for t in op.activation_inputs))
        wants = step.wants if step is not None else (NCHW,) * len(op.activation_inputs)
        gives = step.gives if step is not None else (NCHW,) * len(op.outputs)
        for t, form in zip(op.activation_inputs, wants):
            if form not in held[t] and rank[t] == 4:
                held[t].add(form)
                count += 1
        for t, form in zip(op.outputs, gives):
            layout[t], held[t] = form, {form}
    outputs = {s.name for s in graph.outputs}
    for op in ops:
        if placement[op.name] != "cpu":
            continue
        for t in op.outputs:
            leaves = t in outputs or any(placement[r] != "cpu" for r in readers.get(t, []))
            if leaves and NCHW not in held[t] and rank[t] == 4:
                count += 1
    return count


class PerOpCpu(CpuDevice):
    """The cpu device as the runtime drove it before: every op through ``timed_run`` (NCHW in and out)."""

    def timed_run_native(self, op: Any, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        return self.timed_run(op, inputs)

    def run_segment(self, graph: Any, inputs: Any) -> None:
        return None  # declines same-device segments: the runtime runs every op on its own


def test_cpu_only_partition_converts_as_the_compiled_plan_does(model: dict[str, Any]) -> None:
    graph, devices = model["graph"], {n: model["devices"][n] for n in ("cpu", "reference")}
    cpu = devices["cpu"]
    placement = {op.name: "cpu" for op in graph.ops_in_order()}
    plan = cpu.plan_for(graph)
    before = LAYOUT_CONVERSIONS.value
    plan.run(model["requests"][0])
    per_plan_run = LAYOUT_CONVERSIONS.value - before
    assert per_plan_run == sum(line.startswith("convert") for line in plan.describe())
    _, converted = _serve(model, devices, placement)
    requests = len(model["requests"])
    assert converted == requests * per_plan_run == requests * _boundary_conversions(graph, cpu, placement)
    per_op = PerOpCpu(cpu.info)
    try:
        _, converted_per_op = _serve(model, {"cpu": per_op, "reference": devices["reference"]}, placement)
    finally:
        per_op.close()
    assert converted_per_op > converted  # per-op runs convert around every channels-last op


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_cpu_partition_converts_only_at_its_boundaries(model: dict[str, Any], seed: int) -> None:
    graph, devices = model["graph"], {n: model["devices"][n] for n in ("cpu", "reference")}
    placement = _random_placement(graph, devices, seed)
    _, converted = _serve(model, devices, placement, inflight=1 + seed % 3)
    assert converted == len(model["requests"]) * _boundary_conversions(graph, devices["cpu"], placement)


@pytest.mark.opencl
@pytest.mark.parametrize("seed", [5, 6, 7])
def test_random_placements_over_three_devices_are_bit_identical(model: dict[str, Any], seed: int) -> None:
    devices = model["devices"]
    placement = _random_placement(model["graph"], devices, seed)
    assert len(set(placement.values())) >= 2
    report, _ = _serve(model, devices, placement, inflight=3)
    assert report.completed == len(model["requests"])


def test_plain_run_still_takes_and_gives_nchw_arrays(model: dict[str, Any]) -> None:
    """run(op, arrays) -> NCHW arrays (profiler, conformance); run_native keeps a conv's output
    channels-last, download gives it back as NCHW; an injected fault still fails the op."""
    graph, cpu = model["graph"], model["devices"]["cpu"]
    conv = next(op for op in graph.ops_in_order() if op.type == "QLinearConv")
    x = np.random.default_rng(0).integers(0, 255, conv.input_specs[0].shape).astype(conv.input_specs[0].dtype)
    plain = cpu.run(conv, [x])
    assert isinstance(plain[0], np.ndarray) and plain[0].shape == conv.output_specs[0].shape
    native = cpu.run_native(conv, [cpu.upload(x)])
    assert isinstance(native[0], CpuBuffer) and native[0].layout == NHWC
    np.testing.assert_array_equal(cpu.download(native[0]), plain[0])
    np.testing.assert_array_equal(cpu.run(conv, [cpu.upload(x)])[0], plain[0])  # an uploaded buffer runs per op too
    cpu.inject_failure(after_ops=0)
    try:
        with pytest.raises(DeviceError, match="injected fault"):
            cpu.timed_run_native(conv, [cpu.upload(x)])
    finally:
        cpu.repair()


def test_cpu_helpers_stop_spinning_while_a_plan_shares_the_cores(model: dict[str, Any], monkeypatch) -> None:
    """A plan with ops on an OpenCL CPU device (PoCL: the same cores) tells the cpu device to let
    its native helpers sleep after each job; a cpu-only plan does not; after the run they spin again."""
    if "opencl:0" not in model["devices"]:
        pytest.skip("no usable OpenCL device here (see conftest.usable_opencl)")
    from hetero.backends.cpu import native, native_jobs
    from hetero.cost.contention import HOST_GROUP, resource_group
    from hetero.cost.profile import identity_of

    devices = {n: model["devices"][n] for n in ("cpu", "opencl:0")}
    if resource_group(identity_of(devices["opencl:0"].info)) != HOST_GROUP:
        pytest.skip("opencl:0 is not a CPU device here: it shares no cores with the cpu device")
    calls: list[bool] = []
    real = CpuDevice.share_cores
    spinning: list[bool] = []

    def record(self: CpuDevice, sharing: bool) -> None:
        calls.append(sharing)
        real(self, sharing)
        pool = native_jobs.pool()
        spinning.append(pool.spinning if pool is not None else False)

    monkeypatch.setattr(CpuDevice, "share_cores", record)
    graph = model["graph"]
    ops = list(graph.ops_in_order())
    mixed = {op.name: ("opencl:0" if i % 2 and devices["opencl:0"].supports(op) else "cpu") for i, op in enumerate(ops)}
    assert "opencl:0" in mixed.values()
    _serve(model, devices, mixed)
    assert calls[0] is True and calls[-1] is False
    if native.ENABLED:
        assert spinning[0] is False and spinning[-1] is (native.SPIN_US > 0)
    calls.clear()
    _serve(model, devices, {op.name: "cpu" for op in ops})
    assert True not in calls
