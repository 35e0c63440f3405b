"""CPU (numba) backend: each kernel against the numpy reference on the same Op.

Integer kernels must equal the reference bit for bit; float32 kernels within 1e-4 relative
L2; whole builtin models through run_on_device within 1e-4; throttle really slows ops.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from hetero.backends import open_device
from hetero.ir import ops
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.reference import reference_op
from hetero.exec.executor import run_reference
from hetero.backends.discovery import DeviceInfo
from hetero.errors import DeviceError
from hetero.exec.executor import run_on_device
from hetero.ir.graph import Op, TensorSpec, make_op
from hetero.quant.lowering import lower_qdq
from hetero.ir.source import load_graph, load_onnx
from hetero.ir.onnx_import import import_onnx
from hetero.quant.calibrate import calibration_for
from hetero.quant.qdq import quantize_model
from transformer_cases import Case, cases_by_kind, check_case, large_cases

RESNET18 = Path(__file__).resolve().parents[2] / "shared" / "models" / "resnet18.onnx"
REL_L2 = 1e-4
Q8 = ("int8", "uint8")
CASES = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)


@pytest.fixture(scope="module")
def dev() -> Iterator[CpuDevice]:
    device = CpuDevice(INFO)
    yield device
    device.close()


def build(op_type: str, activations: Mapping[str, np.ndarray], weights: Mapping[str, Any] | None = None,
          order: Sequence[str] | None = None, outputs: int = 1, **attrs: Any) -> tuple[Op, list[np.ndarray]]:
    """One op over named activations and constants; ``order`` lists its inputs ("" when absent)."""
    weights = {name: np.asarray(v) for name, v in (weights or {}).items()}
    names = list(order) if order is not None else [*activations, *weights]
    specs = {name: TensorSpec(name, tuple(v.shape), str(v.dtype)) for name, v in activations.items()}
    op = make_op("op", op_type, names, [f"out{i}" for i in range(outputs)], attrs, specs, weights)
    return op, [activations[n] for n in names if n in activations]


def check(dev: CpuDevice, op: Op, values: Sequence[np.ndarray]) -> None:
    """Outputs equal the reference: integers bit for bit, floats within REL_L2."""
    assert dev.supports(op), dev.why_not(op)
    got = dev.run(op, [dev.upload(v) for v in values])
    want = reference_op(op, values)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = dev.download(g)
        assert (g.shape, g.dtype) == (w.shape, w.dtype), f"{op.type}: {g.shape} {g.dtype} != {w.shape} {w.dtype}"
        if np.issubdtype(w.dtype, np.floating):
            norm = max(float(np.linalg.norm(w.astype(np.float64))), 1e-30)
            err = float(np.linalg.norm((g.astype(np.float64) - w).ravel())) / norm
            assert err <= REL_L2, f"{op.type}: relative L2 error {err:.3g}"
        else:
            bad = np.flatnonzero(g.ravel() != w.ravel())
            first = f"{g.ravel()[bad[0]]} != {w.ravel()[bad[0]]}" if bad.size else ""
            assert bad.size == 0, f"{op.type}: {bad.size}/{w.size} differ, first {first}"


def qtensor(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Random integers of a type, an eighth of them at the two ends of its range."""
    info = np.iinfo(dtype)
    flat = rng.integers(info.min, info.max + 1, size=int(np.prod(shape, dtype=np.int64)))
    edge = rng.random(flat.size) < 0.125
    flat[edge] = rng.choice([info.min, info.max], size=int(edge.sum()))
    return flat.reshape(shape).astype(dtype)


def zero_point(rng: np.random.Generator, dtype: str, size: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max + 1, size=size), dtype)


def scale(rng: np.random.Generator, low: float, high: float, size: int | None = None) -> np.ndarray:
    return np.asarray(rng.uniform(low, high, size=size), np.float32)


def clamp(rng: np.random.Generator, dtype: str, fused: bool) -> dict[str, int]:
    """A fused Relu/Clip as qmin/qmax attributes, or nothing."""
    if not fused:
        return {}
    info = np.iinfo(dtype)
    low = int(rng.integers(info.min, info.max // 2))
    return {"qmin": low, "qmax": int(rng.integers(low, info.max + 1))}


# the op set the numba backend covers; ops registered later (hetero/ops/unary.py, ...) have only
# the numpy reference and are a capability gap on cpu
CPU_OPS = {
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Conv", "DequantizeLinear", "Div",
    "Flatten", "Gather", "Gemm", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "MatMul",
    "MaxPool", "Mul", "QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearConcat", "QLinearConv",
    "QLinearGlobalAveragePool", "QLinearMatMul", "QuantizeLinear", "ReduceMean", "Relu", "Reshape", "Sigmoid",
    "Slice", "Softmax", "Split", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
}


def test_every_cpu_op_has_a_kernel() -> None:
    assert CPU_OPS <= set(CpuDevice.kernels)


def test_op_without_a_kernel_is_a_capability_gap() -> None:
    missing = sorted(set(ops.supported_ops()) - set(CpuDevice.kernels))
    assert "Asinh" in missing
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    asinh = make_op("asinh_1", "Asinh", ["x"], ["y"], {}, {"x": TensorSpec("x", (2, 3), "float32")}, {})
    device = CpuDevice(DeviceInfo("cpu", "cpu", "test cpu", "numba", 1, 0))
    assert not device.supports(asinh)
    from hetero.ir.graph import Graph

    graph = Graph.build([asinh], [TensorSpec("x", (2, 3), "float32")], ["y"], name="asinh")
    with pytest.raises(DeviceError, match="no kernel for Asinh.*asinh_1"):
        run_on_device(graph, device, {"x": x})


# --- integer kernels, bit for bit -----------------------------------------------------------------


@st.composite
def qconv_cases(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "pointwise"]))
    group = {"dense": 1, "pointwise": 1, "grouped": draw(st.integers(2, 3)), "depthwise": draw(st.integers(1, 8))}[kind]
    cg = 1 if kind == "depthwise" else draw(st.integers(1, 8))
    mg = draw(st.integers(1, 3)) if kind == "depthwise" else draw(st.integers(1, 70))
    k = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 4)), draw(st.integers(1, 3)))
    return dict(
        n=draw(st.integers(1, 2)), c=cg * group, m=mg * group, group=group, k=k,
        hw=(draw(st.integers(1, 11)), draw(st.integers(1, 11))),
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 2))),
        dilations=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        pads=tuple(draw(st.integers(0, 2)) for _ in range(4)),
        auto_pad=draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])),
        per_channel=draw(st.booleans()), dtypes=tuple(draw(st.sampled_from(Q8)) for _ in range(3)),
        bias=draw(st.booleans()), tie=draw(st.booleans()), fused=draw(st.booleans()), seed=draw(st.integers(0, 2**31)),
    )


@CASES
@given(case=qconv_cases())
def test_qlinear_conv(dev: CpuDevice, case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    xd, wd, yd = case["dtypes"]
    m, (kh, kw), (dh, dw) = case["m"], case["k"], case["dilations"]
    h, w = case["hw"]
    if case["auto_pad"] in ("NOTSET", "VALID"):
        pads = case["pads"] if case["auto_pad"] == "NOTSET" else (0,) * 4
        assume(h + pads[0] + pads[2] >= dh * (kh - 1) + 1 and w + pads[1] + pads[3] >= dw * (kw - 1) + 1)
    channels = m if case["per_channel"] else None
    x = qtensor(rng, (case["n"], case["c"], h, w), xd)
    weights = {
        "sx": np.float32(1.0 if case["tie"] else rng.uniform(0.005, 0.05)), "zx": zero_point(rng, xd),
        "w": qtensor(rng, (m, case["c"] // case["group"], kh, kw), wd),
        "sw": np.full(channels or (), 0.25, np.float32) if case["tie"] else scale(rng, 0.002, 0.05, channels),
        "zw": zero_point(rng, wd, channels),
        "sy": np.float32(2.0 if case["tie"] else rng.uniform(0.05, 2.0)), "zy": zero_point(rng, yd),
    }
    order = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"]
    if case["bias"]:
        weights["b"] = rng.integers(-(2**15), 2**15, size=m).astype(np.int32)
        order.append("b")
    attrs = dict(group=case["group"], strides=case["strides"], dilations=case["dilations"], auto_pad=case["auto_pad"])
    if case["auto_pad"] == "NOTSET":
        attrs["pads"] = case["pads"]
    op, values = build("QLinearConv", {"x": x}, weights, order, **attrs, **clamp(rng, yd, case["fused"]))
    check(dev, op, values)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(case=qconv_cases(), wide=st.integers(1, 3))
def test_qlinear_conv_many(dev: CpuDevice, case: dict[str, Any], wide: int) -> None:
    """More and wider convolutions (several GEMM panels per group)."""
    case["m"] *= wide
    case["hw"] = (case["hw"][0] + 6, case["hw"][1] + 4)
    test_qlinear_conv.hypothesis.inner_test(dev, case)


def test_qlinear_conv_resnet_layer(dev: CpuDevice) -> None:
    """A full-size 3x3 layer: many GEMM panels, per-channel uint8 weights, saturation."""
    rng = np.random.default_rng(7)
    weights = {"sx": np.float32(0.02), "zx": np.uint8(131), "w": qtensor(rng, (96, 64, 3, 3), "int8"),
               "sw": scale(rng, 0.001, 0.01, 96), "zw": np.zeros(96, np.int8), "sy": np.float32(0.05),
               "zy": np.int8(-3), "b": rng.integers(-5000, 5000, 96).astype(np.int32)}
    x = qtensor(rng, (1, 64, 28, 28), "uint8")
    order = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"]
    op, values = build("QLinearConv", {"x": x}, weights, order, pads=(1, 1, 1, 1))
    check(dev, op, values)


@CASES
@given(m=st.integers(1, 40), k=st.integers(1, 80), n=st.integers(1, 140), dtypes=st.tuples(*[st.sampled_from(Q8)] * 3),
       trans=st.tuples(st.booleans(), st.booleans()), per_column=st.booleans(),
       bias=st.sampled_from(["none", "row", "full"]),
       alpha=st.sampled_from([1.0, 0.5, 1.7]), fused=st.booleans(), seed=st.integers(0, 2**31))
def test_qgemm(dev: CpuDevice, m: int, k: int, n: int, dtypes: tuple[str, str, str], trans: tuple[bool, bool],
               per_column: bool, bias: str, alpha: float, fused: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    a, b = qtensor(rng, (m, k), ad), qtensor(rng, (k, n), bd)
    cols = n if per_column else None
    weights: dict[str, Any] = {"sa": np.float32(0.03), "za": zero_point(rng, ad), "b": b.T.copy() if trans[1] else b,
                               "sb": scale(rng, 0.001, 0.02, cols), "zb": zero_point(rng, bd, cols),
                               "sy": np.float32(rng.uniform(0.05, 1.0)), "zy": zero_point(rng, yd)}
    if bias != "none":
        weights["c"] = rng.integers(-30000, 30000, size=(n,) if bias == "row" else (m, n)).astype(np.int32)
    order = ["a", "sa", "za", "b", "sb", "zb", "c" if bias != "none" else "", "sy", "zy"]
    op, values = build("QGemm", {"a": a.T.copy() if trans[0] else a}, weights, order, transA=int(trans[0]),
                       transB=int(trans[1]), alpha=alpha, **clamp(rng, yd, fused))
    check(dev, op, values)


@pytest.mark.parametrize("m", [1, 7, 13])
@pytest.mark.parametrize("dtypes", [("uint8", "int8", "uint8"), ("int8", "int8", "int8")])
def test_qgemm_one_row_tiles(dev: CpuDevice, m: int, dtypes: tuple[str, str, str]) -> None:
    """A batch-1 GEMM (a GEMV) and GEMMs whose last row panel holds one row run the one-row
    kernel, that row read in place: wide K, several column panels, a partial last one."""
    test_qgemm.hypothesis.inner_test(dev, m, 300, 150, dtypes, (False, False), True, "row", 1.0, False, m)


@FEW
@given(batch=st.sampled_from([(), (3,), (2, 2)]), m=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 70),
       b_kind=st.sampled_from(["matrix", "batched", "activation"]), dtypes=st.tuples(*[st.sampled_from(Q8)] * 3),
       per_column=st.booleans(), seed=st.integers(0, 2**31))
def test_qlinear_matmul(dev: CpuDevice, batch: tuple[int, ...], m: int, k: int, n: int, b_kind: str,
                        dtypes: tuple[str, str, str], per_column: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    cols = n if per_column else None
    b = qtensor(rng, (batch if b_kind != "matrix" else ()) + (k, n), bd)
    activations = {"a": qtensor(rng, batch + (m, k), ad)}
    weights: dict[str, Any] = {"sa": np.float32(0.05), "za": zero_point(rng, ad), "sb": scale(rng, 0.002, 0.03, cols),
                               "zb": zero_point(rng, bd, cols), "sy": np.float32(0.4), "zy": zero_point(rng, yd)}
    (activations if b_kind == "activation" else weights)["b"] = b
    op, values = build("QLinearMatMul", activations, weights, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
    check(dev, op, values)
    check(dev, op, values)  # the second run reuses the packed weights


@CASES
@given(shapes=st.sampled_from([((2, 5, 7, 3), (2, 5, 7, 3)), ((1, 6, 4, 4), (1, 6, 1, 1)), ((3, 1, 5), (4, 1)),
                               ((40000,), (40000,)), ((2, 3, 4, 5, 6, 7), (1, 3, 1, 5, 1, 7)), ((1,), (9, 9))]),
       dtypes=st.tuples(*[st.sampled_from(Q8)] * 3), tie=st.booleans(), fused=st.booleans(), seed=st.integers(0, 2**31))
def test_qlinear_add(dev: CpuDevice, shapes: tuple[tuple[int, ...], ...], dtypes: tuple[str, str, str], tie: bool,
                     fused: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    weights = {"sa": np.float32(0.5 if tie else rng.uniform(0.001, 0.2)), "za": zero_point(rng, ad),
               "sb": np.float32(0.25 if tie else rng.uniform(0.001, 0.2)), "zb": zero_point(rng, bd),
               "sy": np.float32(1.0 if tie else rng.uniform(0.002, 0.3)), "zy": zero_point(rng, yd)}
    activations = {"a": qtensor(rng, shapes[0], ad), "b": qtensor(rng, shapes[1], bd)}
    op, values = build("QLinearAdd", activations, weights, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                       **clamp(rng, yd, fused))
    check(dev, op, values)


@pytest.mark.parametrize("shapes", [((1 << 20,), (1 << 20,)), ((64, 4096), (64, 1)), ((64, 4096), (4096,))])
def test_qlinear_add_fused_multiply_adds(dev: CpuDevice, shapes: tuple[tuple[int, ...], ...]) -> None:
    """Many random sums with random scales: single-rounding FMAs (rule 4) differ from a*b+c in some."""
    rng = np.random.default_rng(3)
    weights = {"sa": np.float32(rng.uniform(0.01, 0.5)), "za": np.int8(rng.integers(-20, 20)),
               "sb": np.float32(rng.uniform(0.01, 0.5)), "zb": np.int8(rng.integers(-20, 20)),
               "sy": np.float32(rng.uniform(0.003, 0.01)), "zy": np.int32(rng.integers(-99, 99))}
    activations = {"a": qtensor(rng, shapes[0], "int8"), "b": qtensor(rng, shapes[1], "int8")}
    check(dev, *build("QLinearAdd", activations, weights, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"]))


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pads = tuple(draw(st.integers(0, k[i % 2] - 1)) for i in range(4))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(4, 12)), draw(st.integers(4, 12)))
    return dict(shape=shape,
                attrs=dict(kernel_shape=k, strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads,
                           ceil_mode=int(draw(st.booleans())), count_include_pad=int(draw(st.booleans()))),
                dtypes=(draw(st.sampled_from(Q8)), draw(st.sampled_from(Q8))), fused=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@CASES
@given(case=pool_cases(), whole=st.booleans())
def test_qlinear_average_pool(dev: CpuDevice, case: dict[str, Any], whole: bool) -> None:
    rng = np.random.default_rng(case["seed"])
    xd, yd = case["dtypes"]
    if whole:  # one window over the whole image: the integer path
        case["attrs"].update(kernel_shape=case["shape"][2:], pads=(0, 0, 0, 0))
    weights = {"sx": np.float32(rng.uniform(0.01, 0.1)), "zx": zero_point(rng, xd),
               "sy": np.float32(rng.uniform(0.005, 0.1)), "zy": zero_point(rng, yd)}
    op, values = build("QLinearAveragePool", {"x": qtensor(rng, case["shape"], xd)}, weights,
                       **case["attrs"], **clamp(rng, yd, case["fused"]))
    check(dev, op, values)


@FEW
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 70), st.integers(1, 9), st.integers(1, 9)),
       dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8)), seed=st.integers(0, 2**31))
def test_qlinear_global_average_pool(dev: CpuDevice, shape: tuple[int, ...], dtypes: tuple[str, str],
                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = {"sx": np.float32(0.05), "zx": zero_point(rng, dtypes[0]), "sy": np.float32(rng.uniform(0.005, 0.05)),
               "zy": zero_point(rng, dtypes[1])}
    op, values = build("QLinearGlobalAveragePool", {"x": qtensor(rng, shape, dtypes[0])}, weights)
    check(dev, op, values)


@FEW
@given(axis=st.integers(-4, 3), parts=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_qlinear_concat(dev: CpuDevice, axis: int, parts: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yd = str(rng.choice(Q8))
    sy, zy = np.float32(0.1), zero_point(rng, yd)
    activations, weights, order = {}, {"sy": sy, "zy": zy}, ["sy", "zy"]
    for i in range(parts):
        shape = [2, 3, 4, 5]
        shape[axis] = int(rng.integers(1, 4))
        same = rng.random() < 0.3  # copied unchanged when scale, zero point and type match
        dtype = yd if same else str(rng.choice(Q8))
        activations[f"x{i}"] = qtensor(rng, shape, dtype)
        weights[f"s{i}"] = sy if same else np.float32(rng.uniform(0.01, 0.5))
        weights[f"z{i}"] = zy if same else zero_point(rng, dtype)
        order += [f"x{i}", f"s{i}", f"z{i}"]
    op, values = build("QLinearConcat", activations, weights, order, axis=axis)
    check(dev, op, values)


@CASES
@given(shape=st.sampled_from([(7,), (2, 3, 5, 4), (1, 40000), (3, 8)]), per_axis=st.booleans(), axis=st.integers(0, 1),
       dtype=st.sampled_from(Q8 + ("int32",)), seed=st.integers(0, 2**31))
def test_quantize_dequantize(dev: CpuDevice, shape: tuple[int, ...], per_axis: bool, axis: int, dtype: str,
                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = min(axis, len(shape) - 1)
    size = shape[axis] if per_axis else None
    s = scale(rng, 0.01, 0.1, size)
    if dtype == "int32":
        zp = np.asarray(rng.integers(-1000, 1000, size=size), np.int32)
    else:
        zp = zero_point(rng, dtype, size)
    x = (rng.standard_normal(shape) * (30 if dtype == "int32" else 6)).astype(np.float32)
    x.reshape(-1)[::7] = np.round(x.reshape(-1)[::7]) * 0.5 * np.float32(s.reshape(-1)[0])  # halfway ties
    op, values = build("QuantizeLinear", {"x": x}, {"s": s, "z": zp}, ["x", "s", "z"], axis=axis)
    check(dev, op, values)
    qx = dev.run(op, values)[0]
    op, values = build("DequantizeLinear", {"q": qx}, {"s": s, "z": zp}, ["q", "s", "z"], axis=axis)
    check(dev, op, values)


@FEW
@given(case=pool_cases(), dtype=st.sampled_from(Q8 + ("float32",)), dilated=st.booleans())
def test_max_pool(dev: CpuDevice, case: dict[str, Any], dtype: str, dilated: bool) -> None:
    rng = np.random.default_rng(case["seed"])
    if dtype == "float32":
        x = rng.standard_normal(case["shape"]).astype(np.float32)
    else:
        x = qtensor(rng, case["shape"], dtype)
    attrs = {k: v for k, v in case["attrs"].items() if k != "count_include_pad"}
    if dilated:
        attrs["dilations"] = (2, 1)
        assume(case["shape"][2] + attrs["pads"][0] + attrs["pads"][2] >= 2 * attrs["kernel_shape"][0] - 1)
    op, values = build("MaxPool", {"x": x}, **attrs)
    check(dev, op, values)


# --- float kernels, within 1e-4 -------------------------------------------------------------------


@CASES
@given(case=qconv_cases())
def test_conv_float(dev: CpuDevice, case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    m, (kh, kw), (dh, dw) = case["m"], case["k"], case["dilations"]
    h, w = case["hw"]
    pads = case["pads"]
    assume(h + pads[0] + pads[2] >= dh * (kh - 1) + 1 and w + pads[1] + pads[3] >= dw * (kw - 1) + 1)
    weights = {"w": rng.standard_normal((m, case["c"] // case["group"], kh, kw)).astype(np.float32)}
    if case["bias"]:
        weights["b"] = rng.standard_normal(m).astype(np.float32)
    x = rng.standard_normal((case["n"], case["c"], h, w)).astype(np.float32)
    op, values = build("Conv", {"x": x}, weights, group=case["group"], strides=case["strides"],
                       dilations=case["dilations"], pads=pads)
    check(dev, op, values)


def test_gemm_and_matmul_float(dev: CpuDevice, rng: np.random.Generator) -> None:
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((5, 7), (9, 7), (9,)))
    check(dev, *build("Gemm", {"a": a}, {"b": b, "c": c}, transB=1, alpha=0.5, beta=2.0))
    check(dev, *build("Gemm", {"a": a.T.copy(), "b": b.T.copy()}, transA=1))
    check(dev, *build("MatMul", {"a": rng.standard_normal((2, 3, 4, 6)).astype(np.float32)},
                      {"b": rng.standard_normal((6, 5)).astype(np.float32)}))


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 8, 5, 5), (1, 8, 1, 1)), ((4, 1, 3), (5, 1)),
                                    ((70000,), ()), ((2, 3, 2, 3, 2, 3), (3, 1, 3, 1, 3))])
def test_binary_float(dev: CpuDevice, rng: np.random.Generator, op_type: str,
                      shapes: tuple[tuple[int, ...], ...]) -> None:
    a = rng.standard_normal(shapes[0]).astype(np.float32)
    b = (rng.uniform(0.5, 2.0, shapes[1]) * rng.choice([-1, 1], shapes[1])).astype(np.float32)
    check(dev, *build(op_type, {"a": a, "b": b}))


def test_integer_arithmetic_matches_numpy(dev: CpuDevice, rng: np.random.Generator) -> None:
    a, b = rng.integers(-50, 50, (3, 4)).astype(np.int64), rng.integers(1, 9, (4,)).astype(np.int64)
    for op_type in ("Add", "Div"):
        check(dev, *build(op_type, {"a": a, "b": b}))


def test_activations_float(dev: CpuDevice, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((3, 5, 40, 41)) * 4).astype(np.float32)
    for op_type, attrs in [("Relu", {}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3}), ("HardSwish", {}),
                           ("Tanh", {}), ("Identity", {}), ("Softmax", {"axis": 1}), ("Softmax", {}),
                           ("GlobalAveragePool", {}), ("ReduceMean", {"axes": (1, 3), "keepdims": 0}),
                           ("AveragePool", {"kernel_shape": (3, 2), "pads": (1, 1, 1, 0), "strides": (2, 2)})]:
        check(dev, *build(op_type, {"x": x}, **attrs))
    check(dev, *build("Clip", {"x": x}, {"lo": np.float32(0), "hi": np.float32(6)}))
    check(dev, *build("Relu", {"x": x.astype(np.int8)}))
    gamma, beta, mean = (rng.standard_normal(5).astype(np.float32) for _ in range(3))
    bn = {"g": gamma, "b": beta, "m": mean, "v": rng.uniform(0.5, 2, 5).astype(np.float32)}
    check(dev, *build("BatchNormalization", {"x": x}, bn))


def test_data_movement(dev: CpuDevice, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
    check(dev, *build("Flatten", {"x": x}, axis=2))
    check(dev, *build("Reshape", {"x": x}, {"s": i64(6, -1)}))
    check(dev, *build("Transpose", {"x": x}, perm=(0, 2, 3, 1)))
    check(dev, *build("Unsqueeze", {"x": x}, {"a": i64(0)}))
    check(dev, *build("Squeeze", {"x": x[:1]}, {"a": i64(0)}))
    check(dev, *build("Concat", {"x": x, "y": x[:, :1].copy()}, axis=1))
    check(dev, *build("Split", {"x": x}, {"s": i64(1, 3)}, outputs=2, axis=2))
    check(dev, *build("Slice", {"x": x}, {"b": i64(1, -1), "e": i64(3, 0), "a": i64(1, 3), "t": i64(1, -2)}))
    check(dev, *build("Gather", {"x": x}, {"i": i64(2, 0)}, axis=3))
    check(dev, *build("Cast", {"x": x}, to=7))


def test_unsupported_forms_are_declared(dev: CpuDevice, rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 5, 5))
    op, values = build("Conv", {"x": x.astype(np.float32), "w": np.ones((3, 2, 3, 3), np.float32)})
    assert not dev.supports(op)  # weights computed at run time
    with pytest.raises(DeviceError, match="no Conv kernel"):
        dev.run(op, values)
    assert not dev.supports(build("Sigmoid", {"x": x})[0])  # float64


# --- whole graphs, threads, throttle --------------------------------------------------------------


@pytest.mark.parametrize("spec", ["builtin:seed-cnn", "builtin:mobilenetv2", str(RESNET18)])
def test_builtin_models(spec: str) -> None:
    if spec == str(RESNET18) and not RESNET18.exists():
        pytest.skip(f"{RESNET18} is absent")
    graph = load_graph(spec)
    feeds = {s.name: np.random.default_rng(5).standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}
    device = CpuDevice(INFO, threads=1 if "mobilenet" in spec else None)
    got, want = run_on_device(graph, device, feeds), run_reference(graph, feeds)
    for name, expected in want.items():
        err = np.linalg.norm((got[name] - expected).ravel()) / np.linalg.norm(expected.ravel())
        assert got[name].dtype == expected.dtype and err <= REL_L2, f"{spec}: relative L2 error {err:.3g}"


@pytest.mark.parametrize("spec, dtype", [("builtin:mobilenetv2", "uint8"), ("builtin:resnet18", "int8")])
def test_quantized_models_bit_exact(spec: str, dtype: str) -> None:
    """A QDQ model lowered to QLinear ops gives the reference's outputs exactly."""
    model = load_onnx(spec)
    graph = import_onnx(model)
    qdq = quantize_model(graph, calibration_for(spec, graph, n=1), activation_dtype=dtype)
    graph = lower_qdq(import_onnx(qdq))
    assert any(op.type == "QLinearConv" for op in graph.ops_in_order())
    feeds = {s.name: np.random.default_rng(2).standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}
    got, want = run_on_device(graph, CpuDevice(INFO), feeds), run_reference(graph, feeds)
    for name, expected in want.items():
        np.testing.assert_array_equal(got[name], expected)


def test_throttle_slows_ops_down(rng: np.random.Generator) -> None:
    device = CpuDevice(INFO)
    weights = {"w": rng.standard_normal((64, 64, 3, 3)).astype(np.float32)}
    op, values = build("Conv", {"x": rng.standard_normal((1, 64, 28, 28)).astype(np.float32)}, weights, pads=(1,) * 4)

    def seconds(throttle: float) -> float:
        device.throttle = throttle
        start = time.perf_counter()
        device.run(op, values)
        return time.perf_counter() - start

    device.run(op, values)
    pairs = [(seconds(1.0), seconds(3.0)) for _ in range(9)]  # interleaved: load bursts hit both
    plain, slow = (min(p[i] for p in pairs) for i in (0, 1))  # minima are robust to other processes
    assert slow >= 2.0 * plain, f"throttle 3 took {slow:.4f}s against {plain:.4f}s"
    with pytest.raises(DeviceError, match="throttle"):
        device.throttle = 0.5
    with pytest.raises(DeviceError, match="threads"):
        CpuDevice(INFO, threads=10_000)


def test_openmp_workers_go_passive_when_the_first_cpu_device_opens_not_at_import() -> None:
    """In a fresh process: importing the cpu backend leaves the environment alone; opening a cpu
    device sets OMP_WAIT_POLICY=PASSIVE before numba's threads start, unless the user chose."""
    script = (
        "import os\n"
        "import hetero.backends.cpu.device\n"
        "print(os.environ.get('OMP_WAIT_POLICY', '-'))\n"
        "from hetero.backends import open_device\n"
        "open_device('cpu')\n"
        "print(os.environ.get('OMP_WAIT_POLICY', '-'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    lines = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert lines[:2] == ["-", "PASSIVE"]
    chosen = subprocess.run([sys.executable, "-c", script], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                            text=True, check=True).stdout.split()
    assert chosen[:2] == ["ACTIVE", "ACTIVE"]


def test_discovery_imports_a_backend_only_to_probe_it() -> None:
    """The registry imports a backend's module when its kind is probed: listing the reference
    device loads no numba, probing cpu loads numba but not the kernels."""
    script = (
        "import sys\n"
        "from hetero.backends import discover\n"
        "discover(['reference'])\n"
        "print('numba' in sys.modules, 'pyopencl' in sys.modules)\n"
        "assert [d.name for d in discover(['cpu'])[0]] == ['cpu']\n"
        "print('numba' in sys.modules, 'hetero.backends.cpu.kernels' in sys.modules)\n"
    )
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert lines == ["False", "False", "True", "False"]


def test_an_option_a_backend_does_not_take_is_a_one_line_error() -> None:
    with pytest.raises(DeviceError, match=r"device reference has no option 'threads' \(its options: none\)"):
        open_device("reference", threads=2)
    with pytest.raises(DeviceError, match=r"device cpu has no option 'int8_gemm' \(its options: threads, throttle\)"):
        open_device("cpu", int8_gemm="tiled")
    assert open_device("cpu", threads=1, throttle=2).throttle == 2.0


# --- transformer ops (kernels_transformer.py), against the reference within 1e-5 ------------------

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
TRANSFORMER_CASES = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                             phases=NO_SHRINK)  # a failure reports its case at once; shrinking 1M-element inputs takes minutes


@pytest.mark.parametrize("kind", sorted(cases_by_kind()))
def test_transformer_ops(dev: CpuDevice, kind: str) -> None:
    @TRANSFORMER_CASES
    @given(case=cases_by_kind()[kind])
    def run(case: Case) -> None:
        check_case(dev, case)

    run()


def test_transformer_ops_large(dev: CpuDevice) -> None:
    for case in large_cases():
        check_case(dev, case)


def test_transformer_ops_unclaimed_forms_are_capability_gaps(dev: CpuDevice) -> None:
    x = np.ones((2, 3, 4))
    gaps = [
        Case("LayerNormalization", {"x": x}, {"s": np.ones(4)}),  # float64
        Case("LayerNormalization", {"x": x.astype(np.float32)}, {"s": np.ones(4, np.float32)}, attrs={"stash_type": 0}),
        Case("Erf", {"x": x}),
        Case("Pow", {"a": x.astype(np.int64), "b": x.astype(np.int64)}),
        Case("Less", {"a": x.astype(np.uint8), "b": x.astype(np.uint8)}),
        Case("ReduceSum", {"x": x.astype(np.int64)}),
        Case("Mod", {"a": x, "b": x}),  # float64
    ]
    for case in gaps:
        op, values = case.build()
        assert not dev.supports(op), op.signature()
        with pytest.raises(DeviceError, match=f"no {op.type} kernel"):
            dev.run(op, values)


def test_blas_runs_on_one_thread_in_the_whole_process_once_a_cpu_device_opens():
    # a per-op limit would be process-wide anyway and flip a concurrent reference MatMul's
    # thread count (and its float bits) in partitioned runs
    from threadpoolctl import threadpool_info

    open_device("cpu")
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "no BLAS library loaded"
    assert all(pool["num_threads"] == 1 for pool in blas)


MUL_ORDER = ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"]


@CASES
@given(shapes=st.sampled_from([((2, 5, 7, 3), (2, 5, 7, 3)), ((1, 6, 4, 4), (1, 6, 1, 1)), ((3, 1, 5), (4, 1)),
                               ((1, 16, 32), (32,)), ((4, 1), (1, 9)), ((1,), (9, 9))]),
       dtypes=st.tuples(*[st.sampled_from(Q8)] * 3), fused=st.booleans(), seed=st.integers(0, 2**31))
def test_qlinear_mul(dev: CpuDevice, shapes: tuple[tuple[int, ...], ...], dtypes: tuple[str, str, str],
                     fused: bool, seed: int) -> None:
    """Rule 7 on random shapes, scales and zero points, bit for bit."""
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    weights = {"sa": scale(rng, 0.001, 0.5), "za": zero_point(rng, ad), "sb": scale(rng, 0.001, 0.5),
               "zb": zero_point(rng, bd), "sy": scale(rng, 1e-5, 0.05), "zy": zero_point(rng, yd)}
    activations = {"a": qtensor(rng, shapes[0], ad), "b": qtensor(rng, shapes[1], bd)}
    check(dev, *build("QLinearMul", activations, weights, MUL_ORDER, **clamp(rng, yd, fused)))


@pytest.mark.parametrize("dtype", Q8)
def test_qlinear_mul_every_operand_pair(dev: CpuDevice, dtype: str) -> None:
    """All 256 x 256 operand pairs at scales whose products land on many half-way points."""
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)
    rng = np.random.default_rng(5)
    for sy in (np.float32(0.5), np.float32(rng.uniform(0.001, 0.02))):
        weights = {"sa": np.float32(0.5), "za": np.asarray(3, dtype), "sb": np.float32(0.25),
                   "zb": np.asarray(1, dtype), "sy": sy, "zy": np.asarray(7, dtype)}
        activations = {"a": values.reshape(256, 1), "b": values.reshape(1, 256)}
        check(dev, *build("QLinearMul", activations, weights, MUL_ORDER))


@CASES
@given(shape=st.sampled_from([(1, 7), (3, 4, 17), (2, 64, 64), (5,), (1, 2, 3, 200), (4, 1)]), axis=st.integers(-4, 3),
       dtypes=st.tuples(*[st.sampled_from(Q8)] * 2), fused=st.booleans(), seed=st.integers(0, 2**31))
def test_qlinear_softmax(dev: CpuDevice, shape: tuple[int, ...], axis: int, dtypes: tuple[str, str], fused: bool,
                         seed: int) -> None:
    """Rule 8 along any axis on random shapes and scales, bit for bit."""
    assume(-len(shape) <= axis < len(shape))
    rng = np.random.default_rng(seed)
    xd, yd = dtypes
    sy = np.float32(1.0 / 256.0) if rng.random() < 0.3 else scale(rng, 0.0005, 0.05)
    weights = {"sx": scale(rng, 0.005, 0.5), "zx": zero_point(rng, xd), "sy": sy, "zy": zero_point(rng, yd)}
    activations = {"x": qtensor(rng, shape, xd)}
    check(dev, *build("QLinearSoftmax", activations, weights, ["x", "sx", "zx", "sy", "zy"], axis=axis, opset=13,
                      **clamp(rng, yd, fused)))


def test_all_threads_are_confirmed_where_the_op_runs_or_given_up():
    """An op whose trials chose all threads is timed again in the runs after (CONFIRM_RUNS): slower
    there than its best one-thread trial, it goes back to one thread, and the other ops still
    confirming start again; as fast, it keeps all threads. ``learning`` is true until then."""
    import numba

    from hetero.backends.cpu.device import CONFIRM_RUNS, THREAD_TRIALS
    from hetero.quant.precision import load_for_precision

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: there is no thread count to choose")
    device = open_device("cpu", threads=2)
    try:
        graph = load_for_precision("builtin:seed-cnn", "int8")
        first, second = [o for o in graph.ops_in_order() if 0 < o.flops][:2]
        for op in (first, second):  # trials: all threads faster (1 ms against 2 ms)
            device._threads_for(op)
            device._learn_threads(op, 2, 1.0)
            for _ in range(2 * THREAD_TRIALS):
                threads = device._threads_for(op)
                device._learn_threads(op, threads, 0.002 if threads == 1 else 0.001)
            assert device._threads_for(op) in (None, 2)
        assert device.learning(graph)
        for _ in range(CONFIRM_RUNS - 1):  # the second op, timed where it runs: as fast as in its trials
            device._learn_threads(second, device._threads_for(second), 0.001)
        for _ in range(CONFIRM_RUNS):  # the first, 3 ms where it runs: back to one thread
            device._learn_threads(first, device._threads_for(first), 0.003)
        assert device._threads_for(first) == 1
        trials = device._thread_trials[id(second)][1]
        assert trials["confirm"] == []  # started again: its neighbour's threads changed
        for _ in range(CONFIRM_RUNS):
            device._learn_threads(second, device._threads_for(second), 0.0011)
        assert device._threads_for(second) in (None, 2) and "confirm" not in trials
        assert device._threads_for(first) == 1  # a flip is final
    finally:
        device.close()


def test_thread_choice_ignores_the_first_run_and_takes_the_fastest_of_three():
    """A small op's first run (first-run costs) never decides its thread count; then three timed
    runs per choice, alternating, and the faster choice's best time wins."""
    import numba

    from hetero.backends.cpu.device import THREAD_TRIALS
    from hetero.quant.precision import load_for_precision

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here: there is no thread count to choose")
    device = open_device("cpu", threads=2)
    try:
        graph = load_for_precision("builtin:seed-cnn", "int8")
        op = next(o for o in graph.ops_in_order() if 0 < o.flops)
        device._threads_for(op)
        device._learn_threads(op, 2, 1.0)  # a very slow first run at 2 threads: ignored
        seen = []
        for _ in range(2 * THREAD_TRIALS):
            threads = device._threads_for(op)
            seen.append(threads)
            device._learn_threads(op, threads, 0.002 if threads == 1 else 0.001)
        assert sorted(seen) == [1] * THREAD_TRIALS + [2] * THREAD_TRIALS
        trials = device._thread_trials[id(op)][1]
        assert len(trials[1]) == len(trials[0]) == THREAD_TRIALS and 1.0 not in trials[0]
        assert device._threads_for(op) in (None, 2)  # all threads were faster: chosen, and kept
        assert device._threads_for(op) == device._threads_for(op)
    finally:
        device.close()
