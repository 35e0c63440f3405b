"""Fused float tails in compiled cpu plans (hetero.backends.cpu.tails), bit for bit.

A QDQ model's DequantizeLinear -> float elementwise ops -> QuantizeLinear groups run as one
256-entry lookup, and QuantizeLinear(DequantizeLinear(x) * gate) as one gated pass: the outputs
must equal the numpy int8 reference and onnxruntime exactly, equal the unfused plan, and hooks
(observers, spans, the thread-count learning) must still see every op of the graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hetero.backends.cpu import helpers
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu import kernels_tail as kt
from hetero.backends.cpu import tails
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.discovery import DeviceInfo
from hetero.backends.reference import ReferenceDevice
from hetero.exec.executor import run_on_device, run_reference
from hetero.ir.onnx_import import import_onnx
from hetero.ir.synth import CnnBuilder
from hetero.quant.lowering import lower_qdq
from hetero.quant.qdq import quantize_model

INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)
F32 = np.float32


@pytest.fixture(scope="module")
def dev() -> CpuDevice:
    device = CpuDevice(INFO)
    yield device
    device.close()


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# --- a CNN with every shape of tail ------------------------------------------------------------


def tails_cnn() -> onnx.ModelProto:
    """Erf over a Div (Gelu's inner half), Tanh, Swish (a DAG: Sigmoid and Mul both read the
    dequantized tensor), HardSwish, a squeeze-and-excitation gate (Sigmoid of the pooled branch,
    multiplying from the left) and a constant per-channel scale."""
    b = CnnBuilder(11)

    def scalar(v: float) -> str:
        return b.const(np.array(v, np.float32))

    x = b.conv("x", 3, 16, 3, stride=2, relu=False)
    erf = b.node("Erf", [b.node("Div", [x, scalar(1.4142135)])])
    x = b.node("Mul", [b.node("Mul", [x, scalar(0.5)]), b.node("Add", [erf, scalar(1.0)])])
    x = b.node("Tanh", [b.conv(x, 16, 16, 3, group=16, relu=False)])
    x = b.conv(x, 16, 24, 1, relu=False)
    x = b.node("Mul", [x, b.node("Sigmoid", [x])])
    y = b.node("HardSwish", [b.conv(x, 24, 24, 3, group=24, relu=False)])
    gate = b.node("Sigmoid", [b.conv(b.conv(b.node("GlobalAveragePool", [y]), 24, 8, 1), 8, 24, 1, relu=False)])
    x = b.conv(b.node("Mul", [gate, y]), 24, 24, 1, relu=False)
    x = b.node("Mul", [x, b.const((0.5 + np.random.default_rng(2).random((1, 24, 1, 1))).astype(np.float32))])
    x = b.conv(x, 24, 24, 1, relu=False)
    return b.classifier("tails", x, 24, 10, (1, 3, 24, 24))


@pytest.fixture(scope="module", params=["uint8", "int8"])
def quantized(request: pytest.FixtureRequest):
    graph = import_onnx(tails_cnn())
    rng = np.random.default_rng(0)
    qdq = quantize_model(graph, [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=request.param)
    return qdq, lower_qdq(import_onnx(qdq))


def feeds(seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((1, 3, 24, 24)).astype(np.float32)}


def test_the_cnn_runs_its_tails_fused_and_exact(dev: CpuDevice, quantized) -> None:
    qdq, graph = quantized
    found = tails.find_tails(graph)
    assert sorted(t.kind for t in found) == ["gated", "gated", "lookup", "lookup", "lookup", "lookup"]
    assert {tuple(op.type for op in t.ops) for t in found if t.kind == "lookup"} >= {
        ("DequantizeLinear", "Sigmoid", "Mul", "QuantizeLinear"), ("DequantizeLinear", "Tanh", "QuantizeLinear")}
    plan = dev.plan_for(graph)
    lines = plan.describe()
    assert sum(" fused " in line for line in lines) == 6, "\n".join(lines)
    assert not any(line.split(" ")[1] in ("(Tanh)", "(HardSwish)") for line in lines), "\n".join(lines)
    peer = session(qdq)
    name = graph.outputs[0].name
    for seed in range(3):
        got = run_on_device(graph, dev, feeds(seed))[name]
        np.testing.assert_array_equal(got, run_reference(graph, feeds(seed))[name])
        np.testing.assert_array_equal(got, peer.run(None, feeds(seed))[0])


def test_fusion_off_compiles_every_op_and_gives_the_same_bits(quantized, monkeypatch: pytest.MonkeyPatch) -> None:
    _, graph = quantized
    fused_device, plain_device = CpuDevice(INFO), CpuDevice(INFO)
    try:
        fused = fused_device.plan_for(graph)
        monkeypatch.setattr(tails, "ENABLED", False)
        plain = plain_device.plan_for(graph)
        assert fused.skipped and not plain.skipped
        assert not any(" fused " in line for line in plain.describe())
        for seed in range(3):
            a, b = fused.run(feeds(seed)), plain.run(feeds(seed))
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    finally:
        fused_device.close()
        plain_device.close()


def test_observers_and_spans_see_every_op(dev: CpuDevice, quantized) -> None:
    """The ops a fused step replaced still reach an observer, with the reference's outputs, and a
    span each (in graph order, inside the step's time); a timing hook gets a positive share."""
    _, graph = quantized
    seen: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}

    def observe(op, outs, timing) -> None:
        seen.update((t, np.array(v)) for t, v in zip(op.outputs, outs))
        times[op.name] = timing.device_s

    run_on_device(graph, dev, feeds(5), observe=observe, timed=True)
    reference: dict[str, np.ndarray] = {}
    run_on_device(graph, ReferenceDevice(), feeds(5), observe=lambda op, outs, t: reference.update(zip(op.outputs, outs)))
    assert seen.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(seen[name], value, err_msg=name)
    assert set(times) == {op.name for op in graph.ops_in_order()} and all(t > 0 for t in times.values())
    plan = dev.plan_for(graph)
    spans: list = []
    plan.run(feeds(5), spans=spans)
    assert sorted(op.name for op, _, _ in spans) == sorted(op.name for op in graph.ops_in_order())
    for instr in plan.instrs:
        if instr.covers:
            mine = [s for s in spans if s[0] in instr.covers]
            assert [s[0] for s in mine] == list(instr.covers)
            assert all(a <= b and b <= c for (_, a, b), (_, c, _) in zip(mine, mine[1:]))


def test_thread_learning_settles_without_the_fused_away_ops(quantized) -> None:
    """Ops a plan never runs never get thread trials: the device's learning must not wait for them
    (timing loops warm up until it is done)."""
    _, graph = quantized
    device = CpuDevice(INFO, threads=2)
    try:
        plan = device.plan_for(graph)
        assert plan.skipped
        for _ in range(80):
            if not device.learning(graph):
                break
            plan.run(feeds(1))
        assert not device.learning(graph)
    finally:
        device.close()


# --- single groups, built by hand -----------------------------------------------------------------


def _q_nodes(prefix: str, dtype: int, scale: float, zero: int) -> list[onnx.TensorProto]:
    np_type = np.uint8 if dtype == TensorProto.UINT8 else np.int8
    return [numpy_helper.from_array(np.array(scale, np.float32), f"{prefix}_s"),
            numpy_helper.from_array(np.array(zero, np_type), f"{prefix}_z")]


def qdq_group(body: list[onnx.NodeProto], last: str, x_type: int, y_type: int, sx: float, zx: int, sy: float, zy: int,
              shape=(2, 5, 7, 9), extra_inputs=(), extra_outputs=(), inits=()) -> onnx.ModelProto:
    """x (8-bit) -> DequantizeLinear -> ``body`` (reading "xf", writing ``last``) -> QuantizeLinear -> y."""
    nodes = [helper.make_node("DequantizeLinear", ["x", "dq_s", "dq_z"], ["xf"]), *body,
             helper.make_node("QuantizeLinear", [last, "q_s", "q_z"], ["y"])]
    graph = helper.make_graph(
        nodes, "group", [helper.make_tensor_value_info("x", x_type, shape), *extra_inputs],
        [helper.make_tensor_value_info("y", y_type, shape), *extra_outputs],
        [*_q_nodes("dq", x_type, sx, zx), *_q_nodes("q", y_type, sy, zy), *inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def random_bytes(shape, dtype: int, seed: int) -> np.ndarray:
    info = np.iinfo(np.uint8 if dtype == TensorProto.UINT8 else np.int8)
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(info.dtype)


UNARIES = [("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}), ("Erf", {}),
           ("Relu", {}), ("Neg", {}), ("Abs", {})]
"""Float ops the cpu device runs where a QuantizeLinear rounds their output (its kernels give the
reference's bits, as onnxruntime's)."""


@settings(max_examples=30, deadline=None)
@given(case=st.sampled_from(UNARIES), x_type=st.sampled_from([TensorProto.UINT8, TensorProto.INT8]),
       y_type=st.sampled_from([TensorProto.UINT8, TensorProto.INT8]), sx=st.floats(1e-3, 0.5), sy=st.floats(1e-3, 0.5),
       zx=st.integers(-128, 255), zy=st.integers(-128, 255), seed=st.integers(0, 9))
def test_any_unary_group_is_one_exact_lookup(dev: CpuDevice, case, x_type, y_type, sx, sy, zx, zy, seed) -> None:
    op_type, attrs = case
    clip = lambda z, t: int(np.clip(z, 0, 255) if t == TensorProto.UINT8 else np.clip(z, -128, 127))  # noqa: E731
    zx, zy = clip(zx, x_type), clip(zy, y_type)
    model = qdq_group([helper.make_node(op_type, ["xf"], ["f"], **attrs)], "f", x_type, y_type, sx, zx, sy, zy)
    graph = lower_qdq(import_onnx(model))
    found = tails.find_tails(graph)
    assert [t.kind for t in found] == ["lookup"] and found[0].table.shape == (256,)
    x = random_bytes((2, 5, 7, 9), x_type, seed)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    np.testing.assert_array_equal(got, session(model).run(None, {"x": x})[0])


def test_a_swish_dag_with_constants_is_one_lookup(dev: CpuDevice) -> None:
    """x * Sigmoid(x) + 0.25, then / 2: two readers of the dequantized tensor, scalar constants."""
    body = [helper.make_node("Sigmoid", ["xf"], ["s"]), helper.make_node("Mul", ["xf", "s"], ["m"]),
            helper.make_node("Add", ["m", "quarter"], ["a"]), helper.make_node("Div", ["a", "two"], ["d"])]
    inits = [numpy_helper.from_array(np.array(0.25, np.float32), "quarter"), numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    model = qdq_group(body, "d", TensorProto.INT8, TensorProto.UINT8, 0.05, -3, 0.02, 10, inits=inits)
    graph = lower_qdq(import_onnx(model))
    (tail,) = tails.find_tails(graph)
    assert [op.type for op in tail.ops] == ["DequantizeLinear", "Sigmoid", "Mul", "Add", "Div", "QuantizeLinear"]
    x = random_bytes((2, 5, 7, 9), TensorProto.INT8, 3)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    np.testing.assert_array_equal(got, session(model).run(None, {"x": x})[0])


def test_groups_whose_floats_leave_are_not_fused(dev: CpuDevice) -> None:
    """A float intermediate that is a graph output, or an elementwise op of two different 8-bit
    tensors, keeps its ops (and the results stay exact)."""
    shape = (1, 4, 6, 6)
    out = helper.make_tensor_value_info("s", TensorProto.FLOAT, shape)
    model = qdq_group([helper.make_node("Sigmoid", ["xf"], ["s"])], "s", TensorProto.UINT8, TensorProto.UINT8, 0.1, 128,
                      1 / 256, 0, shape=shape, extra_outputs=[out])
    graph = lower_qdq(import_onnx(model))
    assert tails.find_tails(graph) == []
    two = qdq_group([helper.make_node("DequantizeLinear", ["x2", "dq_s", "dq_z"], ["x2f"]),
                     helper.make_node("Add", ["xf", "x2f"], ["a"])], "a", TensorProto.UINT8, TensorProto.UINT8, 0.1, 128, 0.2, 128,
                    shape=shape, extra_inputs=[helper.make_tensor_value_info("x2", TensorProto.UINT8, shape)])
    two_graph = lower_qdq(import_onnx(two))
    assert not [t for t in tails.find_tails(two_graph) if t.kind == "lookup"]
    x = {"x": random_bytes(shape, TensorProto.UINT8, 1)}
    got = run_on_device(graph, dev, x)
    want = run_reference(graph, x)
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("gate_shape", [(2, 6, 1, 1), (1, 6, 1, 1), (6, 1, 1), (1,), "constant"])
@pytest.mark.parametrize("x_type, y_type", [(TensorProto.UINT8, TensorProto.UINT8), (TensorProto.INT8, TensorProto.INT8),
                                            (TensorProto.INT8, TensorProto.UINT8)])
def test_a_gate_group_is_one_exact_pass(dev: CpuDevice, gate_shape, x_type: int, y_type: int) -> None:
    shape = (2, 6, 5, 7)
    rng = np.random.default_rng(4)
    if gate_shape == "constant":
        inputs, inits, gate = [], [numpy_helper.from_array((rng.random((1, 6, 1, 1)) * 2).astype(np.float32), "g")], {}
    else:
        inputs, inits = [helper.make_tensor_value_info("g", TensorProto.FLOAT, gate_shape)], []
        gate = {"g": (rng.random(gate_shape) * 3 - 0.5).astype(np.float32)}
    model = qdq_group([helper.make_node("Mul", ["xf", "g"], ["m"])], "m", x_type, y_type, 0.03, 3, 0.05, -2 if y_type == TensorProto.INT8 else 7,
                      shape=shape, extra_inputs=inputs, inits=inits)
    graph = lower_qdq(import_onnx(model))
    assert [t.kind for t in tails.find_tails(graph)] == ["gated"]
    feeds_ = {"x": random_bytes(shape, x_type, 2), **gate}
    got = run_on_device(graph, dev, feeds_)["y"]
    np.testing.assert_array_equal(got, run_reference(graph, feeds_)["y"])
    np.testing.assert_array_equal(got, session(model).run(None, feeds_)[0])


# --- the kernels --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, kt.LOOKUP_CHUNK - 1, kt.LOOKUP_CHUNK + 1, 3 * kt.LOOKUP_CHUNK + 100])
def test_the_lookup_kernel_on_one_and_two_threads(size: int) -> None:
    """The host's path (VBMI permutes where the CPU has them) and the portable 64-byte path both
    equal numpy's table[x]; two threads go through the native helpers."""
    rng = np.random.default_rng(size)
    x, table = rng.integers(0, 256, size).astype(np.uint8), rng.integers(0, 256, 256).astype(np.uint8)
    portable = np.empty_like(x)
    kt.lookup_portable(x, table, portable)
    np.testing.assert_array_equal(portable, table[x])
    before = helpers.thread_count()
    try:
        for threads in (1, 2):
            helpers.set_thread_count(threads)
            out = np.zeros_like(x)
            ks.run_items(kt.lookup_part, (x, table, out), -(-size // kt.LOOKUP_CHUNK))
            np.testing.assert_array_equal(out, table[x])
    finally:
        helpers.set_thread_count(before)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_the_gated_kernel_on_one_and_two_threads(channels_last: bool, dtype) -> None:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    n, a, b = 2, 700, 37
    x = rng.integers(info.min, info.max + 1, (n, a, b)).astype(dtype)
    gate = (rng.random((n, b if channels_last else a)) * 4 - 1).astype(np.float32)
    zx, sx, sy, zy = np.int32(5), F32(0.04), F32(0.03), F32(-3 if dtype == np.int8 else 9)
    xf = (x.astype(np.int32) - zx).astype(np.float32) * sx
    want = np.clip(np.rint((xf * (gate[:, None, :] if channels_last else gate[:, :, None])) / sy) + zy, info.min, info.max).astype(dtype)
    per = max(1, kt.GATED_ELEMENTS // b)
    before = helpers.thread_count()
    try:
        for threads in (1, 2):
            helpers.set_thread_count(threads)
            out = np.zeros_like(x)
            ks.run_items(kt.gated_part, (x, zx, sx, gate, np.zeros_like(gate), channels_last, sy, zy, F32(info.min), F32(info.max), out),
                         n * -(-a // per))
            np.testing.assert_array_equal(out, want)
    finally:
        helpers.set_thread_count(before)


# --- the kernel profile's families for fused tails ----------------------------------------------------


@pytest.mark.parametrize("family", ["lookup", "gated"])
def test_the_kernel_profile_times_a_fused_tail_as_one_step(family: str) -> None:
    """A lookup or gated sample is the plan's fused step: its class is the fused step's, and its time
    the whole step (the plan's hooks report it shared by the ops it runs)."""
    from hetero.cost.kernel_estimate import fused_ops
    from hetero.cost.kernel_profile import time_config
    from hetero.cost.kernel_space import build_sample, draw_config

    device = CpuDevice(INFO)
    try:
        rng = np.random.default_rng(3)
        config = draw_config(family, "int8", rng)
        graph, op = build_sample(config, np.random.default_rng(4))
        assert op.type == "QuantizeLinear" and fused_ops(device, graph, op) == len(list(graph.ops_in_order())) - 1
        sample = time_config(device, config, rng)
        assert sample is not None and sample.seconds > 0
        assert f"_{family}_step" in sample.kernel_class
    finally:
        device.close()


class _OneSecondPerStep:
    """A predictor that knows only the fused steps' classes: one second each."""

    def covers(self, kernel_class: str) -> bool:
        return "_lookup_step" in kernel_class or "_gated_step" in kernel_class

    def predict(self, kernel_class: str, features) -> float | None:
        return 1.0 if self.covers(kernel_class) else None


def test_a_kernel_estimate_shares_a_fused_step_over_its_ops(quantized) -> None:
    from hetero.cost.kernel_estimate import GraphKernelCost

    _, graph = quantized
    cost = GraphKernelCost(graph, "cpu", _OneSecondPerStep())
    groups: dict[str, list[str]] = {}
    for name, (anchor, _) in cost.fused.items():
        groups.setdefault(anchor, []).append(name)
    assert len(groups) == 6
    for anchor, names in groups.items():
        assert anchor in names and all(cost.covers(n) for n in names)
        assert sum(cost.kernel_s(n) for n in names) == pytest.approx(1.0)
    unfused = [op.name for op in graph.ops_in_order() if op.name not in cost.fused]
    assert unfused and not any(cost.covers(n) for n in unfused)


# --- QLinearConcat through tables ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [TensorProto.UINT8, TensorProto.INT8])
def test_a_concat_of_wide_and_narrow_parts_is_exact_on_one_and_two_threads(dtype: int) -> None:
    """Parts of 64, 100 and 3 channels (64-byte blocks and byte tails), one already in the output's
    scale (copied through the identity table) and two requantized: equal to the reference and
    onnxruntime."""
    widths, scales = (64, 100, 3), (0.05, 0.02, 0.11)
    out_scale = 0.05
    zero = 3 if dtype == TensorProto.INT8 else 130
    nodes, inits, inputs = [], [], []
    for k, (width, scale) in enumerate(zip(widths, scales)):
        inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, (2, width, 9, 11)))
        inits += [*_q_nodes(f"p{k}", dtype, scale, zero if k == 0 else zero - 1)]
        nodes += [helper.make_node("QuantizeLinear", [f"x{k}", f"p{k}_s", f"p{k}_z"], [f"q{k}"]),
                  helper.make_node("DequantizeLinear", [f"q{k}", f"p{k}_s", f"p{k}_z"], [f"d{k}"])]
    inits += _q_nodes("o", dtype, out_scale, zero)
    nodes += [helper.make_node("Concat", [f"d{k}" for k in range(3)], ["c"], axis=1),
              helper.make_node("QuantizeLinear", ["c", "o_s", "o_z"], ["y"])]
    graph_proto = helper.make_graph(nodes, "concat", inputs, [helper.make_tensor_value_info("y", dtype, (2, 167, 9, 11))], inits)
    model = helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)])
    graph = lower_qdq(import_onnx(model))
    assert "QLinearConcat" in {op.type for op in graph.ops_in_order()}
    rng = np.random.default_rng(6)
    feeds_ = {f"x{k}": (rng.standard_normal((2, w, 9, 11)) * 3).astype(np.float32) for k, w in enumerate(widths)}
    want = run_reference(graph, feeds_)["y"]
    np.testing.assert_array_equal(want, session(model).run(None, feeds_)[0])
    for threads in (1, 2):
        device = CpuDevice(INFO, threads=threads)
        try:
            assert any("(QLinearConcat) nhwc" in line for line in device.plan_for(graph).describe())
            for _ in range(3):
                np.testing.assert_array_equal(run_on_device(graph, device, feeds_)["y"], want)
        finally:
            device.close()


@pytest.mark.parametrize("widths", [(1, 17, 63), (64, 65, 130, 8), (32, 32, 32, 32)])
def test_the_concat_kernel_at_every_width_on_one_and_two_threads(widths) -> None:
    rng = np.random.default_rng(sum(widths))
    pixels = 1000
    parts = [rng.integers(0, 256, (pixels, w)).astype(np.uint8) for w in widths]
    tables = rng.integers(0, 256, (len(widths), 256)).astype(np.uint8)
    want = np.concatenate([t[p] for t, p in zip(tables, parts)], axis=1)
    ptrs = np.array([p.ctypes.data for p in parts], np.int64)
    args = (ptrs, np.array(widths, np.int64), np.cumsum((0,) + widths[:-1]).astype(np.int64), tables)
    before = helpers.thread_count()
    try:
        for threads in (1, 2):
            helpers.set_thread_count(threads)
            out = np.zeros((pixels, sum(widths)), np.uint8)
            ks.run_items(kt.concat_part, args + (out,), -(-pixels // kt.CONCAT_PIXELS))
            np.testing.assert_array_equal(out, want)
    finally:
        helpers.set_thread_count(before)
