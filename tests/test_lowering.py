"""QDQ -> integer lowering: the lowered graph's numpy reference against onnxruntime on the same QDQ model.

Also checks the integer kernels the lowering relies on (QLinearAdd, the average pools) against
onnxruntime's own kernels, exhaustively where that is cheap.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from conftest import SHARED_MODELS, q_params
from hetero.exec.executor import run_reference
from hetero.ir.datasets import calibration_digits, load_digits_28
from hetero.ir.graph import Graph
from hetero.quant.lowering import lower_qdq
from hetero.ir.source import load_onnx
from hetero.ir.onnx_import import import_onnx
from hetero.ir.ops import get as get_op
from hetero.quant.calibrate import calibration_for
from hetero.quant.qdq import quantize_model
from hetero.resources import seed_model_path

IMAGE = (1, 3, 224, 224)
FUSED = ("QLinearConv", "QLinearAdd", "QGemm", "QLinearMatMul", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool")
FLOAT_COMPUTE = ("Conv", "Gemm", "MatMul", "Add", "Concat", "AveragePool", "GlobalAveragePool")

logging.getLogger("root").setLevel(logging.ERROR)  # onnxruntime.quantization warns through the root logger


def session(model: onnx.ModelProto | Path, int8_allowed: bool | None = None, save_to: Path | None = None) -> ort.InferenceSession:
    """A CPU session at the default (all) optimization level with two threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if int8_allowed is not None:
        options.add_session_config_entry("session.qdqisint8allowed", "1" if int8_allowed else "0")
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def output_step(graph: Graph) -> float:
    """The quantization step of the lowered graph's (dequantized) output."""
    op = next(o for o in graph.ops_in_order() if graph.outputs[0].name in o.outputs)
    assert op.type == "DequantizeLinear"
    return float(op.weights[op.inputs[1]].reshape(-1)[0])


def compare(model: onnx.ModelProto | Path, inputs: list[np.ndarray], int8_allowed: bool | None = None) -> tuple[Graph, dict]:
    """Lower the QDQ model and run it against onnxruntime; returns the graph and match statistics."""
    qdq = onnx.load(str(model)) if isinstance(model, Path) else model
    lowered = lower_qdq(import_onnx(qdq), int8_allowed=int8_allowed is not False)
    ort_session = session(qdq, int8_allowed)
    step = output_step(lowered)
    name = lowered.inputs[0].name
    same = total = 0
    worst = 0.0
    top1 = True
    for x in inputs:
        got = run_reference(lowered, {name: x})[lowered.outputs[0].name]
        want = ort_session.run(None, {name: x})[0]
        same += int(np.sum(got == want))
        total += got.size
        worst = max(worst, float(np.abs(got - want).max()) / step)
        top1 &= bool(got.argmax() == want.argmax())
    return lowered, {"identical": same / total, "max_steps": worst, "top1": top1}


def assert_matches(stats: dict, what: str) -> None:
    assert stats["identical"] >= 0.999, f"{what}: only {stats['identical']:.3%} of outputs identical to onnxruntime"
    assert stats["max_steps"] <= 1.0 + 1e-6, f"{what}: outputs differ by {stats['max_steps']:.2f} quantization steps"
    assert stats["top1"], f"{what}: top-1 differs from onnxruntime"


def assert_integer(graph: Graph) -> None:
    """No float compute ops remain, and every interior tensor is 8-bit."""
    types = Counter(op.type for op in graph.ops_in_order())
    assert not set(types) & set(FLOAT_COMPUTE), f"float ops left: {types}"
    assert types["QuantizeLinear"] == len(graph.inputs) and types["DequantizeLinear"] == len(graph.outputs)
    for op in graph.ops_in_order():
        if op.type != "DequantizeLinear":
            assert all(s.dtype in ("uint8", "int8") for s in op.output_specs), f"{op.name} writes {op.output_specs}"


def random_inputs(shape: tuple[int, ...], count: int, seed: int = 100) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


def ort_quantize(source: Path, target: Path, samples: list[np.ndarray], activation: QuantType, per_channel: bool) -> Path:
    """onnxruntime's quantize_static in QDQ format with int8 weights."""

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.samples, None)
            return None if x is None else {"input": x}

    quantize_static(
        str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=activation, weight_type=QuantType.QInt8,
    )
    return target


@pytest.fixture(scope="session")
def ort_shared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """ORT QDQ models of the shared models (pre-processed as onnxruntime advises), built once per session."""
    folder = tmp_path_factory.mktemp("qdq")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            source = SHARED_MODELS / f"{name}.onnx"
            if not source.is_file():
                pytest.skip(f"{source} is missing")
            prepared = folder / f"{name}_prepared.onnx"
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            built[name] = ort_quantize(prepared, folder / f"{name}_qdq.onnx", random_inputs(IMAGE, 4, seed=0), QuantType.QUInt8, True)
        return built[name]

    return get


# ----------------------------------------------------------------------------- the seed CNN


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_seed_cnn_quantized_by_hetero(dtype: str) -> None:
    qdq = quantize_model(import_onnx(onnx.load(str(seed_model_path()))), calibration_digits(64), activation_dtype=dtype)
    lowered, stats = compare(qdq, [x[None] for x in load_digits_28("test")[0][:8]])
    assert_matches(stats, f"seed CNN, hetero {dtype}")
    assert_integer(lowered)
    assert Counter(op.type for op in lowered.ops_in_order()) == Counter(
        {"QuantizeLinear": 1, "QLinearConv": 1, "MaxPool": 1, "Flatten": 1, "QGemm": 2, "DequantizeLinear": 1}
    )


@pytest.mark.parametrize(
    "activation,per_channel",
    [(QuantType.QUInt8, True), (QuantType.QUInt8, False), (QuantType.QInt8, True), (QuantType.QInt8, False)],
    ids=["u8-per-channel", "u8-per-tensor", "s8-per-channel", "s8-per-tensor"],
)
def test_seed_cnn_quantized_by_onnxruntime(tmp_path: Path, activation: QuantType, per_channel: bool) -> None:
    samples = list(calibration_digits(16)[:, None])
    qdq = ort_quantize(seed_model_path(), tmp_path / "seed_qdq.onnx", samples, activation, per_channel)
    lowered, stats = compare(qdq, [x[None] for x in load_digits_28("test")[0][:8]])
    assert_matches(stats, f"seed CNN, onnxruntime {activation.name} per_channel={per_channel}")
    assert_integer(lowered)


# ----------------------------------------------------------------------------- real models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "squeezenet1_1"])
def test_shared_models_quantized_by_onnxruntime(ort_shared: Callable[[str], Path], name: str) -> None:
    lowered, stats = compare(ort_shared(name), random_inputs(IMAGE, 2))
    assert_matches(stats, name)
    assert_integer(lowered)


@pytest.mark.slow
@pytest.mark.parametrize("spec,dtype", [("builtin:resnet18", "uint8"), ("builtin:mobilenetv2", "uint8"), ("builtin:resnet18", "int8")])
def test_builtins_quantized_by_hetero(spec: str, dtype: str) -> None:
    model = load_onnx(spec)
    graph = import_onnx(model)
    qdq = quantize_model(graph, calibration_for(spec, graph, n=2), activation_dtype=dtype)
    # int8 activations: onnxruntime fuses them only with session.qdqisint8allowed (its ARM default)
    lowered, stats = compare(qdq, random_inputs(IMAGE, 2), int8_allowed=True if dtype == "int8" else None)
    assert_matches(stats, f"{spec} {dtype}")
    assert_integer(lowered)


def test_seed_cnn_random_quantized_by_hetero() -> None:
    qdq = quantize_model(import_onnx(load_onnx("builtin:seed-cnn-random")), calibration_digits(8), method="percentile")
    lowered, stats = compare(qdq, random_inputs((1, 1, 28, 28), 3))
    assert_matches(stats, "seed-cnn-random")
    assert_integer(lowered)


@pytest.mark.slow
def test_x86_int8_fusion_decisions_match_onnxruntime(tmp_path: Path) -> None:
    """int8_allowed=False fuses exactly the groups x86 onnxruntime fuses by default."""
    model = load_onnx("builtin:resnet18")
    graph = import_onnx(model)
    qdq = quantize_model(graph, calibration_for("builtin:resnet18", graph, n=1), activation_dtype="int8")
    lowered = lower_qdq(import_onnx(qdq), int8_allowed=False)
    session(qdq, save_to=tmp_path / "optimized.onnx")
    theirs = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    ours = Counter(op.type for op in lowered.ops_in_order())
    for op_type in FUSED + FLOAT_COMPUTE:
        assert ours[op_type] == theirs[op_type], f"{op_type}: hetero {ours[op_type]}, onnxruntime {theirs[op_type]}"
    assert 0 < ours["Conv"] < 20  # some fall back to float: int8 Q/DQ pairs with two readers stay int8


# ----------------------------------------------------------------------------- every pattern on one graph


def pattern_model() -> onnx.ModelProto:
    """Conv-Relu, AveragePool, Conv-Clip, Split, Concat, MaxPool, Transpose, Reshape, MatMul, Add, ReduceMean, Gemm."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int) -> str:
        return const(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))

    make = helper.make_node
    nodes = [
        make("Conv", ["input", weight("w1", 8, 3, 3, 3), weight("b1", 8)], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        make("Relu", ["c1"], ["r1"], name="relu1"),
        make("AveragePool", ["r1"], ["p1"], name="avgpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        make("Conv", ["p1", weight("w2", 8, 8, 3, 3)], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        make("Clip", ["c2", const("low", np.float32(0)), const("high", np.float32(6))], ["r2"], name="relu6"),
        make("Split", ["r2", const("sizes", np.array([3, 5], np.int64))], ["s1", "s2"], name="split", axis=1),
        make("Concat", ["s2", "s1"], ["cat"], name="concat", axis=1),
        make("MaxPool", ["cat"], ["mp"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        make("Transpose", ["mp"], ["tr"], name="transpose", perm=[0, 2, 3, 1]),
        make("Reshape", ["tr", const("shape", np.array([1, 16, 8], np.int64))], ["rs"], name="reshape"),
        make("MatMul", ["rs", weight("m1", 8, 12)], ["mm"], name="matmul1"),
        make("Add", ["mm", weight("a1", 12)], ["ad"], name="add"),
        make("MatMul", ["ad", weight("m2", 12, 10)], ["mm2"], name="matmul2"),
        make("ReduceMean", ["mm2"], ["rm"], name="mean", axes=[1], keepdims=0),
        make("Gemm", ["rm", weight("g", 10, 10), weight("gb", 10)], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "patterns", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


PATTERN_OPS = {"QLinearConv": 2, "QLinearAveragePool": 1, "Split": 1, "QLinearConcat": 1, "MaxPool": 1, "Transpose": 1,
               "Reshape": 1, "QLinearMatMul": 2, "QLinearAdd": 1, "ReduceMean": 1, "QGemm": 1}


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_every_pattern_quantized_by_hetero(dtype: str) -> None:
    inputs = random_inputs((1, 3, 16, 16), 4)
    qdq = quantize_model(import_onnx(pattern_model()), inputs[:2], activation_dtype=dtype)
    onnx.checker.check_model(qdq, full_check=True)
    lowered, stats = compare(qdq, inputs, int8_allowed=True)
    assert_matches(stats, f"patterns, hetero {dtype}")
    types = Counter(op.type for op in lowered.ops_in_order())
    assert all(types[k] == v for k, v in PATTERN_OPS.items()), types
    assert not {"Conv", "Relu", "Clip", "MatMul", "Add", "Gemm", "Concat", "AveragePool"} & set(types)
    # the only float tensors left are the ReduceMean's (it has no integer form) and the graph output
    floats = {s.name for op in lowered.ops_in_order() for s in op.output_specs if s.dtype == "float32"}
    assert floats == {"logits", *[o for op in lowered.ops_in_order() if op.type == "ReduceMean" for o in op.outputs],
                      *[o for op in lowered.ops_in_order() if op.type == "DequantizeLinear" for o in op.outputs]}


@pytest.mark.parametrize("activation", [QuantType.QUInt8, QuantType.QInt8], ids=["u8", "s8"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_every_pattern_quantized_by_onnxruntime(tmp_path: Path, activation: QuantType, per_channel: bool) -> None:
    source = tmp_path / "patterns.onnx"
    onnx.save(pattern_model(), str(source))
    inputs = random_inputs((1, 3, 16, 16), 4)
    qdq = ort_quantize(source, tmp_path / "patterns_qdq.onnx", inputs[:2], activation, per_channel)
    lowered, stats = compare(qdq, inputs, int8_allowed=True)
    assert_matches(stats, f"patterns, onnxruntime {activation.name} per_channel={per_channel}")
    types = Counter(op.type for op in lowered.ops_in_order())
    assert all(types[k] == v for k, v in PATTERN_OPS.items()), types


# ----------------------------------------------------------------------------- single patterns


def qdq_conv_model(activation: str, zero_point: int, float_bias: bool = False) -> onnx.ModelProto:
    """Q -> DQ -> Conv -> activation -> Q -> DQ, hand-written with uint8 activations and int8 weights."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.uint8(128), "z"),
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(4, 0.01, np.float32), "sw"),
        numpy_helper.from_array(np.zeros(4, np.int8), "zw"), numpy_helper.from_array(np.float32(0.05), "sy"),
        numpy_helper.from_array(np.uint8(zero_point), "zy"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wf"], name="dq_w", axis=0),
    ]
    if float_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "b"))
    else:
        inits += [numpy_helper.from_array(rng.integers(-500, 500, 4).astype(np.int32), "bq"),
                  numpy_helper.from_array(np.full(4, 0.0002, np.float32), "sb"), numpy_helper.from_array(np.zeros(4, np.int32), "zb")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["b"], name="dq_b", axis=0))
    nodes.append(helper.make_node("Conv", ["x", "wf", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]))
    last = "conv"
    if activation:
        nodes.append(helper.make_node(activation, ["conv"], ["act"], name="act"))
        last = "act"
    nodes += [helper.make_node("QuantizeLinear", [last, "sy", "zy"], ["yq"], name="q_out"),
              helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["logits"], name="dq_out")]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_relu_made_redundant_by_the_q_is_fused() -> None:
    lowered, stats = compare(qdq_conv_model("Relu", zero_point=0), random_inputs((1, 2, 6, 6), 3))
    assert_matches(stats, "redundant Relu")
    conv = next(op for op in lowered.ops_in_order() if op.type == "QLinearConv")
    assert (conv.attrs["qmin"], conv.attrs["qmax"]) == (0, 255)
    assert_integer(lowered)


def test_float_bias_is_quantized_as_onnxruntime_does() -> None:
    lowered, stats = compare(qdq_conv_model("", 128, float_bias=True), random_inputs((1, 2, 6, 6), 3))
    assert_matches(stats, "float bias")
    assert_integer(lowered)


def test_relu_not_implied_by_the_q_stays_float(tmp_path: Path) -> None:
    model = qdq_conv_model("Relu", zero_point=100)  # the Q keeps negative values, so the Relu matters
    lowered = lower_qdq(import_onnx(model))
    session(model, save_to=tmp_path / "optimized.onnx")
    theirs = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    ours = Counter(op.type for op in lowered.ops_in_order())
    assert ours["QLinearConv"] == theirs["QLinearConv"] == 0 and ours["Conv"] == ours["Relu"] == 1
    x = random_inputs((1, 2, 6, 6), 1)[0]
    got, want = run_reference(lowered, {"input": x})["logits"], session(model).run(None, {"input": x})[0]
    assert np.abs(got - want).max() <= 0.05 + 1e-6  # both float: at most one step where rounding differs


def test_a_graph_without_qdq_is_unchanged() -> None:
    graph = import_onnx(onnx.load(str(seed_model_path())))
    lowered = lower_qdq(graph)
    assert [op.type for op in lowered.ops_in_order()] == [op.type for op in graph.ops_in_order()]


# ----------------------------------------------------------------------------- integer kernels vs onnxruntime

_TYPES = {np.dtype("uint8"): TensorProto.UINT8, np.dtype("int8"): TensorProto.INT8}


def ort_kernel(op_type: str, domain: str, names: list[str], acts: dict, consts: dict, attrs: dict | None = None) -> np.ndarray:
    """One onnxruntime kernel, unoptimized."""
    out_type = _TYPES[np.asarray(consts[names[-1] if op_type != "QLinearConcat" else names[1]]).dtype]
    node = helper.make_node(op_type, names, ["y"], domain=domain, **(attrs or {}))
    graph = helper.make_graph(
        [node], "kernel", [helper.make_tensor_value_info(n, _TYPES[a.dtype], list(a.shape)) for n, a in acts.items()],
        [helper.make_tensor_value_info("y", out_type, None)],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, acts)[0]


def hetero_kernel(op_type: str, names: list[str], acts: dict, consts: dict, attrs: dict | None = None) -> np.ndarray:
    values = {**acts, **consts}
    return get_op(op_type).reference([values[n] for n in names], attrs or {})[0]


@pytest.mark.parametrize("dtype", [np.dtype("uint8"), np.dtype("int8")])
def test_qlinear_add_matches_onnxruntime_on_every_input_pair(dtype: np.dtype) -> None:
    """All 256 x 256 operand pairs, so the float32 ties that fused multiply-adds decide are all hit."""
    info = np.iinfo(dtype)
    grid = np.arange(info.min, info.max + 1)
    a, b = (g.astype(dtype).reshape(1, -1) for g in np.meshgrid(grid, grid))
    names = ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"]
    rng = np.random.default_rng(7)
    for _ in range(4):
        (sa, za), (sb, zb), (sy, zy) = (q_params(rng, dtype) for _ in range(3))
        consts = {"sa": sa, "za": za, "sb": sb, "zb": zb, "sy": sy, "zy": zy}
        got = hetero_kernel("QLinearAdd", names, {"a": a, "b": b}, consts)
        np.testing.assert_array_equal(got, ort_kernel("QLinearAdd", "com.microsoft", names, {"a": a, "b": b}, consts))
        for b_shape in [(1, 1), (1,)]:  # b broadcast: folded into the fixed part first
            scalar = {"a": a, "b": b[:, :1].reshape(b_shape)}
            np.testing.assert_array_equal(hetero_kernel("QLinearAdd", names, scalar, consts),
                                          ort_kernel("QLinearAdd", "com.microsoft", names, scalar, consts))
        swapped = {"a": a[:, :1], "b": b}  # a broadcast
        np.testing.assert_array_equal(hetero_kernel("QLinearAdd", names, swapped, consts),
                                      ort_kernel("QLinearAdd", "com.microsoft", names, swapped, consts))


@pytest.mark.parametrize(
    "attrs",
    [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
     dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
     dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
     dict(kernel_shape=[9, 9]),
     None],
    ids=["pads", "count-include-pad", "ceil-mode", "whole-image", "global"],
)
@pytest.mark.parametrize("dtype", [np.dtype("uint8"), np.dtype("int8")])
def test_qlinear_average_pools_match_onnxruntime(dtype: np.dtype, attrs: dict | None) -> None:
    rng = np.random.default_rng(11)
    op_type = "QLinearGlobalAveragePool" if attrs is None else "QLinearAveragePool"
    names = ["x", "sx", "zx", "sy", "zy"]
    for trial in range(5):
        info = np.iinfo(dtype)
        x = {"x": rng.integers(info.min, info.max + 1, (1, 16, 9, 9)).astype(dtype)}
        (sx, zx), (sy, zy) = q_params(rng, dtype), q_params(rng, dtype)
        consts = {"sx": sx, "zx": zx, "sy": sx if trial % 2 else sy, "zy": zx if trial % 2 else zy}
        ort_attrs = {"channels_last": 0} if attrs is None else attrs
        np.testing.assert_array_equal(hetero_kernel(op_type, names, x, consts, attrs),
                                      ort_kernel(op_type, "com.microsoft", names, x, consts, ort_attrs))
