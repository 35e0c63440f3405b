"""onnxruntime's float arithmetic in quantize_dynamic models: MLAS's SGEMM (MatMul, FusedMatMul),
SkipLayerNormalization, QuickGelu, ReduceMean over trailing axes and Pow by 3 against
onnxruntime 1.32's CPU kernels bit for bit; hetero's fusion pass forms the fused ops where
onnxruntime's optimiser does; the float ops a DynamicQuantizeLinear depends on are marked, and a
partitioned run over real devices equals the reference's bits.

MLAS picks its kernels by ISA: Softmax's lane sums are its AVX-512 kernel's and SGEMM's
chains are fused multiply-adds (FMA3 or AVX-512), so the whole-model comparisons skip on a CPU
without AVX-512 (there onnxruntime sums the softmax in 8 lanes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetero.ir.ops import mlas
from hetero.ir.ops.fused import PACKED_B

F32 = np.float32


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
needs_fma = pytest.mark.skipif("fma" not in FLAGS, reason="onnxruntime's SGEMM here has no FMA path (no fma flag)")
needs_avx512 = pytest.mark.skipif("avx512f" not in FLAGS,
                                  reason="onnxruntime sums Softmax in 8 lanes without AVX-512; hetero emulates its AVX-512 kernel")


def ort_node(op_type: str, acts: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
             outputs: int = 1, **attrs: object) -> list[np.ndarray]:
    consts = consts or {}
    names = [f"y{i}" for i in range(outputs)]
    domain = "com.microsoft" if op_type in ("FusedMatMul", "SkipLayerNormalization", "QuickGelu") else ""
    node = helper.make_node(op_type, [*acts, *consts], names, domain=domain, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in acts.items()],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                              [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, acts)


@needs_fma
@pytest.mark.parametrize("a_shape,b_shape", [((5, 300), (300, 7)), ((40, 513), (513, 33)), ((3, 200), (200, 129)),
                                             ((2, 3, 9, 700), (700, 20)), ((1, 4, 32, 16), (1, 4, 16, 32)),
                                             ((2, 1, 6, 260), (3, 260, 5)), ((4, 600), (600, 600))])
def test_sgemm_equals_onnxruntime_matmul_and_fused_matmul(a_shape: tuple, b_shape: tuple) -> None:
    """K blocks of 128 (doubled for narrow N) with B an activation, of 256 with B a constant;
    alpha applied after the sum."""
    rng = np.random.default_rng(sum(a_shape) + sum(b_shape))
    a, b = (rng.standard_normal(s).astype(F32) for s in (a_shape, b_shape))
    np.testing.assert_array_equal(mlas.sgemm(a, b), ort_node("MatMul", {"a": a, "b": b})[0])
    fused = ort_node("FusedMatMul", {"a": a, "b": b}, alpha=0.37)[0]
    np.testing.assert_array_equal(mlas.sgemm(a, b, 0.37), fused)
    if len(b_shape) == 2:
        np.testing.assert_array_equal(mlas.sgemm(a, b, packed_b=True), ort_node("MatMul", {"a": a}, {"b": b})[0])
        from hetero.ir.ops import get

        got = get("FusedMatMul").reference([a, b], {"alpha": 0.37, PACKED_B: 1})[0]
        np.testing.assert_array_equal(got, ort_node("FusedMatMul", {"a": a}, {"b": b}, alpha=0.37)[0])


@pytest.mark.parametrize("n", [3, 7, 24, 48, 64, 197])
def test_skip_layer_norm_quick_gelu_reduce_mean_and_pow_equal_onnxruntime(n: int) -> None:
    rng = np.random.default_rng(n)
    x, skip = (rng.standard_normal((2, 9, n)).astype(F32) * 3 for _ in range(2))
    gamma, beta = (1 + 0.1 * rng.standard_normal(n)).astype(F32), (0.1 * rng.standard_normal(n)).astype(F32)
    y, _, _, total = ort_node("SkipLayerNormalization", {"x": x, "s": skip}, {"g": gamma, "b": beta}, outputs=4, epsilon=1e-5)
    mine, s = mlas.skip_layer_norm(x, skip, gamma, beta, None, 1e-5)
    np.testing.assert_array_equal(s, total)
    np.testing.assert_array_equal(mine, y)
    np.testing.assert_array_equal(mlas.quick_gelu(x), ort_node("QuickGelu", {"x": x}, alpha=1.0)[0])
    np.testing.assert_array_equal(mlas.logistic(x), ort_node("Sigmoid", {"x": x})[0])
    from hetero.ir.ops import get

    for axes in ([2], [1, 2], [0, 1, 2]):
        want = ort_node("ReduceMean", {"x": x}, axes=axes, keepdims=1)[0]
        np.testing.assert_array_equal(get("ReduceMean").reference([x], {"axes": tuple(axes), "keepdims": 1})[0], want)
    np.testing.assert_array_equal(get("Pow").reference([x, np.array(3.0, F32)], {})[0],
                                  ort_node("Pow", {"x": x}, {"e": np.array(3.0, F32)})[0])


def test_fusion_pass_forms_what_onnxruntime_fuses_and_marks_the_float_ops(tmp_path: Path) -> None:
    """On quantize_dynamic's tiny-lm: the same FusedMatMul / Gelu / SkipLayerNormalization
    counts as onnxruntime's optimised model; every float op before a DynamicQuantizeLinear
    whose bits could differ by device is marked, a device without the reference's bits refuses
    it; fp32 and QDQ graphs are not rewritten."""
    from collections import Counter

    from hetero.backends.base import DeviceInfo, HostDevice
    from hetero.ir.onnx_import import import_onnx
    from hetero.ir.ops.fused import fuse_like_onnxruntime
    from test_quant_transformer import builtin_transformer, dynamic, session

    model = builtin_transformer("tiny-lm")
    assert fuse_like_onnxruntime(plain := import_onnx(model)) is plain
    quantized = dynamic(model, tmp_path)
    session(quantized, save_to=tmp_path / "opt.onnx")
    theirs = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    graph = import_onnx(quantized)
    ours = Counter(op.type for op in graph.ops_in_order())
    assert ours["FusedMatMul"] == theirs["FusedMatMul"] + theirs["MatMul"] and ours["FusedMatMul"] >= 4
    assert ours["Gelu"] == theirs["Gelu"] and ours["SkipLayerNormalization"] == theirs["SkipLayerNormalization"] == 1
    assert "MatMul" not in ours
    marked = [op for op in graph.ops_in_order() if mlas.feeds_quantize(op)]
    assert {op.type for op in marked} == {"FusedMatMul", "Softmax", "LayerNormalization", "Gelu"}
    assert not any(op.type in mlas.SAME_BITS_EVERYWHERE or "Quantize" in op.type for op in marked)

    class OtherRounding(HostDevice):
        kernels = {op.type: (lambda device, op, inputs: []) for op in marked}

    other = OtherRounding(DeviceInfo("other", "other", "test", "numpy", 1, 0))
    assert all(not other.supports(op) and "DynamicQuantizeLinear" in other.why_not(op) for op in marked)


def _hetero(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hetero", *args], capture_output=True, text=True, timeout=120)


@needs_avx512
@pytest.mark.slow
def test_dynamic_tiny_lm_partitioned_over_real_devices_equals_onnxruntime(tmp_path: Path) -> None:
    """quantize_dynamic's tiny-lm over cpu + opencl:0 + reference, a random placement, two
    requests in flight: the output equals onnxruntime's (and so the reference's) bit for bit."""
    from hetero.backends.discovery import discover
    from test_quant_transformer import builtin_transformer, dynamic, session

    devices = ",".join(["cpu", *(["opencl:0"] if "opencl:0" in {d.name for d in discover()[0]} else []), "reference"])
    quantized = dynamic(builtin_transformer("tiny-lm"), tmp_path)
    path = tmp_path / "tiny_lm_dynamic.onnx"
    onnx.save(quantized, str(path))
    ids = np.random.default_rng(0).integers(0, 256, (2, 32)).astype(np.int64)
    np.save(tmp_path / "ids.npy", ids)
    parted = tmp_path / "parted.npy"
    done = _hetero("run", str(path), "--input", str(tmp_path / "ids.npy"), "--devices", devices, "--placement", "random:5",
                   "--inflight", "2", "--json", "-o", str(parted))
    assert done.returncode == 0, done.stderr
    assert len(set(json.loads(done.stdout)["placement"].values())) >= 2
    theirs = session(quantized)
    want = np.concatenate([theirs.run(None, {theirs.get_inputs()[0].name: ids[i:i + 1]})[0] for i in range(len(ids))])
    np.testing.assert_array_equal(np.load(parted).reshape(want.shape), want)
