"""Which precision a model runs at: inferred from the model when not given (int8 for QDQ and
QLinear models), fp32 of a QDQ model runs its QDQ graph in float on every device, fp32 of an
integer (QLinear) model is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from conftest import make_model, ort_run, usable_opencl
from hetero.backends import open_device
from hetero.ir.datasets import calibration_digits
from hetero.errors import InputError
from hetero.exec.executor import run_on_device
from hetero.ir.source import load_onnx, quantized_form
from hetero.ir.onnx_import import import_onnx
from hetero.quant.precision import load_with_precision, resolve_precision
from hetero.quant.qdq import quantize_model

OPENCL, NO_OPENCL = usable_opencl()


@pytest.fixture(scope="module")
def qdq_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("precision") / "seed_qdq.onnx"
    onnx.save(quantize_model(import_onnx(load_onnx("builtin:seed-cnn")), calibration_digits(16)), str(path))
    return path


def integer_model() -> onnx.ModelProto:
    """A QLinearConv model: integer form, no float graph."""
    weights = {
        "xs": np.float32(0.1), "xz": np.uint8(128), "w": np.ones((2, 1, 1, 1), np.int8), "ws": np.float32(0.05),
        "wz": np.int8(0), "ys": np.float32(0.2), "yz": np.uint8(128), "qs": np.float32(0.1), "qz": np.uint8(128),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["xq"], name="q"),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"], name="conv"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dq"),
    ]
    return make_model(nodes, {"x": np.zeros((1, 1, 4, 4), np.float32)}, ["y"], weights)


def test_precision_is_inferred_from_the_model(qdq_path: Path) -> None:
    graph, precision = load_with_precision(str(qdq_path))
    assert precision == "int8" and "QLinearConv" in {op.type for op in graph.ops_in_order()}
    graph, precision = load_with_precision("builtin:seed-cnn")
    assert precision == "fp32" and "Conv" in {op.type for op in graph.ops_in_order()}
    model = integer_model()
    assert quantized_form(model) == "integer" and quantized_form(load_onnx(str(qdq_path))) == "qdq"
    assert resolve_precision("int.onnx", model) == "int8"


def test_fp32_of_an_integer_model_is_refused() -> None:
    with pytest.raises(InputError, match=r"^int\.onnx is in integer form \(QLinear\* ops\) and has no float graph"):
        resolve_precision("int.onnx", integer_model(), "fp32")


def devices() -> list[str]:
    return ["reference", "cpu", *(d.name for d in OPENCL)]


@pytest.mark.parametrize("device", devices())
def test_fp32_runs_a_qdq_model_in_float_on_every_device(qdq_path: Path, device: str) -> None:
    """fp32 of a QDQ model is its QDQ graph in float: what onnxruntime computes with rewrites off."""
    graph, precision = load_with_precision(str(qdq_path), "fp32")
    assert precision == "fp32" and "Conv" in {op.type for op in graph.ops_in_order()}
    x = calibration_digits(1)
    got = run_on_device(graph, open_device(device), {"input": x})["logits"]
    want = ort_run(qdq_path, {"input": x})["logits"]
    step = float(onnx.numpy_helper.to_array(next(i for i in onnx.load(str(qdq_path)).graph.initializer
                                                 if i.name == "logits_scale")))
    assert np.abs(got - want).max() <= step * (1 + 1e-6) and got.argmax() == want.argmax()


@pytest.mark.skipif(not OPENCL, reason=NO_OPENCL)
@pytest.mark.parametrize("device", [d.name for d in OPENCL] or ["none"])
def test_opencl_dequantizes_a_constant_weight(qdq_path: Path, device: str) -> None:
    """The QDQ graph as imported (weight DequantizeLinears unfolded) on OpenCL: once an IndexError."""
    graph = import_onnx(onnx.load(str(qdq_path)))
    assert any(op.type == "DequantizeLinear" and not op.activation_inputs for op in graph.ops_in_order())
    x = calibration_digits(1)
    got = run_on_device(graph, open_device(device), {"input": x})["logits"]
    want = run_on_device(graph, open_device("reference"), {"input": x})["logits"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("device", ["cpu", *(d.name for d in OPENCL)])
def test_cli_runs_a_qdq_model_at_int8_without_precision(qdq_path: Path, tmp_path: Path, device: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from hetero.app.cli import main

    np.save(tmp_path / "x.npy", calibration_digits(2))
    for extra, expected in (([], "int8"), (["--precision", "fp32"], "fp32")):
        argv = ["run", str(qdq_path), "--input", str(tmp_path / "x.npy"), "--device", device, "--json", *extra]
        assert main(argv) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert summary["precision"] == expected and len(summary["top1"]) == 2


def test_cli_profile_records_the_inferred_precision(qdq_path: Path, tmp_path: Path) -> None:
    from hetero.app.cli import main
    from hetero.cost.profile import load_profile

    out = tmp_path / "profile.json"
    argv = ["profile", str(qdq_path), "-o", str(out), "--devices", "reference", "--budget-s", "0.01", "--max-transfer-mib", "0.01"]
    assert main(argv) == 0
    assert load_profile(out).precision == "int8"


def test_an_int8_request_imports_the_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 model at int8: one import of the model (calibrated and quantized from that graph) and
    one of its QDQ model (to be lowered)."""
    import hetero.quant.precision as precision

    imported: list[bool] = []

    def counted(model, *args, **kwargs):
        imported.append(quantized_form(model) is not None)
        return import_onnx(model, *args, **kwargs)

    monkeypatch.setattr(precision, "import_onnx", counted)
    graph, chosen = load_with_precision("builtin:seed-cnn", "int8")
    assert chosen == "int8" and imported == [False, True]
    assert any(op.type.startswith("QLinear") for op in graph.ops_in_order())
