"""Tests for hetero.ir.models: validity, numerics, determinism and the shipped seed CNN."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hetero.errors import InputError
from hetero.ir import models
from hetero.ir.datasets import load_digits_28

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SEED_CNN = REPO_ROOT / "examples" / "models" / "seed_cnn.onnx"


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    """A single-threaded CPU onnxruntime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)


@pytest.fixture(scope="module", params=sorted(models.BUILTINS))
def builtin(request: pytest.FixtureRequest) -> tuple[str, onnx.ModelProto]:
    name = request.param
    return name, models.BUILTINS[name]()


def test_builtin_names() -> None:
    assert {"seed-cnn-random", "resnet18", "mobilenetv2"} <= set(models.BUILTINS)


def test_builtin_passes_checker_and_conventions(builtin: tuple[str, onnx.ModelProto]) -> None:
    _, model = builtin
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _input_shape(model)[0] == 1
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)


def test_builtin_runs_with_sane_outputs(builtin: tuple[str, onnx.ModelProto]) -> None:
    name, model = builtin
    x = np.random.default_rng(123).standard_normal(_input_shape(model)).astype(np.float32)
    (y,) = _session(model).run(None, {"input": x})
    expected_classes = 10 if name.startswith("seed-cnn") else 1000
    assert y.shape == (1, expected_classes)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert 1e-2 < float(y.std()) < 1e3


@pytest.mark.parametrize("builder", [models.resnet18, models.mobilenetv2])
def test_deep_nets_have_explicit_bn_and_no_conv_bias(builder: Callable[..., onnx.ModelProto]) -> None:
    model = builder(num_classes=10)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == ops.count("BatchNormalization") > 0
    assert all(len(n.input) == 2 for n in model.graph.node if n.op_type == "Conv")
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    for n in model.graph.node:
        if n.op_type == "BatchNormalization":
            eps = [a.f for a in n.attribute if a.name == "epsilon"]
            assert eps and eps[0] == pytest.approx(1e-5)


def test_resnet18_structure() -> None:
    model = models.resnet18(num_classes=10)
    ops = [n.op_type for n in model.graph.node]
    # stem + 8 blocks x 2 convs + 3 downsample 1x1 convs
    assert ops.count("Conv") == 1 + 16 + 3
    assert ops.count("Add") == 8
    assert ops.count("MaxPool") == 1
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    bn_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if ".bn." in t.name)
    # torchvision resnet18 with a 10-class head: 11,181,642 params (BN running stats excluded)
    assert n_params - bn_params // 2 == 11_181_642


def test_mobilenetv2_structure() -> None:
    model = models.mobilenetv2()
    ops = [n.op_type for n in model.graph.node]
    depthwise = [
        n for n in model.graph.node
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    assert len(depthwise) == 17
    assert ops.count("Add") == 10
    assert ops.count("Clip") == 35
    clip_inputs = {tuple(n.input[1:]) for n in model.graph.node if n.op_type == "Clip"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for lo, hi in clip_inputs:
        assert float(inits[lo]) == 0.0 and float(inits[hi]) == 6.0
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer if ".bn.mean" not in t.name
                   and ".bn.var" not in t.name and not t.name.startswith("clip."))
    assert n_params == 3_504_872  # torchvision mobilenet_v2, 1000 classes


@pytest.mark.parametrize("builder", [models.resnet18, models.mobilenetv2])
def test_custom_sizes(builder: Callable[..., onnx.ModelProto]) -> None:
    model = builder(seed=3, num_classes=7, image_size=64)
    assert _input_shape(model) == (1, 3, 64, 64)
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    (y,) = _session(model).run(None, {"input": x})
    assert y.shape == (1, 7) and np.all(np.isfinite(y))


@pytest.mark.parametrize("builder", [models.resnet18, models.mobilenetv2])
@pytest.mark.parametrize("bad", [{"num_classes": 0}, {"image_size": -1}, {"num_classes": 2.5}])
def test_bad_sizes_rejected(builder: Callable[..., onnx.ModelProto], bad: dict[str, object]) -> None:
    with pytest.raises(InputError, match=next(iter(bad))):
        builder(**bad)


@pytest.mark.parametrize(
    "builder",
    [models.seed_cnn, lambda seed: models.resnet18(seed=seed, num_classes=10),
     lambda seed: models.mobilenetv2(seed=seed, num_classes=10)],
    ids=["seed_cnn", "resnet18", "mobilenetv2"],
)
def test_deterministic_per_seed(builder: Callable[..., onnx.ModelProto]) -> None:
    a, b, c = builder(seed=0), builder(seed=0), builder(seed=1)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_seed_cnn_matches_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    weights = {k: rng.standard_normal(s).astype(np.float32) * 0.1 for k, s in models.SEED_CNN_SHAPES.items()}
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    (y,) = _session(models.seed_cnn(weights=weights)).run(None, {"input": x})
    windows = np.lib.stride_tricks.sliding_window_view(x[0, 0], (3, 3))  # (26, 26, 3, 3)
    conv = np.einsum("hwij,oij->ohw", windows, weights["conv.weight"][:, 0]) + weights["conv.bias"][:, None, None]
    pooled = np.maximum(conv, 0).reshape(32, 13, 2, 13, 2).max(axis=(2, 4))
    hidden = np.maximum(pooled.reshape(1, -1) @ weights["fc1.weight"].T + weights["fc1.bias"], 0)
    expected = hidden @ weights["fc2.weight"].T + weights["fc2.bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def _good_weights() -> dict[str, np.ndarray]:
    return {k: np.zeros(s, dtype=np.float32) for k, s in models.SEED_CNN_SHAPES.items()}


def test_seed_cnn_rejects_missing_key() -> None:
    w = _good_weights()
    del w["fc1.bias"]
    with pytest.raises(InputError, match=r"missing key 'fc1\.bias'"):
        models.seed_cnn(weights=w)


def test_seed_cnn_rejects_unexpected_key() -> None:
    w = _good_weights()
    w["fc3.weight"] = np.zeros((1,), dtype=np.float32)
    with pytest.raises(InputError, match=r"unexpected key 'fc3\.weight'"):
        models.seed_cnn(weights=w)


def test_seed_cnn_rejects_bad_shape() -> None:
    w = _good_weights()
    w["conv.weight"] = np.zeros((32, 1, 5, 5), dtype=np.float32)
    with pytest.raises(InputError, match=r"'conv\.weight' has shape \(32, 1, 5, 5\), expected \(32, 1, 3, 3\)"):
        models.seed_cnn(weights=w)


def test_seed_cnn_rejects_non_finite() -> None:
    w = _good_weights()
    w["fc2.weight"][0, 0] = np.nan
    with pytest.raises(InputError, match=r"'fc2\.weight'"):
        models.seed_cnn(weights=w)


def test_seed_cnn_accepts_float64_weights() -> None:
    w = {k: v.astype(np.float64) for k, v in _good_weights().items()}
    model = models.seed_cnn(weights=w)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in model.graph.initializer)


def test_shipped_seed_cnn_accuracy() -> None:
    assert SHIPPED_SEED_CNN.is_file(), "examples/models/seed_cnn.onnx is missing; run examples/train_seed_cnn.py"
    model = onnx.load(str(SHIPPED_SEED_CNN))
    onnx.checker.check_model(model, full_check=True)
    sess = _session(SHIPPED_SEED_CNN)
    images, labels = load_digits_28("test")
    preds = np.array([int(np.argmax(sess.run(None, {"input": img[None]})[0])) for img in images])
    accuracy = float(np.mean(preds == labels))
    assert accuracy >= 0.95, f"seed_cnn.onnx test accuracy {accuracy:.4f} < 0.95"
