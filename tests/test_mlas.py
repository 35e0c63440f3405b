"""hetero's float32 Softmax, Erf, Gelu and Tanh against onnxruntime's CPU kernels bit for bit; the
cpu device gives the reference's bits for the float ops an int8 graph quantizes, other devices
refuse them there; --input-shape for models with symbolic input dimensions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hetero.backends.reference import reference_op
from hetero.ir.graph import TensorSpec, make_op
from hetero.ir.ops import mlas

EXPORTS = Path(__file__).resolve().parent / "data" / "transformers"


def ort_single(op_type: str, x: np.ndarray, attrs: dict, opset: int) -> np.ndarray:
    node = helper.make_node(op_type, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10 if opset >= 20 else 8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fma_rounds_once() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(100_000).astype(np.float32) for _ in range(3))
    exact = [float(np.float32(np.float64(x) * np.float64(y) + np.float64(z))) for x, y, z in zip(a[:50], b[:50], c[:50])]
    np.testing.assert_array_equal(mlas.fma(a[:50], b[:50], c[:50]), np.asarray(exact, np.float32))
    separate = ((a * b).astype(np.float32) + c).astype(np.float32)
    assert np.mean(mlas.fma(a, b, c) != separate) > 0.01  # it is a fused operation, not two roundings


@pytest.mark.parametrize("op_type,attrs,opset", [("Erf", {}, 17), ("Tanh", {}, 17), ("Gelu", {}, 20),
                                                  ("Gelu", {"approximate": "tanh"}, 20)])
def test_elementwise_equal_onnxruntime_bit_for_bit(op_type: str, attrs: dict, opset: int) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(60_001) * 3).astype(np.float32)
    x[:6] = [0.0, -0.0, 0.921875, -0.921875, 3.925, 20.0]
    got = reference_op(make_op("n", op_type, ["x"], ["y"], attrs, {"x": TensorSpec("x", x.shape, "float32")}, {}), [x])[0]
    np.testing.assert_array_equal(got.view(np.int32), ort_single(op_type, x, attrs, opset).view(np.int32))


@pytest.mark.parametrize("shape,axis", [((2, 4, 16, 16), -1), ((3, 7, 5), -1), ((2, 8, 1000), -1), ((2, 3, 50, 33), -1),
                                        ((4, 6, 9), 1), ((1, 1, 1), -1), ((2, 5, 47), 0)])
def test_softmax_equals_onnxruntime_bit_for_bit(shape: tuple[int, ...], axis: int) -> None:
    """Rows of 1 to 1000: the 16-lane accumulation with its masked tail and the final reduction."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[::7] = -1e9  # masked positions, as an attention mask writes them
    got = reference_op(make_op("n", "Softmax", ["x"], ["y"], {"axis": axis}, {"x": TensorSpec("x", shape, "float32")}, {}), [x])[0]
    np.testing.assert_array_equal(got, ort_single("Softmax", x, {"axis": axis}, 13))


def _lowered_tiny_vit():
    from conftest import make_model  # noqa: F401  - tests/ on sys.path
    from hetero.ir.onnx_import import import_onnx
    from hetero.ir.source import load_onnx
    from hetero.quant.lowering import lower_qdq
    from hetero.quant.qdq import quantize_model

    graph = import_onnx(load_onnx("builtin:tiny-vit"))
    rng = np.random.default_rng(0)
    shape = graph.inputs[0].shape
    return lower_qdq(import_onnx(quantize_model(graph, [rng.standard_normal(shape).astype(np.float32) for _ in range(4)])))


def test_float_ops_an_int8_graph_quantizes_run_with_the_references_bits_or_not_at_all() -> None:
    """In a lowered int8 tiny-vit the LayerNormalization, Softmax and Erf before a QuantizeLinear are
    marked; the cpu device runs them with the reference's bits, and a device whose kernels round
    otherwise (any with an empty same_bits_as_reference, as OpenCL and CUDA) refuses them, naming the node."""
    from hetero.backends.base import HostDevice
    from hetero.backends.cpu.device import CpuDevice
    from hetero.backends.discovery import DeviceInfo
    from hetero.exec.executor import run_on_device
    from hetero.backends.reference import ReferenceDevice

    lowered = _lowered_tiny_vit()
    marked = [op for op in lowered.ops_in_order() if mlas.feeds_quantize(op)]
    assert {op.type for op in marked} == {"LayerNormalization", "Softmax", "Erf"}
    rng = np.random.default_rng(9)
    feed = {lowered.inputs[0].name: rng.standard_normal(lowered.inputs[0].shape).astype(np.float32)}
    values = dict(feed)
    run_on_device(lowered, ReferenceDevice(), feed, observe=lambda op, outs, _: values.update(zip(op.outputs, outs)))
    cpu = CpuDevice(DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0))
    try:
        for op in marked:
            assert cpu.supports(op), cpu.why_not(op)
            inputs = [values[t] for t in op.activation_inputs]
            got = cpu.download(cpu.run(op, [cpu.upload(v) for v in inputs])[0])
            np.testing.assert_array_equal(got, values[op.outputs[0]], err_msg=op.name)
    finally:
        cpu.close()

    class OtherRounding(HostDevice):  # a device with kernels for these ops that round its own way
        kernels = {op.type: (lambda device, op, inputs: []) for op in marked}

    other = OtherRounding(DeviceInfo("other", "other", "test", "numpy", 1, 0))
    for op in marked:
        assert not other.supports(op) and op.name in other.why_not(op) and "QuantizeLinear" in other.why_not(op)


def _hetero(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hetero", *args], capture_output=True, text=True, timeout=120)


def test_input_shape_fixes_symbolic_dims_and_refuses_bad_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from hetero.app.cli import main

    model = EXPORTS / "gpt_dynamic_ts.onnx"
    if not model.is_file():
        pytest.skip(f"{model} is missing")
    assert main(["inspect", str(model), "--input-shape", "input_ids=1x12,attention_mask=1x12", "--json"]) == 0
    inputs = {i["name"]: i["shape"] for i in json.loads(capsys.readouterr().out)["inputs"]}
    assert inputs == {"input_ids": [1, 12], "attention_mask": [1, 12]}
    for shape, message in [("foo=1x3", "not a model input"), ("input_ids=12", "rank 2, not 1"),
                           ("input_ids=0x3", "must be > 0"), ("input_ids=1x", "whole numbers")]:
        try:
            code = main(["inspect", str(model), "--input-shape", shape])
        except SystemExit as exit_:  # argparse refuses a malformed value
            code = exit_.code
        err = capsys.readouterr().err
        assert code not in (0, None) and message in err and "Traceback" not in err, (shape, err)
    assert main(["inspect", str(EXPORTS / "padded_lm_dynamo.onnx"), "--input-shape", "input_ids=1x8"]) == 1
    assert "fixed at 16" in capsys.readouterr().err
    ids = tmp_path / "ids.npz"
    np.savez(ids, input_ids=np.arange(10, dtype=np.int64)[None], attention_mask=np.ones((1, 10), np.int64))
    assert main(["run", str(model), "--input", str(ids)]) == 0  # the shape comes from the data
    assert "[1, 10, 64]" in capsys.readouterr().out


@pytest.mark.slow
def test_int8_tiny_lm_partitioned_over_real_devices_is_bit_identical(tmp_path: Path) -> None:
    """int8 tiny-lm over cpu + opencl:0 + reference, a random placement (which respects the gaps:
    marked float ops and QLinearMul/QLinearSoftmax off OpenCL), two requests in flight: the outputs
    equal the single-device reference run's bit for bit."""
    from hetero.backends.discovery import discover

    if "opencl:0" not in {d.name for d in discover()[0]}:
        pytest.skip("no opencl:0 on this machine")
    ids = tmp_path / "ids.npy"
    np.save(ids, np.random.default_rng(0).integers(0, 256, (3, 32)).astype(np.int64))
    single, parted = tmp_path / "single.npy", tmp_path / "parted.npy"
    done = _hetero("run", "builtin:tiny-lm", "--input", str(ids), "--precision", "int8", "-o", str(single))
    assert done.returncode == 0, done.stderr
    done = _hetero("run", "builtin:tiny-lm", "--input", str(ids), "--precision", "int8", "--devices", "cpu,opencl:0,reference",
                   "--placement", "random:3", "--inflight", "2", "--json", "-o", str(parted))
    assert done.returncode == 0, done.stderr
    import json

    placement = json.loads(done.stdout)["placement"]
    assert {"cpu", "opencl:0", "reference"} <= set(placement.values())
    from hetero.quant.precision import load_for_precision

    marked = [op.name for op in load_for_precision("builtin:tiny-lm", "int8").ops_in_order() if mlas.feeds_quantize(op)]
    assert marked and all(placement[name] in ("cpu", "reference") for name in marked), {n: placement[n] for n in marked}
    np.testing.assert_array_equal(np.load(parted), np.load(single))


def test_cpu_numba_kernels_give_the_references_bits() -> None:
    """The cpu device's numba Erf, Tanh, Gelu (both forms), Softmax rows and LayerNormalization
    (rows of 1 to 69, with and without bias) equal hetero.ir.ops.mlas bit for bit."""
    from hetero.backends.cpu import kernels_mlas as m

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(30_001) * 4).astype(np.float32)
    x[:8] = [0.0, -0.0, 0.921875, -0.921875, 3.925, -20.0, 1e-30, -1e-40]
    for code, fn in ((m.ERF, mlas.erf), (m.TANH, mlas.tanh), (m.GELU, mlas.gelu), (m.GELU_TANH, lambda v: mlas.gelu(v, "tanh"))):
        np.testing.assert_array_equal(m.mlas_unary(code, x).view(np.int32), fn(x).view(np.int32), err_msg=str(code))
    for _ in range(25):
        shape = tuple(int(d) for d in rng.integers(1, 70, rng.integers(2, 4)))
        scores = (rng.standard_normal(shape) * rng.uniform(0.5, 6)).astype(np.float32)
        scores.reshape(-1)[::11] = -1e9
        rows = np.ascontiguousarray(scores.reshape(-1, shape[-1]))
        out = np.empty_like(rows)
        m.softmax_rows(rows, out)
        np.testing.assert_array_equal(out.reshape(shape), mlas.softmax(scores, -1), err_msg=str(shape))
        v = (rng.standard_normal(shape) * 2 + rng.uniform(-3, 3)).astype(np.float32)
        gamma, beta = (rng.standard_normal(shape[-1:]).astype(np.float32) for _ in range(2))
        for bias in (beta, None):
            for got, want in zip(m.layer_norm(v, gamma, bias, len(shape) - 1, 1e-5),
                                 mlas.layer_norm(v, gamma, bias, len(shape) - 1, 1e-5)):
                np.testing.assert_array_equal(got, want, err_msg=str(shape))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 49, 63, 64, 65, 196])
def test_cpu_reduce_mean_sums_in_onnxruntimes_order(n: int) -> None:
    """The cpu device's compiled ReduceMean over trailing axes equals the reference's
    (onnxruntime's Eigen summation, ``mlas.reduce_mean_trailing``) bit for bit, over 1-9 rows
    (every alignment of a row's start), one axis or two, kept or dropped; and onnxruntime's own."""
    from hetero.backends.cpu import kernels_mlas as m

    rng = np.random.default_rng(n)
    for count in range(1, 10):
        x = (rng.standard_normal((count, n)) * rng.uniform(1, 1e4)).astype(np.float32)
        x.reshape(-1)[::7] *= 1e3  # large terms: a different summation order rounds differently
        for keep in (True, False):
            np.testing.assert_array_equal(m.reduce_mean_trailing(x, 1, keep), mlas.reduce_mean_trailing(x, 1, keep))
    x = (rng.standard_normal((2, 5, n, 3)) * 300).astype(np.float32)
    got = m.reduce_mean_trailing(x, 2, True)
    np.testing.assert_array_equal(got, mlas.reduce_mean_trailing(x, 2, True))
    model = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)], "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ort_y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got.view(np.int32), ort_y.view(np.int32))


def test_layer_norm_equals_onnxruntime_bit_for_bit() -> None:
    """Rows of 1 to 768 (the Welford loop below 8, the 8- and 4-lane sums above), y, Mean and
    InvStdDev, with and without bias."""
    from onnx import numpy_helper

    rng = np.random.default_rng(11)
    for n in (1, 3, 7, 8, 13, 32, 100, 197, 768):
        x = (rng.standard_normal((40, n)) * 2 + rng.uniform(-3, 3)).astype(np.float32)
        gamma, beta = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
        for bias in (beta, None):
            names = ["x", "g"] + ([] if bias is None else ["b"])
            node = helper.make_node("LayerNormalization", names, ["y", "mean", "inv"], axis=-1, epsilon=1e-5)
            inits = [numpy_helper.from_array(gamma, "g")] + ([] if bias is None else [numpy_helper.from_array(bias, "b")])
            graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [40, n])],
                                      [helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in ("y", "mean", "inv")], inits)
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            want = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})
            op = make_op("n", "LayerNormalization", names, ["y", "mean", "inv"], {"axis": -1, "epsilon": 1e-5},
                         {"x": TensorSpec("x", x.shape, "float32")}, dict(zip(names[1:], [gamma, bias][: len(names) - 1])))
            for got, expected, what in zip(reference_op(op, [x]), want, ("y", "mean", "inv")):
                np.testing.assert_array_equal(got, expected, err_msg=f"n={n} {what} bias={bias is not None}")
