"""Post-training quantization: the math's properties, calibration, and the QDQ models it writes."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetero.exec.executor import run_reference
from hetero.ir.datasets import calibration_digits, load_digits_28
from hetero.errors import InputError
from hetero.ir.models import seed_cnn
from hetero.ir.onnx_import import import_onnx, load_model
from hetero.quant.calibrate import calibrate, calibration_feeds, calibration_for
from hetero.quant.math import activation_params, dequantize_array, quantize_array, quantize_bias, weight_params
from hetero.quant.qdq import quantize_model
from hetero.resources import seed_model_path

DTYPES = ("uint8", "int8")
finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[float, float, str]:
    low = draw(st.floats(-1e3, 0, allow_nan=False, width=32))
    high = draw(st.floats(0, 1e3, allow_nan=False, width=32))
    if high - low < 1e-3:
        high = low + 1.0
    return low, high, draw(st.sampled_from(DTYPES))


# ----------------------------------------------------------------------------- the math


@settings(max_examples=200, deadline=None)
@given(ranges(), st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=50))
def test_round_trip_within_half_a_step(bounds: tuple[float, float, str], fractions: list[float]) -> None:
    low, high, dtype = bounds
    scale, zero_point = activation_params(low, high, dtype)
    x = np.asarray([low + f * (high - low) for f in fractions], np.float32)
    q = quantize_array(x, scale, zero_point)
    assert q.dtype == np.dtype(dtype)
    error = np.abs(dequantize_array(q, scale, zero_point).astype(np.float64) - x)
    assert error.max() <= scale / 2 * (1 + 1e-5) + 1e-6 * np.abs(x).max()


@settings(max_examples=200, deadline=None)
@given(ranges())
def test_zero_is_exact_and_parameters_in_range(bounds: tuple[float, float, str]) -> None:
    low, high, dtype = bounds
    scale, zero_point = activation_params(low, high, dtype)
    info = np.iinfo(dtype)
    assert scale.dtype == np.float32 and scale > 0
    assert zero_point.dtype == np.dtype(dtype) and info.min <= zero_point <= info.max
    assert np.isclose(float(scale), (high - low) / 255, rtol=1e-6)
    assert int(zero_point) == info.min - round(low / float(scale))
    q = quantize_array(np.zeros(3, np.float32), scale, zero_point)
    assert (q == zero_point).all() and (dequantize_array(q, scale, zero_point) == 0).all()


@settings(max_examples=100, deadline=None)
@given(ranges(), st.floats(1.5, 1e6))
def test_saturation(bounds: tuple[float, float, str], factor: float) -> None:
    low, high, dtype = bounds
    scale, zero_point = activation_params(low, high, dtype)
    info = np.iinfo(dtype)
    span = (high - low) * factor + 1.0
    q = quantize_array(np.asarray([high + span, low - span], np.float32), scale, zero_point)
    assert q.tolist() == [info.max, info.min]


@given(st.integers(-100, 100), st.sampled_from(DTYPES), st.sampled_from([0.25, 0.5, 1.0, 2.0]))
def test_ties_round_half_to_even(k: int, dtype: str, scale: float) -> None:
    zero_point = np.dtype(dtype).type(0 if dtype == "int8" else 128)
    x = np.float32((k + 0.5) * scale)
    q = int(quantize_array(np.asarray([x]), np.float32(scale), zero_point)[0]) - int(zero_point)
    assert q == (k if k % 2 == 0 else k + 1)


def test_range_widened_to_include_zero() -> None:
    assert activation_params(2.0, 4.0) == activation_params(0.0, 4.0)
    scale, zero_point = activation_params(-3.0, -1.0, "int8")
    assert zero_point == 127 and np.isclose(scale, 3 / 255)
    assert activation_params(0.0, 0.0) == (np.float32(1.0), np.uint8(0))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_weight_params_per_channel(channels: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, size)) * rng.uniform(0.01, 10, (channels, 1))).astype(np.float32)
    w[0] = 0.0  # an all-zero channel gets scale 1 and quantizes to 0
    scales, zero_points = weight_params(w, axis=0)
    assert scales.shape == zero_points.shape == (channels,) and zero_points.dtype == np.int8
    assert (zero_points == 0).all() and scales[0] == 1.0
    expected = np.abs(w[1:]).max(axis=1) / np.float32(127)
    np.testing.assert_allclose(scales[1:], expected, rtol=1e-6)
    q = quantize_array(w, scales, zero_points, axis=0)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 127 and (q[0] == 0).all()
    error = np.abs(dequantize_array(q, scales, zero_points, axis=0) - w)
    assert (error <= scales[:, None] / 2 * (1 + 1e-5)).all()


def test_weight_params_other_axis_and_per_tensor() -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    scales, _ = weight_params(w, axis=1)
    np.testing.assert_allclose(scales, np.abs(w).max(axis=0) / 127)
    scale, zero_point = weight_params(w, axis=None)
    assert scale.shape == () and scale == np.float32(6 / 127) and zero_point == 0


def test_bias_scale_is_input_scale_times_weight_scale() -> None:
    q, scales = quantize_bias(np.array([1.0, -2.0, 0.0], np.float32), np.float32(0.1), np.array([0.5, 0.25, 1.0], np.float32))
    np.testing.assert_allclose(scales, [0.05, 0.025, 0.1], rtol=1e-6)
    assert q.dtype == np.int32 and q.tolist() == [20, -80, 0]


@pytest.mark.parametrize("call", [lambda: activation_params(0, 1, "int16"), lambda: activation_params(0, np.inf)])
def test_bad_parameters_raise_input_error(call) -> None:
    with pytest.raises(InputError):
        call()


# ----------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def seed_graph():
    return import_onnx(load_model(seed_model_path()))


def test_calibration_feeds_accept_arrays_and_dicts(seed_graph) -> None:
    images = calibration_digits(4)
    assert len(calibration_feeds(seed_graph, images)) == 4  # N x (1, 28, 28) samples for a batch-1 input
    assert len(calibration_feeds(seed_graph, images[:, None])) == 4  # N x input shape
    assert len(calibration_feeds(seed_graph, [{"input": images[:1]}])) == 1
    with pytest.raises(InputError, match="calibration array has shape"):
        calibration_feeds(seed_graph, np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(InputError, match="empty"):
        calibration_feeds(seed_graph, [])


def test_minmax_and_percentile_ranges(seed_graph) -> None:
    images = calibration_digits(8)
    minmax = calibrate(seed_graph, images)
    assert minmax["input"] == (float(images.min()), float(images.max()))
    assert minmax["relu1_out"][0] == 0.0 and minmax["logits"][0] < 0 < minmax["logits"][1]
    clipped = calibrate(seed_graph, images, method="percentile", percentile=99.0)
    assert set(clipped) == set(minmax)
    for name, (low, high) in clipped.items():
        assert minmax[name][0] <= low <= high <= minmax[name][1]
    assert clipped["relu1_out"][1] < minmax["relu1_out"][1]
    with pytest.raises(InputError, match="unknown calibration method"):
        calibrate(seed_graph, images, method="entropy")


def test_calibration_for_uses_digits_for_the_seed_model_and_random_otherwise(seed_graph, caplog) -> None:
    digits = calibration_for("builtin:seed-cnn", seed_graph, n=3)
    np.testing.assert_array_equal(digits[1]["input"], calibration_digits(3)[1:2])
    graph = import_onnx(seed_cnn())
    with caplog.at_level(logging.INFO, logger="hetero.quant.calibrate"):
        noise = calibration_for("other.onnx", graph, n=2)
    assert len(noise) == 2 and noise[0]["input"].shape == (1, 1, 28, 28)
    assert "random" in caplog.text
    np.testing.assert_array_equal(noise[0]["input"], calibration_for("other.onnx", graph, n=2)[0]["input"])



def test_calibration_data_comes_from_the_model_registry_not_the_file_name(tmp_path) -> None:
    import shutil

    from hetero.ir.source import calibration_of

    assert calibration_of("builtin:seed-cnn") == calibration_of("builtin:seed-cnn-random") == "digits"
    assert calibration_of("builtin:resnet18") == calibration_of("builtin:mobilenetv2") == "random"
    assert calibration_of(str(seed_model_path())) == "digits"  # the file builtin:seed-cnn is
    copy = tmp_path / "seed_cnn.onnx"
    shutil.copy(seed_model_path(), copy)
    assert calibration_of(str(copy)) == "random"  # a "seed" in a name is no registry entry


# ----------------------------------------------------------------------------- the QDQ model


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_qdq_model_is_valid_onnx_that_onnxruntime_runs(dtype: str, method: str) -> None:
    model = load_model(seed_model_path())
    qdq = quantize_model(import_onnx(model), calibration_digits(16), method=method, activation_dtype=dtype)
    onnx.checker.check_model(qdq, full_check=True)
    counts = Counter(n.op_type for n in qdq.graph.node)
    assert counts["Relu"] == 0  # folded into the Conv's and Gemm's output ranges
    assert counts["QuantizeLinear"] == 6 and counts["DequantizeLinear"] == 6 + 6  # activations + weights and biases
    assert [i.name for i in qdq.graph.input] == ["input"] and [o.name for o in qdq.graph.output] == ["logits"]
    assert qdq.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {i.name: i for i in qdq.graph.initializer}
    assert weights["conv.weight_quantized"].data_type == onnx.TensorProto.INT8
    assert weights["conv.bias_quantized"].data_type == onnx.TensorProto.INT32
    assert weights["input_zero_point"].data_type == (onnx.TensorProto.UINT8 if dtype == "uint8" else onnx.TensorProto.INT8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = calibration_digits(1)
    got = session.run(None, {"input": x})[0]
    want = run_reference(import_onnx(model), {"input": x})["logits"]
    assert got.shape == (1, 10) and got.argmax() == want.argmax()


def test_quantized_seed_cnn_keeps_its_accuracy() -> None:
    """fp32 vs int8 top-1 on the 360 held-out digits, both measured with hetero's reference."""
    model = load_model(seed_model_path())
    images, labels = load_digits_28("test")
    shapes = {"input": images.shape}
    fp32 = run_reference(import_onnx(model, input_shapes=shapes), {"input": images})["logits"].argmax(axis=1)
    qdq = quantize_model(import_onnx(model), calibration_digits(100))
    int8 = run_reference(import_onnx(qdq, input_shapes=shapes), {"input": images})["logits"].argmax(axis=1)
    fp32_accuracy, int8_accuracy = float(np.mean(fp32 == labels)), float(np.mean(int8 == labels))
    assert fp32_accuracy == pytest.approx(353 / 360)
    assert abs(int8_accuracy - fp32_accuracy) <= 0.01, f"fp32 {fp32_accuracy:.2%}, int8 {int8_accuracy:.2%}"


def test_clip_is_kept_when_its_range_is_not_implied() -> None:
    """Clip(1, 6) after a Conv cannot fold into the output range (which always includes 0)."""
    model = seed_cnn()
    for node in model.graph.node:
        if node.op_type == "Relu" and node.name == "relu1":
            node.op_type = "Clip"
            node.input.extend(["clip_low", "clip_high"])
    model.graph.initializer.extend(
        [onnx.numpy_helper.from_array(np.float32(v), n) for n, v in (("clip_low", 1.0), ("clip_high", 6.0))]
    )
    qdq = quantize_model(import_onnx(model), calibration_digits(4))
    counts = Counter(n.op_type for n in qdq.graph.node)
    assert counts["Clip"] == 1 and counts["Relu"] == 0
    onnx.checker.check_model(qdq, full_check=True)
