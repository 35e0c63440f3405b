"""Compiled cpu plans (hetero.backends.cpu.plan): channels-last int8 graphs, bit for bit.

Whole graphs run through ``run_on_device`` (the plan) and must equal the numpy int8 reference
exactly, and onnxruntime on the same QDQ model; single QLinearConv ops cover each conv path
(implicit GEMM, unfolded stem, im2row, pointwise, grouped, depthwise, row sums for weight zero
points) with int8 and uint8 activations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hetero.backends.cpu.device import CpuDevice
from hetero.backends.cpu.plan import CpuPlan
from hetero.backends.discovery import DeviceInfo
from hetero.exec.executor import run_on_device, run_reference
from hetero.ir.graph import Graph, TensorSpec, make_op
from hetero.ir.onnx_import import import_onnx
from hetero.ir.synth import CnnBuilder
from hetero.quant.lowering import lower_qdq
from hetero.quant.qdq import quantize_model

INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)


@pytest.fixture(scope="module")
def dev() -> CpuDevice:
    device = CpuDevice(INFO)
    yield device
    device.close()


# --- a CNN nobody tuned for -----------------------------------------------------------------


def unseen_cnn() -> onnx.ModelProto:
    """Stem 7x7/2, max pool, 1x1 / 3x3 / 5x5 branches and a concat, grouped 3x3, channel shuffle,
    depthwise 3x3 and 5x5/2, a dilated 3x3, residual adds, average pool, global pool, Gemm."""
    b = CnnBuilder(3)
    x = b.conv("x", 3, 16, 7, stride=2)  # 48 -> 24: the unfolded stem
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 12x12
    cat = b.node("Concat", [b.conv(x, 16, 16, 1), b.conv(x, 16, 16, 3), b.conv(x, 16, 8, 5)], axis=1)
    y = b.conv(cat, 40, 24, 1)
    y = b.conv(y, 24, 24, 3, group=4)
    shuffled = b.node("Reshape", [y, b.const(np.array([1, 4, 6, 12, 12], np.int64))])
    shuffled = b.node("Transpose", [shuffled], perm=[0, 2, 1, 3, 4])
    y = b.node("Reshape", [shuffled, b.const(np.array([1, 24, 12, 12], np.int64))])
    y = b.node("Add", [y, b.conv(y, 24, 24, 3, group=24)])  # residual around a depthwise 3x3
    y = b.conv(y, 24, 48, 3, dilation=2)
    y = b.node("Add", [y, b.conv(y, 48, 48, 1, relu=False)])
    y = b.node("AveragePool", [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    y = b.conv(y, 48, 48, 5, stride=2, group=48)  # depthwise 5x5 / 2: 6x6
    y = b.conv(y, 48, 64, 3, stride=1)  # implicit GEMM on a 6-wide row
    return b.classifier("unseen", y, 64, 10, (1, 3, 48, 48))


@pytest.fixture(scope="module", params=["uint8", "int8"])
def unseen(request: pytest.FixtureRequest) -> tuple[onnx.ModelProto, Graph]:
    graph = import_onnx(unseen_cnn())
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((1, 3, 48, 48)).astype(np.float32)} for _ in range(4)]
    qdq = quantize_model(graph, calibration, activation_dtype=request.param)
    return qdq, lower_qdq(import_onnx(qdq))


def test_unseen_cnn_equals_reference_and_onnxruntime(dev: CpuDevice, unseen: tuple[onnx.ModelProto, Graph]) -> None:
    qdq, graph = unseen
    types = {op.type for op in graph.ops_in_order()}
    assert {"QLinearConv", "QLinearConcat", "QLinearAdd", "MaxPool", "QLinearAveragePool"} <= types
    options = ort.SessionOptions()  # int8 activations: fused into QLinear ops as hetero lowers them (lower_qdq's
    options.add_session_config_entry("session.qdqisint8allowed", "1")  # int8_allowed); by default x86-64
    # onnxruntime retypes them to uint8 and leaves some Convs in float32, whose sums round by its kernel's order
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 48, 48)).astype(np.float32)}
        got = run_on_device(graph, dev, feeds)
        want = run_reference(graph, feeds)
        name = graph.outputs[0].name
        np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_array_equal(got[name], session.run(None, feeds)[0])


def test_unseen_cnn_plan_runs_channels_last(dev: CpuDevice, unseen: tuple[onnx.ModelProto, Graph]) -> None:
    """No layout changes inside the plan: the channel shuffle (Reshape, Transpose, Reshape) runs
    channels-last too, its 5-D middle stored (N, H, W, A, B)."""
    _, graph = unseen
    plan = dev.plan_for(graph)
    assert plan is dev.plan_for(graph)  # compiled once
    lines = plan.describe()
    assert sum(line.startswith("convert") for line in lines) == 0, "\n".join(lines)
    convs = [line for line in lines if "(QLinearConv)" in line]
    assert convs and all(line.endswith("nhwc -> nhwc") for line in convs)
    shuffle = [line for line in lines if "(Transpose)" in line or "(Reshape)" in line]
    assert len(shuffle) == 3 and all(line.endswith("nhwc -> nhwc") for line in shuffle), "\n".join(lines)


def test_observe_and_timed_runs_see_nchw_outputs(dev: CpuDevice, unseen: tuple[onnx.ModelProto, Graph]) -> None:
    _, graph = unseen
    feeds = {"x": np.random.default_rng(7).standard_normal((1, 3, 48, 48)).astype(np.float32)}
    seen: dict[str, np.ndarray] = {}
    reference: dict[str, np.ndarray] = {}
    run_on_device(graph, dev, feeds, observe=lambda op, outs, t: seen.update(zip(op.outputs, outs)), timed=True)
    from hetero.backends.reference import ReferenceDevice

    run_on_device(graph, ReferenceDevice(), feeds, observe=lambda op, outs, t: reference.update(zip(op.outputs, outs)))
    assert seen.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(np.asarray(seen[name]), value, err_msg=name)


def test_a_timing_hook_that_reads_no_outputs_converts_no_layouts(dev: CpuDevice, unseen: tuple[onnx.ModelProto, Graph]) -> None:
    """A profile's hook only reads the clock: the channels-last outputs are not copied to NCHW for
    it (that copy between two timed ops slowed the next one), and outputs kept past the hook refuse
    to be read (the plan reuses their buffers)."""
    from hetero.backends.cpu.plan import LAYOUT_CONVERSIONS

    _, graph = unseen
    feeds = {"x": np.random.default_rng(7).standard_normal((1, 3, 48, 48)).astype(np.float32)}
    plan = dev.plan_for(graph)
    run_on_device(graph, dev, feeds)
    before = LAYOUT_CONVERSIONS.value
    run_on_device(graph, dev, feeds)
    plain = LAYOUT_CONVERSIONS.value - before
    times: list[float] = []
    kept: list = []
    before = LAYOUT_CONVERSIONS.value
    run_on_device(graph, dev, feeds, observe=lambda op, outs, t: (times.append(t.device_s), kept.append(outs)), timed=True)
    assert LAYOUT_CONVERSIONS.value - before == plain == sum(line.startswith("convert") for line in plan.describe())
    assert len(times) == len(list(graph.ops_in_order())) and all(t > 0 for t in times)
    with pytest.raises(RuntimeError, match="inside the hook"):
        kept[0][0]


def test_unseen_cnn_op_by_op_in_both_layout_modes(dev: CpuDevice, unseen: tuple[onnx.ModelProto, Graph]) -> None:
    """The runtime's per-op paths run the same steps: NCHW in and out of each op (``run``,
    the 5-D shuffle middle converted at each boundary) and layouts kept between ops
    (``run_native``, the shuffle channels-last throughout); both equal the reference."""
    from hetero.exec.executor import walk

    _, graph = unseen
    feeds = {"x": np.random.default_rng(11).standard_normal((1, 3, 48, 48)).astype(np.float32)}
    name = graph.outputs[0].name
    want = run_reference(graph, feeds)[name]
    per_op = walk(graph, {"x": feeds["x"]}, lambda op, xs: dev.run(op, xs), keep=[name])[name]
    native = walk(graph, {"x": dev.upload(feeds["x"])}, lambda op, xs: dev.run_native(op, xs), keep=[name])[name]
    np.testing.assert_array_equal(per_op, want)
    np.testing.assert_array_equal(dev.download(native), want)


@pytest.mark.parametrize("kernel, stride, pad, dilation, ceil", [(3, 2, 1, 1, 0), (2, 2, 0, 1, 0), (3, 1, 1, 1, 0),
                                                                 (3, 2, 0, 1, 1), (3, 1, 2, 2, 0)])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("channels", [24, 48, 64, 136])
def test_max_pool_channels_last(dev: CpuDevice, kernel: int, stride: int, pad: int, dilation: int, ceil: int,
                                dtype: str, channels: int) -> None:
    """Integer MaxPool after a QuantizeLinear (so it runs channels-last), odd sizes and ceil mode;
    channels in 16-, 32- and 64-byte blocks and byte remainders."""
    info = np.iinfo(dtype)
    q_spec = TensorSpec("x", (1, channels, 13, 11), "float32")
    weights = {"s": np.float32(0.05), "z": np.asarray(3, dtype)}
    quant = make_op("q", "QuantizeLinear", ["x", "s", "z"], ["xq"], {}, {"x": q_spec}, weights)
    attrs = {"kernel_shape": (kernel, kernel), "strides": (stride, stride), "pads": (pad,) * 4,
             "dilations": (dilation, dilation), "ceil_mode": ceil}
    pool = make_op("p", "MaxPool", ["xq"], ["y"], attrs, {"xq": quant.output_specs[0]}, {})
    graph = Graph.build([quant, pool], [q_spec], ["y"], name="pool")
    assert any("(MaxPool) nhwc -> nhwc" in line for line in dev.plan_for(graph).describe())
    x = np.random.default_rng(kernel + pad).uniform(info.min * 0.06, info.max * 0.06, q_spec.shape).astype(np.float32)
    np.testing.assert_array_equal(run_on_device(graph, dev, {"x": x})["y"], run_reference(graph, {"x": x})["y"])


def test_plans_keep_freed_activation_memory() -> None:
    """On glibc (this project's Linux targets) the malloc thresholds are set, so freed buffers
    are reused by the next run instead of being faulted in again."""
    import ctypes.util

    from hetero.backends.cpu.memory import keep_freed_memory

    if "libc.so" not in (ctypes.util.find_library("c") or ""):
        pytest.skip("not a glibc system")
    assert keep_freed_memory() is True


# --- every QLinearConv path -------------------------------------------------------------------


def _qconv_graph(rng: np.random.Generator, x_dtype: str, w_dtype: str, cin: int, cout: int, hw: int, k: int,
                 stride: int, group: int, dilation: int, w_zp: str) -> tuple[Graph, np.ndarray]:
    xinfo, winfo = np.iinfo(x_dtype), np.iinfo(w_dtype)
    x = rng.integers(xinfo.min, xinfo.max + 1, (1, cin, hw, hw)).astype(x_dtype)
    w = rng.integers(winfo.min, winfo.max + 1, (cout, cin // group, k, k)).astype(w_dtype)
    if w_zp == "zero":
        zw = np.zeros(cout, w_dtype) if w_dtype == "int8" else np.full(cout, 128, w_dtype)
    elif w_zp == "tensor":
        zw = np.asarray(rng.integers(winfo.min, winfo.max + 1), w_dtype)
    else:
        zw = rng.integers(winfo.min, winfo.max + 1, cout).astype(w_dtype)
    weights = {
        "sx": np.float32(0.02), "zx": np.asarray(rng.integers(xinfo.min, xinfo.max + 1), x_dtype), "w": w,
        "sw": rng.uniform(0.001, 0.01, cout).astype(np.float32), "zw": zw, "sy": np.float32(0.05),
        "zy": np.asarray(rng.integers(xinfo.min, xinfo.max + 1), x_dtype),
        "b": rng.integers(-5000, 5000, cout).astype(np.int32),
    }
    pad = dilation * (k // 2)
    attrs = {"kernel_shape": (k, k), "strides": (stride, stride), "pads": (pad,) * 4, "group": group,
             "dilations": (dilation, dilation)}
    spec = TensorSpec("x", x.shape, x_dtype)
    op = make_op("conv", "QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["y"], attrs, {"x": spec},
                 weights)
    return Graph.build([op], [spec], ["y"], name="qconv"), x


CONV_CASES = [
    # cin, cout, hw, k, stride, group, dilation: the path it takes
    (16, 72, 24, 3, 1, 1, 1),  # implicit GEMM (a 24-wide row), two column panels with an edge
    (16, 64, 12, 3, 2, 1, 1),  # implicit, stride 2
    (16, 32, 12, 1, 2, 1, 1),  # implicit 1x1 / 2, read in place from the unpadded input
    (3, 20, 24, 7, 2, 1, 1),  # stem (3 channels): 21-byte tap rows read in place as 24
    (8, 16, 7, 3, 1, 1, 1),  # 7-wide rows: flat pixel tiles across rows (im2row with weight zero points)
    (32, 40, 10, 1, 1, 1, 1),  # pointwise, the input read in place
    (12, 24, 9, 3, 1, 3, 1),  # grouped
    (16, 32, 12, 3, 1, 1, 2),  # dilated
    (24, 24, 10, 3, 1, 24, 1),  # depthwise 3x3
    (24, 24, 11, 3, 2, 24, 1),  # depthwise 3x3 / 2 (even and odd pixels split)
    (32, 32, 12, 3, 2, 32, 1),  # depthwise 3x3 / 2, even width
    (12, 12, 9, 3, 2, 12, 1),  # depthwise 3x3 / 2, pixels moved as 4-byte words, odd width
    (6, 6, 10, 3, 2, 6, 1),  # depthwise 3x3 / 2, 2-byte words, even width
    (16, 16, 9, 3, 1, 16, 2),  # depthwise 3x3 dilated
    (24, 24, 11, 5, 2, 24, 1),  # depthwise 5x5 / 2
    (64, 64, 9, 3, 2, 64, 1),  # depthwise 3x3 / 2, wide: pixel by pixel, taps read in place
    (128, 128, 7, 3, 1, 128, 1),  # depthwise 3x3, wide: row by row (int16 taps)
    (128, 128, 8, 3, 1, 128, 2),  # depthwise 3x3 dilated, wide: row by row
    (40, 40, 9, 5, 1, 40, 1),  # depthwise 5x5 (kernels_dw: padded copy, 25 taps in registers, by rows at stride 1)
    (48, 48, 6, 5, 1, 48, 2),  # depthwise 5x5 dilated on a 6x6 image: every tap row reads the padding
    (20, 20, 8, 7, 2, 20, 1),  # depthwise 7x7 / 2
    (16, 16, 7, 5, 2, 16, 1),  # depthwise 5x5 / 2, C a multiple of 16 (no spare lanes)
    (6, 6, 9, 5, 2, 6, 1),  # depthwise 5x5 / 2, C < 16: spare lanes spill over several pixels, a row's last into the scratch
    (20, 20, 10, 5, 2, 20, 2),  # depthwise 5x5 / 2 dilated, pixel by pixel over 32 lanes
    (160, 160, 10, 3, 2, 160, 1),  # depthwise 3x3 / 2, wide, even width
    (8, 16, 9, 3, 1, 8, 1),  # depthwise with a channel multiplier (the NCHW kernel)
    (1, 32, 26, 3, 1, 1, 1),  # one input channel (the seed CNN): dense, K padded to 4
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
@pytest.mark.parametrize("dtypes, w_zp", [(("uint8", "int8"), "zero"), (("int8", "int8"), "channel"),
                                          (("uint8", "uint8"), "tensor"), (("int8", "uint8"), "zero")])
def test_qlinear_conv_paths(dev: CpuDevice, case: tuple[int, ...], dtypes: tuple[str, str], w_zp: str) -> None:
    rng = np.random.default_rng(sum(case) + len(w_zp))
    graph, x = _qconv_graph(rng, *dtypes, *case, w_zp=w_zp)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])


DEPTHWISE3_CASES = [
    # channels, hw, stride, dilation: 3x3 depthwise (kernels_nhwc._dw3_row, zero point in the bias)
    (33, 7, 1, 1),  # odd channels, 7x7: rows
    (96, 14, 1, 1),  # 14x14: rows
    (129, 7, 1, 2),  # wide, odd, dilated: rows
    (65, 14, 2, 1),  # wide stride 2: pixel by pixel
    (21, 14, 2, 1),  # stride 2, deinterleaved rows
]


@pytest.mark.parametrize("case", DEPTHWISE3_CASES, ids=[str(c) for c in DEPTHWISE3_CASES])
@pytest.mark.parametrize("dtypes, w_zp", [(("uint8", "uint8"), "channel"), (("int8", "int8"), "channel"),
                                          (("uint8", "int8"), "tensor")])
def test_depthwise3_matches_reference_and_onnxruntime(dev: CpuDevice, case: tuple[int, ...], dtypes: tuple[str, str],
                                                      w_zp: str) -> None:
    c, hw, stride, dilation = case
    rng = np.random.default_rng(c + hw + len(w_zp))
    graph, x = _qconv_graph(rng, *dtypes, c, c, hw, 3, stride, c, dilation, w_zp=w_zp)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    (op,) = graph.ops_in_order()
    node = onnx.helper.make_node("QLinearConv", list(op.inputs), ["y"],
                                 **{k: list(v) if isinstance(v, tuple) else v for k, v in op.attrs.items()})
    inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in op.weights.items()]
    elem = onnx.TensorProto.UINT8 if dtypes[0] == "uint8" else onnx.TensorProto.INT8
    body = onnx.helper.make_graph([node], "dw3", [onnx.helper.make_tensor_value_info("x", elem, list(x.shape))],
                                  [onnx.helper.make_tensor_value_info("y", elem, None)], inits)
    model = onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


def test_plan_rejects_an_op_without_a_kernel(dev: CpuDevice) -> None:
    spec = TensorSpec("x", (4,), "float64")
    op = make_op("s", "Sigmoid", ["x"], ["y"], {}, {"x": spec}, {})
    graph = Graph.build([op], [spec], ["y"], name="f64")
    with pytest.raises(Exception, match="no Sigmoid kernel for node s"):
        dev.plan_for(graph)
    assert isinstance(CpuPlan, type)


def se_cnn() -> onnx.ModelProto:
    """EfficientNet's and MobileNetV3's float tails inside a quantized CNN: Swish (x * Sigmoid(x)),
    HardSwish, and squeeze-and-excitation gates (global pool, 1x1 convs, Sigmoid or HardSigmoid,
    Mul with the block's activation; the second gate multiplying from the left)."""
    b = CnnBuilder(9)
    x = b.conv("x", 3, 24, 3, stride=2, relu=False)  # 32 -> 16
    x = b.node("Mul", [x, b.node("Sigmoid", [x])])  # Swish
    for left, gate_op in ((False, "Sigmoid"), (True, "HardSigmoid")):
        y = b.node("HardSwish", [b.conv(x, 24, 24, 3, group=24, relu=False)])
        gate = b.node(gate_op, [b.conv(b.conv(b.node("GlobalAveragePool", [y]), 24, 8, 1), 8, 24, 1, relu=False)])
        x = b.conv(b.node("Mul", [gate, y] if left else [y, gate]), 24, 24, 1, relu=False)
    return b.classifier("se", x, 24, 10, (1, 3, 32, 32))


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_squeeze_excitation_gates_run_channels_last_and_exact(dev: CpuDevice, activation_dtype: str, fuse: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's DequantizeLinear, float Mul and QuantizeLinear stay channels-last: the only layout
    conversions left are of (N, C, 1, 1) tensors (the same bytes in both layouts); outputs equal the
    reference and onnxruntime. Fused (``tails``): Swish and the two HardSwish are 256-byte lookups,
    the two gates one gated pass each, all channels-last; unfused: each float op runs channels-last."""
    from hetero.backends.cpu import tails

    monkeypatch.setattr(tails, "ENABLED", fuse)
    graph = import_onnx(se_cnn())
    rng = np.random.default_rng(1)
    qdq = quantize_model(graph, [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=activation_dtype)
    lowered = lower_qdq(import_onnx(qdq))
    assert any(op.type == "Mul" for op in lowered.ops_in_order())
    device = CpuDevice(INFO)
    try:
        plan = device.plan_for(lowered)
        lines = plan.describe()
        if fuse:
            fused = [line for line in lines if " fused " in line and line.endswith("-> nhwc")]
            kinds = sorted(line.split(" fused ")[1].split(" ")[0] for line in fused)
            assert kinds == ["gated", "gated", "lookup", "lookup", "lookup"], "\n".join(lines)
            assert not any("(Mul)" in line or "(HardSwish)" in line for line in lines), "\n".join(lines)
        else:
            channels_last = [line.split(" ")[0] for line in lines if line.endswith("-> nhwc") and ("(Mul)" in line or "(HardSwish)" in line or "(Sigmoid)" in line)]
            assert len(channels_last) == 6, "\n".join(lines)  # Swish's Sigmoid and Mul, 2 HardSwish, 2 gate Muls
        converted: list[tuple[int, ...]] = []

        def spy(convert):  # records the shape of every tensor a conversion instruction gets
            return lambda x: (converted.append(x.shape), convert(x))[1]

        plan.instrs = [dataclasses.replace(i, convert=spy(i.convert)) if i.step is None else i for i in plan.instrs]
        from hetero.exec.executor import check_feeds

        plan.run(check_feeds(lowered, {"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}))
    finally:
        device.close()
    pixels = [min(int(np.prod(shape[1:3])), int(np.prod(shape[2:4]))) for shape in converted]  # NHWC or NCHW
    assert converted and max(pixels) == 1, converted  # only pooled (N, 1, 1, C) / (N, C, 1, 1) tensors
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = lowered.outputs[0].name
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)}
        got = run_on_device(lowered, dev, feeds)[name]
        np.testing.assert_array_equal(got, run_reference(lowered, feeds)[name])
        np.testing.assert_array_equal(got, session.run(None, feeds)[0])


@pytest.mark.parametrize("op_type, attrs", [("HardSwish", {}), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
                                            ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}), ("Sigmoid", {})])
def test_activations_give_the_reference_bits(op_type: str, attrs: dict) -> None:
    """The cpu device runs HardSwish/HardSigmoid/Sigmoid where a QuantizeLinear rounds their output
    (MobileNetV3, EfficientNet) because its kernels give the reference's float32 bits (Sigmoid: MLAS's
    logistic with fused multiply-adds, onnxruntime's Sigmoid): checked on a million values of three
    magnitudes, the clamps' edges, signed zeros, subnormals and infinities."""
    from hetero.backends.cpu import kernels as k
    from hetero.ir.ops import elementwise

    rng = np.random.default_rng(3)
    edges = [0.0, -0.0, 3.0, -3.0, 2.5, -2.5, 6.0, -6.0, 18.0, -18.0, 18.5, -19.0, 1e-40, -1e-40, np.inf, -np.inf, 0.49999997, 1e30]
    x = np.concatenate([rng.standard_normal(400_000).astype(np.float32) * s for s in (1, 4, 100)] + [np.asarray(edges, np.float32)])
    out = np.empty_like(x)
    code = {"HardSwish": k.HARD_SWISH, "HardSigmoid": k.HARD_SIGMOID, "Sigmoid": k.SIGMOID}[op_type]
    k.unary_f32(code, x, out, np.float32(attrs.get("alpha", 0)), np.float32(attrs.get("beta", 0)))
    reference = {"HardSwish": elementwise._hard_swish, "HardSigmoid": elementwise._hard_sigmoid, "Sigmoid": elementwise._sigmoid}
    with np.errstate(invalid="ignore"):
        want = reference[op_type](x, attrs)
    np.testing.assert_array_equal(out.view(np.int32), want.view(np.int32))
    assert op_type in CpuDevice.same_bits_as_reference


@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_a_reduce_mean_head_runs_on_the_cpu_with_the_reference_bits(dev: CpuDevice, activation_dtype: str) -> None:
    """torchvision's MnasNet ends in ``x.mean([2, 3])``: a float ReduceMean between a
    DequantizeLinear and a QuantizeLinear. The cpu device runs it with the reference's
    summation (onnxruntime's order), so the model runs there and its integers are the
    reference's and onnxruntime's (it had refused the op: not the reference's float32 bits)."""
    from onnx import TensorProto, helper

    from hetero.ir.synth import OPSET

    b = CnnBuilder(7)
    x = b.conv("x", 3, 24, 3, stride=2)
    x = b.conv(x, 24, 40, 1)
    pooled = b.node("ReduceMean", [x, b.const(np.array([2, 3], np.int64))], keepdims=0)  # opset 18+: axes as input
    w = (b.rng.standard_normal((40, 10)) / np.sqrt(40)).astype(np.float32)
    logits = b.node("Gemm", [pooled, b.const(w), b.const(np.zeros(10, np.float32))])
    graph = helper.make_graph(b.nodes, "mean_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", max(OPSET, 18))])
    model.ir_version = 8
    rng = np.random.default_rng(1)
    qdq = quantize_model(import_onnx(model), [{"x": rng.standard_normal((1, 3, 20, 20)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=activation_dtype)
    lowered = lower_qdq(import_onnx(qdq))
    means = [op for op in lowered.ops_in_order() if op.type == "ReduceMean"]
    assert means and all(dev.supports(op) for op in means)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = lowered.outputs[0].name
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 20, 20)).astype(np.float32)}
        got = run_on_device(lowered, dev, feeds)[name]
        np.testing.assert_array_equal(got, run_reference(lowered, feeds)[name])
        np.testing.assert_array_equal(got, session.run(None, feeds)[0])


def _shuffle_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    from hetero.ir.synth import OPSET

    b = CnnBuilder(9)

    def ints(*v: int) -> str:
        return b.const(np.array(v, np.int64))

    x = b.conv("x", 3, 32, 3, stride=2)  # 10x10
    left = b.node("Slice", [x, ints(0), ints(16), ints(1)])
    right = b.conv(b.node("Slice", [x, ints(16), ints(32), ints(1)]), 16, 16, 1)
    x = b.node("Concat", [left, right], axis=1)
    b.nodes.append(helper.make_node("Split", [x, ints(8, 24)], ["part0", "part1"], axis=1))
    x = b.node("Concat", [b.conv("part1", 24, 8, 3), b.conv("part0", 8, 8, 1)], axis=1)
    x = b.node("Slice", [x, ints(-9, 1), ints(10, -1), ints(2, 3), ints(2, 2)])  # rows 1, 3, .., cols 1, 3, ..
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    w = (b.rng.standard_normal((16, 10)) / 4).astype(np.float32)
    logits = b.node("Gemm", [x, b.const(w), b.const(np.zeros(10, np.float32))])
    graph = helper.make_graph(b.nodes, "shuffle_v2", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_slices_and_splits_run_channels_last_and_exact(dev: CpuDevice, activation_dtype: str) -> None:
    """Channel-half Slices, an unequal Split and a strided spatial Slice run in the plan's
    channels-last layout (no conversion to NCHW and back around them: ShuffleNetV2 had 40), with
    the reference's and onnxruntime's bits."""
    rng = np.random.default_rng(2)
    qdq = quantize_model(import_onnx(_shuffle_model()), [{"x": rng.standard_normal((1, 3, 20, 20)).astype(np.float32)}
                                                         for _ in range(4)], activation_dtype=activation_dtype)
    graph = lower_qdq(import_onnx(qdq))
    assert {"Slice", "Split"} <= {op.type for op in graph.ops_in_order()}
    lines = dev.plan_for(graph).describe()
    moved = [line for line in lines if "(Slice)" in line or "(Split)" in line]
    assert len(moved) == 4 and all("nhwc -> nhwc" in line for line in moved), "\n".join(lines)
    assert sum(line.startswith("convert") for line in lines) == 0, "\n".join(lines)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = graph.outputs[0].name
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 20, 20)).astype(np.float32)}
        got = run_on_device(graph, dev, feeds)[name]
        np.testing.assert_array_equal(got, run_reference(graph, feeds)[name])
        np.testing.assert_array_equal(got, session.run(None, feeds)[0])


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_a_pre_activation_batch_norm_gives_onnxruntimes_integers(activation_dtype: str, fuse: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """DenseNet's BatchNormalization after a Concat cannot fold into a conv: it runs in float
    between a DequantizeLinear and a QuantizeLinear, with onnxruntime's float32 roundings
    (1/sqrt(var + eps) times gamma, beta - mean * that, x * s + b), on the reference and the cpu
    device alike (the cpu device had refused it; the reference, folding in float64, differed
    from onnxruntime in ~30% of its float outputs). The plan runs the three ops as one fused
    affine pass, or (fusion off) channels-last as they are: no layout conversion either way."""
    from onnx import TensorProto, helper

    from hetero.backends.cpu import tails
    from hetero.ir.synth import OPSET

    monkeypatch.setattr(tails, "ENABLED", fuse)

    b = CnnBuilder(4)
    x = b.conv("x", 3, 16, 3, stride=2)
    x = b.node("Concat", [x, b.conv(x, 16, 16, 3)], axis=1)
    gamma, beta = (b.rng.standard_normal(32).astype(np.float32) for _ in range(2))
    mean, var = b.rng.standard_normal(32).astype(np.float32), (b.rng.random(32) + 0.2).astype(np.float32)
    x = b.node("BatchNormalization", [x, b.const(gamma), b.const(beta), b.const(mean), b.const(var)], epsilon=1e-5)
    x = b.conv(b.node("Relu", [x]), 32, 24, 1)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    w = (b.rng.standard_normal((24, 10)) / 5).astype(np.float32)
    logits = b.node("Gemm", [x, b.const(w), b.const(np.zeros(10, np.float32))])
    graph = helper.make_graph(b.nodes, "preact", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 20])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    rng = np.random.default_rng(5)
    qdq = quantize_model(import_onnx(model), [{"x": rng.standard_normal((1, 3, 20, 20)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=activation_dtype)
    lowered = lower_qdq(import_onnx(qdq))
    norms = [op for op in lowered.ops_in_order() if op.type == "BatchNormalization"]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = lowered.outputs[0].name
    dev = CpuDevice(INFO)
    try:
        assert norms and all(dev.supports(op) for op in norms)
        lines = dev.plan_for(lowered).describe()
        assert sum(line.startswith("convert") for line in lines) == 0, "\n".join(lines)
        fused = any("fused affine of DequantizeLinear, BatchNormalization, QuantizeLinear" in line for line in lines)
        assert fused == fuse, "\n".join(lines)
        for seed in range(4):
            feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 20, 20)).astype(np.float32)}
            got = run_on_device(lowered, dev, feeds)[name]
            np.testing.assert_array_equal(got, run_reference(lowered, feeds)[name])
            np.testing.assert_array_equal(got, session.run(None, feeds)[0])
    finally:
        dev.close()


def test_float_batch_norm_has_onnxruntimes_bits() -> None:
    """The reference's float32 BatchNormalization equals onnxruntime's bit for bit."""
    from onnx import TensorProto, helper, numpy_helper

    from hetero.ir.ops.pool import _batch_norm

    rng = np.random.default_rng(0)
    for c, eps in ((64, 1e-5), (7, 1e-3)):
        x = (rng.standard_normal((2, c, 9, 11)) * 3).astype(np.float32)
        params = [rng.standard_normal(c).astype(np.float32) for _ in range(3)] + [(rng.random(c) + 0.05).astype(np.float32)]
        names = ["gamma", "beta", "mean", "var"]
        model = helper.make_model(helper.make_graph(
            [helper.make_node("BatchNormalization", ["x", *names], ["y"], epsilon=eps)], "bn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(a, n) for a, n in zip(params, names)]), opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = _batch_norm([x, *params], {"epsilon": eps})[0]
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize("activation_dtype", ["uint8", "int8"])
def test_a_qlinear_add_of_a_constant_is_one_table_lookup(dev: CpuDevice, activation_dtype: str) -> None:
    """ConvNeXt's Gelu quantizes ``1 + erf(.)``: a QLinearAdd of a tensor and a one-element
    constant. The plan runs it as a 256-entry table of the reference's answers (channels-last,
    no conversion), with the reference's and onnxruntime's bits."""
    from onnx import TensorProto, helper

    from hetero.cost.kernel_estimate import classify_ops
    from hetero.ir.synth import OPSET

    b = CnnBuilder(6)
    x = b.conv("x", 3, 16, 3, relu=False)
    x = b.node("Add", [x, b.const(np.array([1.0], np.float32))])
    x = b.conv(x, 16, 16, 1)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    w = (b.rng.standard_normal((16, 10)) / 4).astype(np.float32)
    logits = b.node("Gemm", [x, b.const(w), b.const(np.zeros(10, np.float32))])
    graph = helper.make_graph(b.nodes, "add_const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    rng = np.random.default_rng(8)
    qdq = quantize_model(import_onnx(model), [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=activation_dtype)
    lowered = lower_qdq(import_onnx(qdq))
    adds = [op for op in lowered.ops_in_order() if op.type == "QLinearAdd"]
    assert adds and all(len(op.activation_inputs) == 1 for op in adds)
    classes = classify_ops(dev, lowered)
    assert all("_qadd_constant" in classes[op.name] for op in adds), classes
    lines = dev.plan_for(lowered).describe()
    assert sum(line.startswith("convert") for line in lines) == 0, "\n".join(lines)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdqisint8allowed", "1")
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = lowered.outputs[0].name
    for seed in range(3):
        feeds = {"x": (np.random.default_rng(seed).standard_normal((1, 3, 12, 12)) * 2).astype(np.float32)}
        got = run_on_device(lowered, dev, feeds)[name]
        np.testing.assert_array_equal(got, run_reference(lowered, feeds)[name])
        np.testing.assert_array_equal(got, session.run(None, feeds)[0])
