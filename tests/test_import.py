"""ONNX import: real and builtin models against onnxruntime, error paths, symbolic batch dims."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SHARED_MODELS, assert_matches, make_model, node, op_types, ort_run, random_feeds
from hetero.ir import models
from hetero.exec.executor import run_reference
from hetero.errors import GraphError, ModelError, UnsupportedOpError
from hetero.ir.source import load_graph
from hetero.ir.onnx_import import import_onnx
from hetero.resources import seed_model_path

# --- real and builtin models ----------------------------------------------------------------

SHARED = {
    "resnet18": {"Conv", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm"},
    "mobilenet_v2": {"Conv", "Clip", "Add", "GlobalAveragePool", "Flatten", "Gemm"},
    "squeezenet1_1": {"Conv", "Relu", "MaxPool", "Concat", "GlobalAveragePool", "Flatten"},
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_model_matches_onnxruntime(name: str) -> None:
    path = SHARED_MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"shared test model {path} is absent (it lives outside the repository in shared/models)")
    started = time.perf_counter()
    graph = import_onnx(path)
    assert set(op_types(graph)) == SHARED[name], "Identity and Constant nodes are removed at import"
    assert [s.shape for s in graph.inputs] == [(1, 3, 224, 224)]
    feeds = random_feeds(graph, seed=7)
    got = run_reference(graph, feeds)
    want = ort_run(path, feeds)
    for spec in graph.outputs:
        assert_matches(got[spec.name], want[spec.name], what=f"{name}:{spec.name}")
    assert time.perf_counter() - started < 30, "the reference run got much slower; mark this test slow"


@pytest.mark.parametrize("name", sorted(models.BUILTINS))
def test_builtin_matches_onnxruntime(name: str) -> None:
    model = models.BUILTINS[name]()
    graph = import_onnx(model)
    assert "BatchNormalization" not in op_types(graph), "Conv+BatchNormalization pairs are folded"
    feeds = random_feeds(graph, seed=3)
    got = run_reference(graph, feeds)
    want = ort_run(model, feeds)
    assert set(got) == set(want) == {models.OUTPUT_NAME}
    assert_matches(got[models.OUTPUT_NAME], want[models.OUTPUT_NAME], what=name)


def test_builtin_seed_cnn_via_load_graph() -> None:
    graph = load_graph("builtin:seed-cnn")
    assert op_types(graph) == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"]
    feeds = random_feeds(graph, seed=5)
    got = run_reference(graph, feeds)
    want = ort_run(seed_model_path(), feeds)
    assert_matches(got["logits"], want["logits"], what="seed-cnn")


def test_unknown_builtin() -> None:
    with pytest.raises(ModelError, match=r"unknown builtin model 'nope'.*seed-cnn"):
        load_graph("builtin:nope")


# --- error paths ----------------------------------------------------------------------------

def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def _single_node_model(op: onnx.NodeProto, x_shape, inits=(), opset: int = 17, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [op],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in op.output if o],
        list(inits),
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets], ir_version=8
    )


def test_unsupported_resize_names_op_node_and_file(tmp_path: Path) -> None:
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    # Resize is supported; its antialias attribute is not, and the refusal names the attribute
    op = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="upsample_1", mode="linear", antialias=1)
    path = _save(_single_node_model(op, [1, 2, 4, 4], [scales], opset=18), tmp_path / "resize.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "Resize" in message and "upsample_1" in message and str(path) in message and "antialias" in message
    assert "\n" not in message


def test_unsupported_lstm_names_op_node_and_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hidden, features = 3, 4
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, features)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"),
    ]
    op = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="encoder_lstm", hidden_size=hidden)
    path = _save(_single_node_model(op, [5, 1, features], inits), tmp_path / "lstm.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "LSTM" in message and "encoder_lstm" in message and str(path) in message


def test_unsupported_op_in_unnamed_node_names_its_output(tmp_path: Path) -> None:
    op = helper.make_node("Det", ["x"], ["det_out"])
    path = _save(_single_node_model(op, [3, 3]), tmp_path / "det.onnx")
    with pytest.raises(UnsupportedOpError, match=r"Det") as info:
        import_onnx(path)
    assert "det_out" in str(info.value) and str(path) in str(info.value)


def test_non_default_domain(tmp_path: Path) -> None:
    op = helper.make_node("FancyGelu", ["x"], ["y"], name="custom_act", domain="com.example")
    model = _single_node_model(op, [2, 3], extra_opsets=[helper.make_opsetid("com.example", 1)])
    path = _save(model, tmp_path / "custom.onnx")
    with pytest.raises(UnsupportedOpError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "com.example.FancyGelu" in message and "custom_act" in message and str(path) in message
    assert "default ONNX domain" in message


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="not a readable ONNX model") as info:
        import_onnx(path)
    assert str(path) in str(info.value)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 20)
    with pytest.raises(ModelError) as info:
        import_onnx(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="holds no graph") as info:
        import_onnx(path)
    assert str(path) in str(info.value)


def test_truncated_file(tmp_path: Path) -> None:
    data = seed_model_path().read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated") as info:
        import_onnx(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "does_not_exist.onnx"
    with pytest.raises(ModelError, match="no such model file") as info:
        import_onnx(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match="does_not_exist"):
        load_graph(str(path))


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        import_onnx(tmp_path)


def test_opset_newer_than_onnx_refused(tmp_path: Path) -> None:
    opset = onnx.defs.onnx_opset_version() + 1
    op = helper.make_node("Relu", ["x"], ["y"], name="relu")
    path = _save(_single_node_model(op, [2, 3], opset=opset), tmp_path / f"opset{opset}.onnx")
    with pytest.raises(ModelError) as info:
        import_onnx(path)
    message = str(info.value)
    assert f"opset {opset} is newer" in message and str(path) in message


@pytest.mark.parametrize("opset", [7, 12])
def test_old_opset_converted(opset: int) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    model = make_model([node("Relu", ["x"], ["y"])], {"x": x}, ["y"], opset=opset)
    graph = import_onnx(model)
    assert op_types(graph) == ["Relu"]
    np.testing.assert_array_equal(run_reference(graph, {"x": x})["y"], np.maximum(x, 0))


@pytest.mark.parametrize("opset", [13, 21, onnx.defs.onnx_opset_version()])
def test_opset_bounds_accepted(opset: int) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    graph = import_onnx(make_model([node("Relu", ["x"], ["y"])], {"x": x}, ["y"], opset=opset))
    assert op_types(graph) == ["Relu"]


def test_no_default_opset(tmp_path: Path) -> None:
    op = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = _single_node_model(op, [2, 3])
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    path = _save(model, tmp_path / "noopset.onnx")
    with pytest.raises(ModelError, match="no default-domain opset"):
        import_onnx(path)


def _cyclic_model() -> onnx.ModelProto:
    """x -> first(Add x, b) -> a -> second(Relu) -> b -> back into first: built by hand, unchecked."""
    model = onnx.ModelProto()
    model.ir_version = 8
    opset = model.opset_import.add()
    opset.domain, opset.version = "", 17
    graph = model.graph
    graph.name = "cyclic"
    graph.node.extend([
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Sigmoid", ["a"], ["y"], name="head"),
    ])
    graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]))
    graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]))
    return model


def test_cyclic_graph_names_the_nodes(tmp_path: Path) -> None:
    path = _save(_cyclic_model(), tmp_path / "cyclic.onnx")
    with pytest.raises(GraphError) as info:
        import_onnx(path)
    message = str(info.value)
    assert "cycle" in message and "first" in message and "second" in message and str(path) in message
    assert "head" not in message


def test_cyclic_model_proto_is_labelled() -> None:
    with pytest.raises(GraphError, match=r"^my-model: .*cycle.*first.*second|^my-model: .*cycle.*second.*first"):
        import_onnx(_cyclic_model(), label="my-model")


def test_tensor_produced_twice_in_onnx(tmp_path: Path) -> None:
    model = _single_node_model(helper.make_node("Relu", ["x"], ["y"], name="relu_a"), [2, 3])
    model.graph.node.append(helper.make_node("Sigmoid", ["x"], ["y"], name="sigmoid_b"))
    path = _save(model, tmp_path / "twice.onnx")
    with pytest.raises(GraphError, match="tensor 'y' is produced twice: by relu_a and by sigmoid_b") as info:
        import_onnx(path)
    assert str(path) in str(info.value)


def test_initializer_listed_as_graph_input() -> None:
    """Older exporters list weights among the graph inputs; they stay constants."""
    x = np.ones((2, 4), np.float32)
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    model = make_model([node("MatMul", ["x", "w"], ["y"])], {"x": x}, ["y"], {"w": w})
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3]))
    graph = import_onnx(model)
    assert [s.name for s in graph.inputs] == ["x"]
    assert "w" in graph.op("matmul_y").weights
    assert_matches(run_reference(graph, {"x": x})["y"], ort_run(model, {"x": x})["y"])


def test_graph_output_that_is_a_constant() -> None:
    c = np.ones((2, 2), np.float32)
    model = make_model(
        [node("Relu", ["x"], ["r"]), node("Identity", ["c"], ["k"])], {"x": c}, ["r", "k"], {"c": c}
    )
    with pytest.raises(UnsupportedOpError, match="graph output 'k' is a constant"):
        import_onnx(model)


def test_dropout_mask_used() -> None:
    x = np.ones((2, 2), np.float32)
    model = make_model([node("Dropout", ["x"], ["y", "mask"])], {"x": x}, ["y", "mask"])
    with pytest.raises(UnsupportedOpError, match="mask"):
        import_onnx(model)


def test_errors_are_one_line_and_raise_no_partial_graph(tmp_path: Path) -> None:
    """A failure anywhere in the graph raises; nothing half-built comes back."""
    x = np.ones((1, 2, 4, 4), np.float32)
    ok = make_model([node("Relu", ["x"], ["r"]), node("Sigmoid", ["r"], ["y"])], {"x": x}, ["y"])
    ok.graph.node.append(helper.make_node("Resize", ["r", "", "scales"], ["z"], name="late_resize", mode="linear", antialias=1))
    ok.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    ok.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    path = _save(ok, tmp_path / "late.onnx")
    result = None
    with pytest.raises(UnsupportedOpError, match="late_resize"):
        result = import_onnx(path)
    assert result is None


# --- symbolic batch dimension ---------------------------------------------------------------

def _symbolic_batch_model() -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """['N', 3, 8, 8] -> Conv -> Relu -> (Shape/Gather/Unsqueeze/Concat) Reshape -> Gemm."""
    rng = np.random.default_rng(11)
    inits = {
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "zero": np.array(0, np.int64),
        "axes0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64),
        "fc": rng.standard_normal((5, 4 * 4 * 4)).astype(np.float32),
    }
    nodes = [
        node("Conv", ["input", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        node("Relu", ["c"], ["r"]),
        node("Shape", ["r"], ["shape"]),
        node("Gather", ["shape", "zero"], ["batch"], axis=0),
        node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        node("Reshape", ["r", "target"], ["flat"]),
        node("Gemm", ["flat", "fc"], ["logits"], transB=1),
    ]
    example = {"input": np.zeros((1, 3, 8, 8), np.float32)}
    model = make_model(nodes, example, ["logits"], inits, input_dims={"input": ["N", 3, 8, 8]})
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]))
    return model, inits


def test_symbolic_batch_defaults_to_one() -> None:
    model, _ = _symbolic_batch_model()
    graph = import_onnx(model)
    assert graph.inputs[0].shape == (1, 3, 8, 8)
    assert graph.outputs[0].shape == (1, 5)
    assert op_types(graph) == ["Conv", "Relu", "Reshape", "Gemm"]
    feeds = random_feeds(graph, seed=1)
    assert_matches(run_reference(graph, feeds)["logits"], ort_run(model, feeds)["logits"], what="N=1")


def test_symbolic_batch_set_by_input_shapes() -> None:
    model, _ = _symbolic_batch_model()
    before = model.SerializeToString()
    graph = import_onnx(model, input_shapes={"input": (4, 3, 8, 8)})
    assert model.SerializeToString() == before, "the caller's model is not modified"
    assert graph.inputs[0].shape == (4, 3, 8, 8)
    assert graph.outputs[0].shape == (4, 5)
    feeds = random_feeds(graph, seed=2)
    got = run_reference(graph, feeds)["logits"]
    want = ort_run(model, feeds)["logits"]
    assert want.shape == (4, 5)
    assert_matches(got, want, what="N=4")
    # the batch-1 import of the same model is unaffected by the batch-4 one
    assert import_onnx(model).inputs[0].shape == (1, 3, 8, 8)


def test_input_shapes_override_fixed_model_batch() -> None:
    graph = import_onnx(models.seed_cnn(), input_shapes={"input": (3, 1, 28, 28)})
    assert graph.inputs[0].shape == (3, 1, 28, 28)
    assert graph.outputs[0].shape == (3, 10)


def test_input_shapes_wrong_rank() -> None:
    model, _ = _symbolic_batch_model()
    with pytest.raises(ModelError, match=r"input 'input' has rank 4"):
        import_onnx(model, input_shapes={"input": (4, 3, 8)})
