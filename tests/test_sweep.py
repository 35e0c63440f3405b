"""The profiler's sweep: synthetic variants per kernel class, flagged and kept out of evaluations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hetero.backends import open_device
from hetero.cost.evaluate import evaluate_against, evaluate_holdout, is_synthetic
from hetero.cost.model import kernel_class
from hetero.ir.graph import TensorSpec, make_op
from hetero.quant.precision import load_for_precision
from hetero.cost.profile import DeviceProfile, load_profile, op_features, save_profile
from hetero.cost.profiler import Budget, make_variant, profile_graph, random_input, sweep_variants

TINY = Budget(warmup=1, min_count=3, max_count=10, target_spread=0.5, seconds_per_op=0.02)


@pytest.fixture(scope="module")
def graph():
    return load_for_precision("builtin:seed-cnn", "int8")


def _depthwise_conv():
    rng = np.random.default_rng(1)
    channels = 16
    x = TensorSpec("x", (1, channels, 12, 12), "uint8")
    weights = {
        "sx": np.float32(0.02), "zx": np.uint8(128), "w": rng.integers(-127, 128, (channels, 1, 3, 3)).astype(np.int8),
        "sw": rng.uniform(0.001, 0.01, channels).astype(np.float32), "zw": np.zeros(channels, np.int8),
        "sy": np.float32(0.05), "zy": np.uint8(128), "b": rng.integers(-500, 500, channels).astype(np.int32),
    }
    attrs = {"group": channels, "kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "strides": (1, 1)}
    inputs = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"]
    return make_op("dw", "QLinearConv", inputs, ["y"], attrs, {"x": x}, weights)


def _check_runs(variant, base, device, rng):
    arrays = [random_input(s, rng) for s in variant.input_specs if s is not None and s.name not in variant.weights]
    outputs = device.run(variant, [device.upload(a) for a in arrays])
    result = device.download(outputs[0])
    assert result.shape == variant.output_specs[0].shape
    assert str(result.dtype) == variant.output_specs[0].dtype
    for name in variant.weights:
        assert variant.weights[name].dtype == base.weights[name].dtype
    assert kernel_class(variant.type, op_features(variant)) == kernel_class(base.type, op_features(base))


def test_variants_are_valid_ops_of_the_same_kernel_class(graph):
    device, rng = open_device("reference"), np.random.default_rng(0)
    ops = list({op.signature(): op for op in graph.ops_in_order()}.values()) + [_depthwise_conv()]
    for op in ops:
        variants = sweep_variants([op], 6, rng, 4.0 * op.flops + 1e6, 4.0 * (op.bytes_read + op.bytes_written) + 1e6)
        assert variants, op.type
        assert len({v.signature() for v in variants}) == len(variants)
        assert op.signature() not in {v.signature() for v in variants}
        for variant in variants:
            _check_runs(variant, op, device, rng)
            if variant.type == "QLinearConv":
                out_channels = variant.output_specs[0].shape[1]
                sw, bias = variant.weights[variant.inputs[4]], variant.weights[variant.inputs[8]]
                assert sw.shape == (out_channels,) and sw.dtype == np.float32 and (sw > 0).all()
                assert bias.shape == (out_channels,) and bias.dtype == np.int32


def test_conv_variant_scales_channels_space_and_stride():
    op = _depthwise_conv()
    variant = make_variant(op, 2.0, 0.5, 2, np.random.default_rng(0))
    assert variant is not None
    assert variant.input_specs[0].shape == (1, 32, 6, 6)
    assert variant.attrs["group"] == 32 and tuple(variant.attrs["strides"]) == (2, 2)
    assert variant.output_specs[0].shape == (1, 32, 3, 3)
    assert make_variant(op, 1.0, 0.05, 2, np.random.default_rng(0)) is not None  # 1x1 input still valid with pads


def test_sweep_entries_are_flagged_and_excluded_from_evaluation(graph, tmp_path):
    device = open_device("reference")
    profile = profile_graph(
        graph, [device], "builtin:seed-cnn", "int8", budget=TINY, transfer_sizes=[1024],
        sweep=4, sweep_budget=TINY,
    )
    path = tmp_path / "sweep.json"
    save_profile(profile, path)
    ops = load_profile(path).devices["reference"].ops
    real = {op.signature() for op in graph.ops_in_order()}
    synthetic = {s for s, st in ops.items() if is_synthetic(st)}
    assert real <= set(ops) and not real & synthetic
    assert set(ops) == real | synthetic
    classes = {kernel_class(ops[s].op_type, ops[s].features) for s in real}
    assert classes == {kernel_class(ops[s].op_type, ops[s].features) for s in synthetic}
    assert len(synthetic) >= 3 * len(classes)
    assert all(ops[s].features["sweep_ratio"] > 0 and ops[s].p10_s <= ops[s].median_s <= ops[s].p90_s for s in synthetic)

    loaded = load_profile(path)
    report = evaluate_holdout(loaded, fraction=0.5)
    held = [row["signature"] for row in report["devices"]["reference"]["rows"]]
    assert held and set(held) <= real
    assert report["n"] + report["unpredictable"] == round(0.5 * len(real))

    real_only = dataclasses.replace(
        loaded, devices={"reference": DeviceProfile(loaded.devices["reference"].identity, {s: ops[s] for s in real})}
    )
    against = evaluate_against(real_only, loaded)
    assert against["n"] + against["unpredictable"] == 0  # the sweep's entries are never predicted
