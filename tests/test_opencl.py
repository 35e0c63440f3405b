"""OpenCL backend: every kernel against the numpy reference on the same Op, on every usable OpenCL
device (discovery probes each; the module is skipped, saying why, when none is usable).

int8 kernels must match bit for bit (saturation edges, ties, odd sizes, padding, strides,
dilations, groups, per-channel scales, int8 and uint8); float32 kernels within 1e-4 relative
L2; whole builtin models through run_on_device within 1e-4.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hetero.ir import ops
from hetero.backends.opencl import OpenCLDevice
from hetero.backends.reference import reference_op
from hetero.exec.executor import run_reference
from hetero.backends.discovery import DeviceInfo, discover
from hetero.errors import DeviceError
from hetero.ir.graph import Op, TensorSpec, make_op
from transformer_cases import Case, cases_by_kind, check_case, large_cases

# as conftest.usable_opencl, which this module does not import: test_cuda.py collects it again
# with --noconftest on machines without onnxruntime
OPENCL, _ABSENT = discover(["opencl"])
NO_OPENCL = "no usable OpenCL device: " + ("; ".join(a.reason for a in _ABSENT) or "no OpenCL platform lists a device")
pytestmark = pytest.mark.skipif(not OPENCL, reason=NO_OPENCL)

SQUEEZENET = Path(__file__).resolve().parents[2] / "shared" / "models" / "squeezenet1_1.onnx"
REL_L2 = 1e-4
FEW = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
Q8 = ("int8", "uint8")


@pytest.fixture(scope="module", params=OPENCL or [None], ids=[d.name for d in OPENCL] or ["none"])
def cl_info(request: pytest.FixtureRequest) -> DeviceInfo:
    """Each usable OpenCL device in turn (every test below runs on every one)."""
    return request.param


@pytest.fixture(scope="module")
def dev(cl_info: DeviceInfo) -> Iterator[OpenCLDevice]:
    device = OpenCLDevice(cl_info)
    yield device
    device.close()


def build(op_type: str, activations: Mapping[str, np.ndarray], weights: Mapping[str, Any] | None = None,
          inputs: Sequence[str] | None = None, outputs: int = 1, **attrs: Any) -> tuple[Op, list[np.ndarray]]:
    """An op over named activations and constants (inputs in the given order, "" for absent)."""
    weights = {k: np.asarray(v) for k, v in (weights or {}).items()}
    names = list(inputs) if inputs is not None else [*activations, *weights]
    specs = {k: TensorSpec(k, tuple(v.shape), str(v.dtype)) for k, v in activations.items()}
    op = make_op("node", op_type, names, [f"y{i}" for i in range(outputs)], attrs, specs, weights)
    return op, [activations[n] for n in names if n in activations]


def check(dev: OpenCLDevice, op: Op, values: Sequence[np.ndarray], exact: bool | None = None) -> None:
    """Device outputs equal the reference (integers exactly, floats within REL_L2)."""
    got = [dev.download(b) for b in dev.run(op, [dev.upload(v) for v in values])]
    want = reference_op(op, values)
    assert len(got) == len(want)
    for g, w, spec in zip(got, want, op.output_specs):
        assert g.shape == w.shape == spec.shape, f"{op.type}: shape {g.shape} != reference {w.shape}"
        assert g.dtype == w.dtype, f"{op.type}: dtype {g.dtype} != reference {w.dtype}"
        if exact or (exact is None and not np.issubdtype(w.dtype, np.floating)):
            bad = np.flatnonzero(g.ravel() != w.ravel())
            first = f"{g.ravel()[bad[0]]} != {w.ravel()[bad[0]]}" if bad.size else ""
            assert bad.size == 0, f"{op.type}: {bad.size} of {w.size} differ, first {first}"
        else:
            norm = max(float(np.linalg.norm(w.ravel().astype(np.float64))), 1e-30)
            err = np.linalg.norm((g.astype(np.float64) - w).ravel()) / norm
            assert err <= REL_L2, f"{op.type}: relative L2 error {err:.3g}"


def qtensor(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Random int8/uint8 values that reach both ends of the range."""
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max + 1, size=shape)
    flat = values.reshape(-1)
    if flat.size >= 4:
        flat[: flat.size // 8 + 1] = rng.choice([info.min, info.max], size=flat.size // 8 + 1)
        rng.shuffle(flat)
    return values.astype(dtype)


def zero_point(rng: np.random.Generator, dtype: str, size: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max + 1, size=size), dtype)


# int8 transformer ops with a cpu kernel and no OpenCL kernel yet (README, "Where we fall short")
CPU_ONLY: set[str] = set()


def test_every_registered_op_has_a_kernel() -> None:
    # ops with only the numpy reference (no cpu kernel either) are a capability gap on opencl
    from hetero.backends.cpu.device import CpuDevice

    with_cpu = set(ops.supported_ops()) & set(CpuDevice.kernels)
    assert CPU_ONLY <= with_cpu and not CPU_ONLY & set(OpenCLDevice.kernels), "update CPU_ONLY"
    assert {"QLinearMul", "QLinearSoftmax"} <= set(OpenCLDevice.kernels)
    assert with_cpu - CPU_ONLY <= set(OpenCLDevice.kernels)


# --- integer ops, bit for bit ---------------------------------------------------------------------

@st.composite
def qconv_cases(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "pointwise"]))
    group = {"dense": 1, "pointwise": 1, "grouped": draw(st.sampled_from([2, 3])),
             "depthwise": draw(st.integers(1, 9))}[kind]
    cg = 1 if kind == "depthwise" else draw(st.integers(1, 9))
    mg = draw(st.integers(1, 3)) if kind == "depthwise" else draw(st.integers(1, 40))
    k = (1, 1) if kind == "pointwise" else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    return dict(
        n=draw(st.integers(1, 2)), c=cg * group, m=mg * group, group=group, k=k,
        hw=tuple(draw(st.integers(d * (size - 1) + 1, 12)) for d, size in zip(dilations, k)),
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 2))), dilations=dilations,
        pads=tuple(draw(st.integers(0, 2)) for _ in range(4)), per_channel=draw(st.booleans()),
        dtypes=(draw(st.sampled_from(Q8)), draw(st.sampled_from(Q8)), draw(st.sampled_from(Q8))),
        bias=draw(st.booleans()), tie=draw(st.booleans()), relu=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


def use_path(dev: OpenCLDevice, path: str) -> None:
    """Select the int8 product kernels: "cpu" (wide work items; VNNI where the device has it),
    "cpu-float" (their float32 form), "packed" or "tiled" (the GPU tiles). The CPU kernels are
    OpenCL only: a CUDA device (test_cuda.py collects these tests again) runs "packed" instead."""
    dev.cpu_style = path.startswith("cpu") and isinstance(dev, OpenCLDevice)
    dev.vnni = path == "cpu" and getattr(dev, "vnni_capable", False)
    dev.int8_gemm = path if path in ("packed", "tiled") else "packed"


PATHS = ("cpu", "cpu-float", "packed", "tiled")


def check_style(dev: OpenCLDevice, cpu_style: bool, op: Op, values: Sequence[np.ndarray], exact: bool | None = None) -> None:
    """check() on the CPU-style kernel variants or on the GPU ones."""
    style = dev.cpu_style
    dev.cpu_style = cpu_style and isinstance(dev, OpenCLDevice)
    try:
        check(dev, op, values, exact)
    finally:
        dev.cpu_style = style


@SOME
@given(case=qconv_cases(), path=st.sampled_from(PATHS))
def test_qlinear_conv(dev: OpenCLDevice, case: dict[str, Any], path: str) -> None:
    rng = np.random.default_rng(case["seed"])
    xd, wd, yd = case["dtypes"]
    m, k = case["m"], case["k"]
    x = qtensor(rng, (case["n"], case["c"], *case["hw"]), xd)
    w = qtensor(rng, (m, case["c"] // case["group"], *k), wd)
    channels = m if case["per_channel"] else None
    sx, sy = np.float32(1.0 if case["tie"] else 0.02), np.float32(1.0 if case["tie"] else 0.5)
    sw = (np.full(channels or (), 0.5, np.float32) if case["tie"]
          else np.asarray(rng.uniform(0.002, 0.05, size=channels), np.float32))
    weights = {"sx": sx, "zx": zero_point(rng, xd), "w": w, "sw": sw, "zw": zero_point(rng, wd, channels),
               "sy": sy, "zy": zero_point(rng, yd)}
    names = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"]
    if case["bias"]:
        weights["b"] = rng.integers(-5000, 5000, size=m).astype(np.int32)
        names.append("b")
    attrs = dict(group=case["group"], strides=case["strides"], dilations=case["dilations"], pads=case["pads"])
    if case["relu"]:
        attrs["qmin"] = int(weights["zy"])
    op, values = build("QLinearConv", {"x": x}, weights, names, **attrs)
    style = dev.cpu_style, dev.vnni
    use_path(dev, path)
    try:
        check(dev, op, values)
    finally:
        (dev.cpu_style, dev.vnni), dev.int8_gemm = style, "packed"


@SOME
@given(m=st.integers(1, 37), k=st.integers(1, 70), n=st.integers(1, 45), trans=st.tuples(st.booleans(), st.booleans()),
       dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8), st.sampled_from(Q8)), per_column=st.booleans(),
       bias=st.sampled_from([None, "row", "full"]), alpha=st.sampled_from([1.0, 0.5, 2.0]),
       path=st.sampled_from(PATHS), seed=st.integers(0, 2**16))
def test_qgemm(dev: OpenCLDevice, m: int, k: int, n: int, trans: tuple[bool, bool], dtypes: tuple[str, str, str],
               per_column: bool, bias: str | None, alpha: float, path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    a = qtensor(rng, (k, m) if trans[0] else (m, k), ad)
    b = qtensor(rng, (n, k) if trans[1] else (k, n), bd)
    sb = np.asarray(rng.uniform(0.002, 0.05, size=n if per_column else None), np.float32)
    c = {None: None, "row": (n,), "full": (m, n)}[bias]
    weights = {"sa": np.float32(0.03), "za": zero_point(rng, ad), "b": b, "sb": sb,
               "zb": zero_point(rng, bd, n if per_column else None),
               "c": None if c is None else rng.integers(-20000, 20000, size=c).astype(np.int32),
               "sy": np.float32(0.4 * np.sqrt(k)), "zy": zero_point(rng, yd)}
    names = ["a", "sa", "za", "b", "sb", "zb", "" if c is None else "c", "sy", "zy"]
    weights = {k_: v for k_, v in weights.items() if v is not None}
    op, values = build("QGemm", {"a": a}, weights, names, transA=int(trans[0]), transB=int(trans[1]), alpha=alpha)
    style = dev.cpu_style, dev.vnni
    use_path(dev, path)
    try:
        check(dev, op, values)
    finally:
        (dev.cpu_style, dev.vnni), dev.int8_gemm = style, "packed"


class LibraryGemmDevice(OpenCLDevice):
    """An OpenCL device whose int8 GEMM "library" is numpy: checks the packed layout and the
    epilogue kernels that a vendor GEMM (cuBLAS on CUDA) feeds."""

    calls = 0

    def int8_gemm_raw(self, left: Any, right: Any, rows: int, cols: int, k4: int) -> Any:
        self.calls += 1
        lhs = self.download(left).view(np.int8).reshape(rows, 4 * k4).astype(np.float64)
        rhs = self.download(right).view(np.int8).reshape(cols, 4 * k4).astype(np.float64)
        return self.upload((lhs @ rhs.T).astype(np.int32))


@FEW
@given(case=qconv_cases(), gemm=st.tuples(st.integers(5, 40), st.integers(1, 70), st.integers(1, 45)))
def test_int8_library_gemm_path(cl_info: DeviceInfo, case: dict[str, Any], gemm: tuple[int, int, int]) -> None:
    device = LibraryGemmDevice(cl_info, kernel_style="gpu")  # the CPU kernels call no library
    test_qlinear_conv.hypothesis.inner_test(device, case, "packed")
    rng = np.random.default_rng(case["seed"])
    test_qgemm.hypothesis.inner_test(device, *gemm, (False, bool(case["bias"])), case["dtypes"], case["per_channel"],
                                     "full", 1.5, "packed", int(rng.integers(0, 2**16)))
    assert device.calls >= 1


@FEW
@given(batch=st.sampled_from([(), (2,), (3, 1)]), m=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 33),
       b_const=st.booleans(), dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8), st.sampled_from(Q8)),
       seed=st.integers(0, 2**16))
def test_qlinear_matmul(dev: OpenCLDevice, batch: tuple[int, ...], m: int, k: int, n: int, b_const: bool,
                        dtypes: tuple[str, str, str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    a = qtensor(rng, (*batch, m, k), ad)
    b = qtensor(rng, (k, n) if b_const else (*batch[-1:], k, n), bd)
    weights = {"sa": np.float32(0.05), "za": zero_point(rng, ad), "sb": np.float32(0.01), "zb": zero_point(rng, bd),
               "sy": np.float32(0.3 * np.sqrt(k)), "zy": zero_point(rng, yd)}
    acts = {"a": a}
    (weights if b_const else acts)["b"] = b
    op, values = build("QLinearMatMul", acts, weights, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
    check(dev, op, values)


@SOME
@given(shapes=st.sampled_from([((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((7,), (3, 1)),
                               ((1, 6, 1), (5, 1, 4)), ((3, 1, 5), (5,))]),
       dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8), st.sampled_from(Q8)),
       scales=st.sampled_from([(0.1, 0.2, 0.15), (1.0, 1.0, 2.0), (0.5, 0.25, 1.0), (0.013, 0.021, 0.002)]),
       swap=st.booleans(), cpu_style=st.booleans(), seed=st.integers(0, 2**16))
def test_qlinear_add(dev: OpenCLDevice, shapes: tuple[tuple[int, ...], ...], dtypes: tuple[str, str, str],
                     scales: tuple[float, float, float], swap: bool, cpu_style: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sa, sb, sy = (np.float32(s) for s in scales)
    a_shape, b_shape = shapes[::-1] if swap else shapes
    acts = {"a": qtensor(rng, a_shape, dtypes[0]), "b": qtensor(rng, b_shape, dtypes[1])}
    weights = {"sa": sa, "za": zero_point(rng, dtypes[0]), "sb": sb, "zb": zero_point(rng, dtypes[1]),
               "sy": sy, "zy": zero_point(rng, dtypes[2])}
    op, values = build("QLinearAdd", acts, weights, ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"])
    check_style(dev, cpu_style, op, values)


@st.composite
def pool_cases(draw: st.DrawFn) -> dict[str, Any]:
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pads = tuple(draw(st.integers(0, min(k) - 1)) for _ in range(4))
    return dict(
        shape=(draw(st.integers(1, 2)), draw(st.integers(1, 5)), *(draw(st.integers(size, 11)) for size in k)),
        kernel_shape=k, strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads=pads,
        ceil_mode=int(draw(st.booleans())), seed=draw(st.integers(0, 2**16)),
    )


@SOME
@given(case=pool_cases(), cip=st.booleans(), dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8)))
def test_qlinear_average_pool(dev: OpenCLDevice, case: dict[str, Any], cip: bool, dtypes: tuple[str, str]) -> None:
    rng = np.random.default_rng(case.pop("seed"))
    x = qtensor(rng, case.pop("shape"), dtypes[0])
    weights = {"sx": np.float32(0.05), "zx": zero_point(rng, dtypes[0]), "sy": np.float32(0.02),
               "zy": zero_point(rng, dtypes[1])}
    op, values = build("QLinearAveragePool", {"x": x}, weights, ["x", "sx", "zx", "sy", "zy"],
                       count_include_pad=int(cip), **case)
    check(dev, op, values)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": (7, 5)},  # the whole image: rule 5's integer form
    {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "ceil_mode": 1, "count_include_pad": 1},
    {"kernel_shape": (2, 3), "strides": (2, 1), "pads": (0, 1, 1, 0), "ceil_mode": 1},
])
def test_qlinear_average_pool_forms(dev: OpenCLDevice, attrs: dict[str, Any]) -> None:
    rng = np.random.default_rng(9)
    weights = {"sx": np.float32(0.07), "zx": np.uint8(3), "sy": np.float32(0.011), "zy": np.int8(-5)}
    op, values = build("QLinearAveragePool", {"x": qtensor(rng, (2, 3, 7, 5), "uint8")}, weights,
                       ["x", "sx", "zx", "sy", "zy"], **attrs)
    check(dev, op, values)


@FEW
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 15), st.integers(1, 15)),
       dtypes=st.tuples(st.sampled_from(Q8), st.sampled_from(Q8)), seed=st.integers(0, 2**16))
def test_qlinear_global_average_pool(dev: OpenCLDevice, shape: tuple[int, ...], dtypes: tuple[str, str],
                                     seed: int) -> None:
    rng = np.random.default_rng(seed)
    weights = {"sx": np.float32(0.05), "zx": zero_point(rng, dtypes[0]), "sy": np.float32(0.01),
               "zy": zero_point(rng, dtypes[1])}
    x = qtensor(rng, shape, dtypes[0])
    op, values = build("QLinearGlobalAveragePool", {"x": x}, weights, ["x", "sx", "zx", "sy", "zy"])
    check(dev, op, values)


@FEW
@given(count=st.integers(1, 4), axis=st.integers(-3, 2), ydtype=st.sampled_from(Q8), seed=st.integers(0, 2**16))
def test_qlinear_concat(dev: OpenCLDevice, count: int, axis: int, ydtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sy, zy = np.float32(0.05), zero_point(rng, ydtype)
    acts, weights, names = {}, {"sy": sy, "zy": zy}, ["sy", "zy"]
    for i in range(count):
        shape = [2, 3, 4]
        shape[axis % 3] = int(rng.integers(1, 5))
        dtype = ydtype if i == 0 else str(rng.choice(Q8))
        same = i == 0
        acts[f"x{i}"] = qtensor(rng, shape, dtype)
        weights[f"s{i}"] = sy if same else np.float32(rng.uniform(0.01, 0.2))
        weights[f"z{i}"] = zy if same else zero_point(rng, dtype)
        names += [f"x{i}", f"s{i}", f"z{i}"]
    op, values = build("QLinearConcat", acts, weights, names, axis=axis)
    check(dev, op, values)


MUL_ORDER = ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"]


def fused_clamp(rng: np.random.Generator, dtype: str, fused: bool) -> dict[str, int]:
    """A fused Relu/Clip as qmin/qmax attributes, or nothing."""
    if not fused:
        return {}
    info = np.iinfo(dtype)
    low = int(rng.integers(info.min, info.max // 2))
    return {"qmin": low, "qmax": int(rng.integers(low, info.max + 1))}


@FEW
@given(shapes=st.sampled_from([((2, 5, 7, 3), (2, 5, 7, 3)), ((1, 6, 4, 4), (1, 6, 1, 1)), ((3, 1, 5), (4, 1)),
                               ((1, 16, 32), (32,)), ((4, 1), (1, 9)), ((1,), (9, 9))]),
       dtypes=st.tuples(*[st.sampled_from(Q8)] * 3), fused=st.booleans(), b_const=st.booleans(),
       seed=st.integers(0, 2**31))
def test_qlinear_mul(dev: OpenCLDevice, shapes: tuple[tuple[int, ...], ...], dtypes: tuple[str, str, str],
                     fused: bool, b_const: bool, seed: int) -> None:
    """Rule 7 on broadcast shapes, random scales and zero points, bit for bit."""
    rng = np.random.default_rng(seed)
    ad, bd, yd = dtypes
    weights = {"sa": np.float32(rng.uniform(0.001, 0.5)), "za": zero_point(rng, ad),
               "sb": np.float32(rng.uniform(0.001, 0.5)), "zb": zero_point(rng, bd),
               "sy": np.float32(rng.uniform(1e-5, 0.05)), "zy": zero_point(rng, yd)}
    acts = {"a": qtensor(rng, shapes[0], ad)}
    (weights if b_const else acts)["b"] = qtensor(rng, shapes[1], bd)
    check(dev, *build("QLinearMul", acts, weights, MUL_ORDER, **fused_clamp(rng, yd, fused)))


@pytest.mark.parametrize("dtype", Q8)
def test_qlinear_mul_every_operand_pair(dev: OpenCLDevice, dtype: str) -> None:
    """All 256 x 256 operand pairs at scales whose products land on many half-way points."""
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)
    for sy in (np.float32(0.5), np.float32(0.0137)):
        weights = {"sa": np.float32(0.5), "za": np.asarray(3, dtype), "sb": np.float32(0.25),
                   "zb": np.asarray(1, dtype), "sy": sy, "zy": np.asarray(7, dtype)}
        check(dev, *build("QLinearMul", {"a": values.reshape(256, 1), "b": values.reshape(1, 256)}, weights, MUL_ORDER))


@FEW
@given(shape=st.sampled_from([(1, 7), (3, 4, 17), (2, 64, 64), (5,), (1, 2, 3, 200), (4, 1)]), axis=st.integers(-4, 3),
       dtypes=st.tuples(*[st.sampled_from(Q8)] * 2), fused=st.booleans(), seed=st.integers(0, 2**31))
def test_qlinear_softmax(dev: OpenCLDevice, shape: tuple[int, ...], axis: int, dtypes: tuple[str, str], fused: bool,
                         seed: int) -> None:
    """Rule 8 along any axis on random shapes and scales, bit for bit."""
    axis = axis % len(shape)
    rng = np.random.default_rng(seed)
    xd, yd = dtypes
    sy = np.float32(1.0 / 256.0) if rng.random() < 0.3 else np.float32(rng.uniform(0.0005, 0.05))
    weights = {"sx": np.float32(rng.uniform(0.005, 0.5)), "zx": zero_point(rng, xd), "sy": sy, "zy": zero_point(rng, yd)}
    check(dev, *build("QLinearSoftmax", {"x": qtensor(rng, shape, xd)}, weights, ["x", "sx", "zx", "sy", "zy"],
                      axis=axis, opset=13, **fused_clamp(rng, yd, fused)))


@SOME
@given(shape=st.sampled_from([(7,), (2, 3, 5), (1, 4, 3, 3), (2, 3, 45)]), per_axis=st.booleans(),
       dtype=st.sampled_from(["int8", "uint8", "int32"]), pow2=st.booleans(), cpu_style=st.booleans(),
       seed=st.integers(0, 2**16))
def test_quantize_dequantize(dev: OpenCLDevice, shape: tuple[int, ...], per_axis: bool, dtype: str, pow2: bool,
                             cpu_style: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = 1 if len(shape) > 1 else 0
    size = shape[axis] if per_axis else None
    scale = np.asarray(2.0 ** rng.integers(-3, 2, size=size) if pow2 else rng.uniform(0.01, 0.1, size=size), np.float32)
    zp = zero_point(rng, dtype if dtype != "int32" else "int8", size).astype(dtype)
    x = (rng.standard_normal(shape) * 8).astype(np.float32)
    if pow2:  # exact halves exercise round-half-to-even
        per_element = scale.reshape((-1,) + (1,) * (len(shape) - axis - 1)) if per_axis else scale
        x = ((np.round(x) + 0.5) * per_element).astype(np.float32)
    x.reshape(-1)[:2] = [1e6, -1e6]  # saturation
    op, values = build("QuantizeLinear", {"x": x}, {"s": scale, "z": zp}, ["x", "s", "z"], axis=axis)
    check_style(dev, cpu_style, op, values)
    q = reference_op(op, values)[0]
    op, values = build("DequantizeLinear", {"q": q}, {"s": scale, "z": zp}, ["q", "s", "z"], axis=axis)
    check(dev, op, values, exact=True)


@SOME
@given(case=pool_cases(), dtype=st.sampled_from(["int8", "uint8", "float32"]), dilation=st.integers(1, 2),
       cpu_style=st.booleans())
def test_max_pool(dev: OpenCLDevice, case: dict[str, Any], dtype: str, dilation: int, cpu_style: bool) -> None:
    rng = np.random.default_rng(case.pop("seed"))
    shape = case.pop("shape")
    x = rng.standard_normal(shape).astype(np.float32) if dtype == "float32" else qtensor(rng, shape, dtype)
    if (shape[2] - 1) < dilation * (case["kernel_shape"][0] - 1):
        dilation = 1
    op, values = build("MaxPool", {"x": x}, dilations=(dilation, 1), **case)
    check_style(dev, cpu_style, op, values, exact=True)


# --- data movement and Cast, exact on every dtype ---------------------------------------------------

MOVE_DTYPES = ("int8", "uint8", "float32", "int64", "int32")


def tensor(rng: np.random.Generator, shape: Sequence[int], dtype: str) -> np.ndarray:
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, size=shape).astype(dtype)


@SOME
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=5), dtype=st.sampled_from(MOVE_DTYPES), data=st.data())
def test_data_movement(dev: OpenCLDevice, shape: list[int], dtype: str, data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = tensor(rng, shape, dtype)
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    check(dev, *build("Transpose", {"x": x}, perm=data.draw(st.permutations(range(rank)))), exact=True)
    other = list(shape)
    other[axis] = data.draw(st.integers(1, 4))
    const = data.draw(st.booleans())
    y = tensor(rng, other, dtype)
    check(dev, *build("Concat", {"x": x}, {"c": y} if const else None, ["x", "c"] if const else None, axis=axis)
          if const else build("Concat", {"x": x, "c": y}, axis=axis), exact=True)
    cut = data.draw(st.integers(0, shape[axis]))
    sizes = [s for s in (cut, shape[axis] - cut) if s] or [shape[axis]]
    check(dev, *build("Split", {"x": x}, {"s": np.asarray(sizes, np.int64)}, ["x", "s"], outputs=len(sizes), axis=axis),
          exact=True)
    start, end = data.draw(st.integers(-7, 7)), data.draw(st.integers(-7, 7))
    step = data.draw(st.sampled_from([1, 2, -1, -2]))
    sl = {"st": np.asarray([start], np.int64), "en": np.asarray([end], np.int64), "ax": np.asarray([axis], np.int64),
          "sp": np.asarray([step], np.int64)}
    op, values = build("Slice", {"x": x}, sl, ["x", "st", "en", "ax", "sp"])
    if all(op.output_specs[0].shape):
        check(dev, op, values, exact=True)
    idx = rng.integers(-shape[axis], shape[axis], size=data.draw(st.sampled_from([(3,), (2, 2), ()])))
    idx_dtype = data.draw(st.sampled_from(["int64", "int32"]))
    if data.draw(st.booleans()):
        check(dev, *build("Gather", {"x": x}, {"i": idx.astype(idx_dtype)}, ["x", "i"], axis=axis), exact=True)
    else:
        check(dev, *build("Gather", {"x": x, "i": idx.astype(idx_dtype)}, axis=axis), exact=True)
    for op_type, extra, attrs in (("Flatten", {}, {"axis": data.draw(st.integers(0, rank))}),
                                  ("Reshape", {"s": np.asarray([-1], np.int64)}, {}),
                                  ("Unsqueeze", {"a": np.asarray([0, -1], np.int64)}, {}),
                                  ("Squeeze", {}, {}), ("Identity", {}, {})):
        check(dev, *build(op_type, {"x": x}, extra, ["x", *extra], **attrs), exact=True)


@pytest.mark.parametrize("source", ["float32", "uint8", "int8", "int32", "int64", "bool"])
def test_cast(dev: OpenCLDevice, source: str) -> None:
    from hetero.ir.ops.tensor import CAST_DTYPES

    rng = np.random.default_rng(7)
    x = (rng.integers(0, 100, size=(3, 7)) * (rng.random((3, 7)) > 0.3)).astype(source)
    if source == "float32":
        x = x + np.float32(0.25)
    kernel_dtypes = {"float32", "uint8", "int8", "int32", "int64", "bool"}
    for to, name in CAST_DTYPES.items():
        op, values = build("Cast", {"x": x}, to=to)
        if name in kernel_dtypes:
            check(dev, op, values, exact=True)
        else:  # a dtype the kernels do not move: a capability gap, refused before running
            assert not dev.supports(op)
            with pytest.raises(DeviceError, match="no Cast kernel"):
                dev.run(op, [dev.upload(v) for v in values])


# --- float32 ops within 1e-4 ------------------------------------------------------------------------

@SOME
@given(case=qconv_cases(), bias=st.booleans())
def test_conv(dev: OpenCLDevice, case: dict[str, Any], bias: bool) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["hw"])).astype(np.float32)
    weights = {"w": rng.standard_normal((case["m"], case["c"] // case["group"], *case["k"])).astype(np.float32)}
    if bias:
        weights["b"] = rng.standard_normal(case["m"]).astype(np.float32)
    attrs = dict(group=case["group"], strides=case["strides"], dilations=case["dilations"], pads=case["pads"])
    check(dev, *build("Conv", {"x": x}, weights, **attrs))


@SOME
@given(m=st.integers(1, 40), k=st.integers(1, 50), n=st.integers(1, 40), trans=st.tuples(st.booleans(), st.booleans()),
       c=st.sampled_from([None, (1,), "n", "mn", "m1"]), b_const=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm(dev: OpenCLDevice, m: int, k: int, n: int, trans: tuple[bool, bool], c: Any, b_const: bool,
              seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans[0] else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans[1] else (k, n)).astype(np.float32)
    acts, weights = {"a": a}, {}
    (weights if b_const else acts)["b"] = b
    shape = {None: None, (1,): (1,), "n": (n,), "mn": (m, n), "m1": (m, 1)}[c]
    if shape is not None:
        weights["c"] = rng.standard_normal(shape).astype(np.float32)
    names = ["a", "b"] + (["c"] if shape else [])
    check(dev, *build("Gemm", acts, weights, names, transA=int(trans[0]), transB=int(trans[1]), alpha=0.7, beta=1.3))


@FEW
@given(shapes=st.sampled_from([((5, 7), (7, 3)), ((2, 3, 6, 4), (4, 5)), ((6,), (6, 3)), ((2, 4, 6), (6,)),
                               ((3, 1, 9, 40), (2, 40, 33)), ((1, 70, 20), (20, 50))]),
       b_const=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul(dev: OpenCLDevice, shapes: tuple[tuple[int, ...], ...], b_const: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    check(dev, *(build("MatMul", {"a": a}, {"b": b}, ["a", "b"]) if b_const else build("MatMul", {"a": a, "b": b})))


@SOME
@given(op_type=st.sampled_from(["Add", "Sub", "Mul", "Div"]),
       shapes=st.sampled_from([((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (3, 1)), ((1,), (4, 5)), ((6, 1, 2), (1, 5, 1)),
                               ((2, 1, 3, 1, 2, 1, 2), (1, 2, 1, 3, 1, 2, 1))]),
       const=st.booleans(), seed=st.integers(0, 2**16))
def test_binary(dev: OpenCLDevice, op_type: str, shapes: tuple[tuple[int, ...], ...], const: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    if op_type == "Div":
        b = np.where(np.abs(b) < 0.1, 1.0, b).astype(np.float32)
    op, values = build(op_type, {"a": a}, {"b": b}, ["a", "b"]) if const else build(op_type, {"a": a, "b": b})
    if dev.supports(op):
        check(dev, op, values)
    else:
        assert len(op.output_specs[0].shape) > 6


@pytest.mark.parametrize("op_type,attrs,extra", [
    ("Relu", {}, {}), ("Sigmoid", {}, {}), ("Tanh", {}, {}), ("HardSwish", {}, {}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, {}), ("Clip", {}, {"lo": np.float32(-0.5), "hi": np.float32(0.7)}),
    ("Clip", {}, {"lo": np.float32(0.0)}),
])
def test_unary(dev: OpenCLDevice, op_type: str, attrs: dict[str, Any], extra: dict[str, Any]) -> None:
    x = (np.random.default_rng(3).standard_normal((3, 5, 7)) * 4).astype(np.float32)
    check(dev, *build(op_type, {"x": x}, extra, ["x", *extra], **attrs))


@SOME
@given(case=pool_cases(), cip=st.booleans())
def test_average_pool(dev: OpenCLDevice, case: dict[str, Any], cip: bool) -> None:
    rng = np.random.default_rng(case.pop("seed"))
    x = rng.standard_normal(case.pop("shape")).astype(np.float32)
    check(dev, *build("AveragePool", {"x": x}, count_include_pad=int(cip), **case))


@FEW
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=5), data=st.data())
def test_reductions(dev: OpenCLDevice, shape: list[int], data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape).astype(np.float32)
    rank = len(shape)
    check(dev, *build("GlobalAveragePool", {"x": x}))
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank, unique_by=lambda a: a % rank))
    keep = data.draw(st.booleans())
    check(dev, *build("ReduceMean", {"x": x}, {"axes": np.asarray(axes, np.int64)}, ["x", "axes"], keepdims=int(keep)))
    check(dev, *build("Softmax", {"x": x}, axis=data.draw(st.integers(-rank, rank - 1))))
    channels = shape[1]
    bn = {name: rng.uniform(0.5, 1.5, channels).astype(np.float32) for name in ("g", "b", "m", "v")}
    check(dev, *build("BatchNormalization", {"x": x}, bn, ["x", "g", "b", "m", "v"], epsilon=1e-3))


def test_large_gap_and_conv(dev: OpenCLDevice) -> None:
    rng = np.random.default_rng(5)
    check(dev, *build("GlobalAveragePool", {"x": rng.standard_normal((1, 8, 57, 61)).astype(np.float32)}))
    w = {"w": rng.standard_normal((48, 24, 3, 3)).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32)}
    check(dev, *build("Conv", {"x": rng.standard_normal((1, 24, 30, 30)).astype(np.float32)}, w, pads=(1, 1, 1, 1)))


# --- whole graphs, timing, capability -----------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "builtin:seed-cnn",
    pytest.param("builtin:mobilenetv2", marks=pytest.mark.slow),
    pytest.param(str(SQUEEZENET), marks=pytest.mark.slow),
])
def test_whole_graph(dev: OpenCLDevice, spec: str) -> None:
    from hetero.exec.executor import run_on_device
    from hetero.ir.source import load_graph

    if spec.endswith(".onnx") and not Path(spec).is_file():
        pytest.skip(f"{spec} is not present")
    graph = load_graph(spec)
    rng = np.random.default_rng(0)
    feeds = {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}
    want = run_reference(graph, feeds)
    got = run_on_device(graph, dev, feeds)
    for name, expected in want.items():
        assert got[name].shape == expected.shape and got[name].dtype == expected.dtype
        err = np.linalg.norm((got[name] - expected).ravel()) / np.linalg.norm(expected.ravel())
        assert err <= REL_L2, f"{spec} output {name}: relative L2 error {err:.3g}"


def _conv_op() -> tuple[Op, list[np.ndarray]]:
    rng = np.random.default_rng(2)
    w = {"w": rng.standard_normal((32, 16, 3, 3)).astype(np.float32)}
    return build("Conv", {"x": rng.standard_normal((1, 16, 40, 40)).astype(np.float32)}, w, pads=(1, 1, 1, 1))


def test_timed_run_uses_event_profiling(dev: OpenCLDevice) -> None:
    op, values = _conv_op()
    inputs = [dev.upload(v) for v in values]
    outputs, seconds = dev.timed_run(op, inputs)
    assert 0 < seconds < 10
    np.testing.assert_allclose(dev.download(outputs[0]), reference_op(op, values)[0], rtol=1e-3, atol=1e-3)


def test_throttle_slows_the_device_for_real(cl_info: DeviceInfo) -> None:
    op, values = _conv_op()
    slow = OpenCLDevice(cl_info, throttle=4.0)
    inputs = [slow.upload(v) for v in values]
    slow.timed_run(op, inputs)  # warm-up: kernels built, weights uploaded
    start = time.perf_counter()
    _, reported = slow.timed_run(op, inputs)  # 4 x the kernel time, of which 3 x slept on the host
    timed_wall = time.perf_counter() - start
    assert timed_wall >= 0.75 * reported > 0
    start = time.perf_counter()
    slow.run(op, inputs)  # run() sleeps the same way
    assert time.perf_counter() - start >= 3.0 * slow.kernel_seconds() > 0
    with pytest.raises(DeviceError, match="throttle"):
        OpenCLDevice(cl_info, throttle=0.5)


def test_conditions_are_truthful(dev: OpenCLDevice) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    assert dev.supports(build("Relu", {"x": x})[0])
    assert not dev.supports(build("Relu", {"x": x.astype(np.int32)})[0])
    assert not dev.supports(build("Add", {"a": x.astype(np.uint8), "b": x.astype(np.uint8)})[0])
    assert not dev.supports(build("Cast", {"x": x}, to=11)[0])  # float64 is not kept on the device
    clip_input = build("Clip", {"x": x, "lo": np.zeros((), np.float32)})[0]
    assert not dev.supports(clip_input) and "Clip" in dev.why_not(clip_input)
    with pytest.raises(DeviceError, match="no Clip kernel"):
        dev.run(clip_input, [dev.upload(x), dev.upload(np.zeros((), np.float32))])


# --- transformer ops (kernels/transformer.cl), against the reference within 1e-5 -------------------

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
TRANSFORMER_CASES = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
                             phases=NO_SHRINK)  # a failure reports its case at once; shrinking 1M-element inputs takes minutes


@pytest.mark.parametrize("kind", sorted(cases_by_kind()))
def test_transformer_ops(dev: OpenCLDevice, kind: str) -> None:
    @TRANSFORMER_CASES
    @given(case=cases_by_kind()[kind])
    def run(case: Case) -> None:
        check_case(dev, case)

    run()


def test_transformer_ops_large(dev: OpenCLDevice) -> None:
    for case in large_cases():
        check_case(dev, case)


def test_transformer_ops_unclaimed_forms_are_capability_gaps(dev: OpenCLDevice) -> None:
    x = np.ones((2, 3, 4))
    gaps = [
        Case("LayerNormalization", {"x": x}, {"s": np.ones(4)}),  # float64
        Case("LayerNormalization", {"x": x.astype(np.float32), "s": np.ones(4, np.float32)}),  # broadcast at run time ok
        Case("LayerNormalization", {"x": x.astype(np.float32), "s": np.ones((1, 4), np.float32)}),  # needs expanding: constants only
        Case("Gelu", {"x": x}),
        Case("Pow", {"a": x.astype(np.float32), "b": x.astype(np.int64)}),  # integer exponent at run time
        Case("Equal", {"a": x.astype(np.uint8), "b": x.astype(np.uint8)}),
        Case("ReduceMax", {"x": x.astype(np.int32)}),
        Case("Trilu", {"x": x.astype(np.float16)}),
        Case("Where", {"c": x > 0, "x": x.astype(np.float64), "y": x.astype(np.float64)}),
    ]
    for case in gaps:
        op, values = case.build()
        claimed = dev.supports(op)
        assert claimed == (case.activations.get("s") is not None and case.activations["s"].shape == (4,)), op.signature()
        if not claimed:
            with pytest.raises(DeviceError, match=f"no {op.type} kernel"):
                dev.run(op, [dev.upload(v) for v in values])
