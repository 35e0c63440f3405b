"""The Graph IR built directly with make_op and Graph.build: invariants, edges, costs."""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pytest

from hetero.exec.executor import run_reference
from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.graph import Graph, Op, TensorSpec, make_op

X = TensorSpec("x", (2, 4), "float32")


def spec(name: str, *shape: int, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, tuple(shape), dtype)


def diamond() -> tuple[list[Op], np.ndarray]:
    """x -> relu -> a; a -> sigmoid -> b; add(a, b) -> c; split(c) -> (d, e); concat(e, d) -> f;
    gemm(f, W, bias) -> y."""
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    bias = np.arange(3, dtype=np.float32)
    specs: dict[str, TensorSpec] = {"x": X}
    ops: list[Op] = []

    def add(name, op_type, inputs, outputs, attrs=None, weights=None):
        op = make_op(name, op_type, inputs, outputs, attrs or {}, specs, weights or {})
        specs.update({s.name: s for s in op.output_specs})
        ops.append(op)

    add("relu", "Relu", ["x"], ["a"])
    add("sigmoid", "Sigmoid", ["a"], ["b"])
    add("add", "Add", ["a", "b"], ["c"])
    add("split", "Split", ["c"], ["d", "e"], {"axis": 1, "split": (1, 3)})
    add("concat", "Concat", ["e", "d"], ["f"], {"axis": 1})
    add("gemm", "Gemm", ["f", "W", "bias"], ["y"], weights={"W": w, "bias": bias})
    return ops, w


def test_build_and_run() -> None:
    ops, w = diamond()
    graph = Graph.build(ops, [X], ["y"], name="diamond")
    assert graph.name == "diamond"
    assert graph.inputs == (X,) and graph.outputs == (spec("y", 2, 3),)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    a = np.maximum(x, 0)
    c = a + 1 / (1 + np.exp(-a))
    f = np.concatenate([c[:, 1:], c[:, :1]], axis=1)
    np.testing.assert_allclose(run_reference(graph, {"x": x})["y"], f @ w + np.arange(3), rtol=1e-5)


def test_ops_in_order_is_a_topological_order() -> None:
    ops, _ = diamond()
    # insertion order scrambled: build must not depend on it, ops_in_order must fix it
    graph = Graph.build(list(reversed(ops)), [X], ["y"])
    order = list(graph.ops_in_order())
    assert sorted(op.name for op in order) == sorted(op.name for op in ops)
    available = {"x"}
    for op in order:
        assert set(op.activation_inputs) <= available, f"{op.name} runs before its inputs exist"
        available.update(op.outputs)
    position = {op.name: i for i, op in enumerate(order)}
    assert all(position[u] < position[v] for u, v in graph.edges)
    assert [op.name for op in graph.ops_in_order()] == [op.name for op in order], "deterministic"


def test_edges_carry_tensors_and_bytes() -> None:
    ops, _ = diamond()
    graph = Graph.build(ops, [X], ["y"])
    assert set(graph.edges) == {
        ("relu", "sigmoid"), ("relu", "add"), ("sigmoid", "add"), ("add", "split"),
        ("split", "concat"), ("concat", "gemm"),
    }
    edge = graph.edges["relu", "add"]
    assert edge["tensor"] == spec("a", 2, 4)
    assert edge["tensors"] == (spec("a", 2, 4),)
    assert edge["nbytes"] == 2 * 4 * 4
    both = graph.edges["split", "concat"]  # two tensors on one edge, in the consumer's input order
    assert both["tensors"] == (spec("e", 2, 3), spec("d", 2, 1))
    assert both["tensor"] == spec("e", 2, 3)
    assert both["nbytes"] == (2 * 3 + 2 * 1) * 4
    for _, _, data in graph.edges(data=True):
        assert data["nbytes"] == sum(t.nbytes for t in data["tensors"])
    # graph inputs and weights are not nodes, so no edge brings them
    assert "x" not in graph and "W" not in graph


def test_same_tensor_read_twice_is_one_edge_entry() -> None:
    specs = {"x": X}
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, specs, {})
    mul = make_op("square", "Mul", ["a", "a"], ["y"], {}, {"a": relu.output_specs[0]}, {})
    graph = Graph.build([relu, mul], [X], ["y"])
    assert graph.edges["relu", "square"]["tensors"] == (spec("a", 2, 4),)
    assert graph.edges["relu", "square"]["nbytes"] == 32


def test_totals_sum_over_ops() -> None:
    ops, w = diamond()
    graph = Graph.build(ops, [X], ["y"])
    totals = graph.totals()
    assert totals["ops"] == len(ops) == graph.number_of_nodes()
    assert totals["flops"] == sum(op.flops for op in ops)
    assert totals["param_bytes"] == w.nbytes + 3 * 4
    gemm = graph.op("gemm")
    assert gemm.flops == 2 * 2 * 4 * 3 + 2 * 3
    assert gemm.param_bytes == w.nbytes + 12
    assert gemm.bytes_read == 2 * 4 * 4 + w.nbytes + 12
    assert gemm.bytes_written == 2 * 3 * 4
    assert graph.op("relu").flops == 8 and graph.op("concat").flops == 0


def test_op_records_are_immutable() -> None:
    ops, _ = diamond()
    gemm = ops[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        gemm.flops = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        gemm.attrs["transB"] = 1  # type: ignore[index]
    with pytest.raises(ValueError):
        gemm.weights["W"][0, 0] = 1.0
    assert gemm.activation_inputs == ("f",)


def test_make_op_does_not_alias_caller_weights() -> None:
    w = np.ones((4, 3), np.float32)
    op = make_op("gemm", "Gemm", ["x", "W"], ["y"], {}, {"x": X}, {"W": w})
    w[0, 0] = 5.0
    assert op.weights["W"][0, 0] == 1.0


def test_signature() -> None:
    specs = {"x": spec("x", 1, 3, 8, 8), "z": spec("z", 1, 3, 8, 8)}
    w = np.ones((4, 3, 3, 3), np.float32)
    other_w = np.zeros((4, 3, 3, 3), np.float32)
    a = make_op("a", "Conv", ["x", "w"], ["ya"], {"pads": [1, 1, 1, 1], "strides": [1, 1]}, specs, {"w": w})
    # same type, shapes and attributes (given in another order) on other tensors and weights
    b = make_op("b", "Conv", ["z", "w2"], ["yb"], {"strides": (1, 1), "pads": (1, 1, 1, 1)}, specs, {"w2": other_w})
    c = make_op("c", "Conv", ["x", "w"], ["yc"], {"pads": [0, 0, 0, 0], "strides": [1, 1]}, specs, {"w": w})
    d = make_op("d", "Conv", ["x", "w"], ["yd"], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, specs, {"w": w})
    e = make_op("e", "Conv", ["x", "w"], ["ye"], {"pads": [1, 1, 1, 1], "strides": [1, 1]}, {"x": spec("x", 2, 3, 8, 8)}, {"w": w})
    assert a.signature() == b.signature()
    assert len({a.signature(), c.signature(), d.signature(), e.signature()}) == 4
    relu = make_op("r", "Relu", ["x"], ["yr"], {}, specs, {})
    sigmoid = make_op("s", "Sigmoid", ["x"], ["ys"], {}, specs, {})
    assert relu.signature() != sigmoid.signature()


# --- invariants -------------------------------------------------------------------------------

def test_cycle_detected() -> None:
    specs = {"x": X, "a": spec("a", 2, 4), "b": spec("b", 2, 4)}
    first = make_op("first", "Add", ["x", "b"], ["a"], {}, specs, {})
    second = make_op("second", "Relu", ["a"], ["b"], {}, specs, {})
    head = make_op("head", "Sigmoid", ["a"], ["y"], {}, specs, {})
    with pytest.raises(GraphError) as info:
        Graph.build([first, second, head], [X], ["y"], name="loop")
    message = str(info.value)
    assert "graph loop has a cycle" in message
    assert "first -> second -> first" in message or "second -> first -> second" in message


def test_self_loop_detected() -> None:
    specs = {"x": X, "a": spec("a", 2, 4)}
    op = make_op("again", "Add", ["x", "a"], ["a"], {}, specs, {})
    with pytest.raises(GraphError, match="cycle: again -> again"):
        Graph.build([op], [X], ["a"])


def test_tensor_produced_twice() -> None:
    specs = {"x": X}
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, specs, {})
    sigmoid = make_op("sigmoid", "Sigmoid", ["x"], ["a"], {}, specs, {})
    with pytest.raises(GraphError, match="tensor 'a' is produced twice: by relu and by sigmoid"):
        Graph.build([relu, sigmoid], [X], ["a"])


def test_graph_input_produced_again() -> None:
    relu = make_op("relu", "Relu", ["x"], ["x"], {}, {"x": X}, {})
    with pytest.raises(GraphError, match="tensor 'x' is produced twice: by the graph input and by relu"):
        Graph.build([relu], [X], ["x"])


def test_duplicate_node_names() -> None:
    specs = {"x": X}
    one = make_op("same", "Relu", ["x"], ["a"], {}, specs, {})
    two = make_op("same", "Relu", ["x"], ["b"], {}, specs, {})
    with pytest.raises(GraphError, match="two nodes are named same"):
        Graph.build([one, two], [X], ["a", "b"])


def test_tensor_never_produced() -> None:
    specs = {"x": X, "ghost": spec("ghost", 2, 4)}
    op = make_op("add", "Add", ["x", "ghost"], ["y"], {}, specs, {})
    with pytest.raises(GraphError, match="node add reads tensor 'ghost' that nothing produces"):
        Graph.build([op], [X], ["y"])


def test_make_op_rejects_unknown_tensor() -> None:
    with pytest.raises(GraphError, match=r"node add \(Add\) reads tensor 'ghost' that nothing produces"):
        make_op("add", "Add", ["x", "ghost"], ["y"], {}, {"x": X}, {})


def test_graph_output_never_produced() -> None:
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, {"x": X}, {})
    with pytest.raises(GraphError, match="graph output 'nowhere' is not produced by any node"):
        Graph.build([relu], [X], ["nowhere"])


def test_shape_mismatch_between_producer_and_consumer() -> None:
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, {"x": X}, {})
    # the consumer was built believing 'a' is [2, 5]
    sigmoid = make_op("sigmoid", "Sigmoid", ["a"], ["y"], {}, {"a": spec("a", 2, 5)}, {})
    with pytest.raises(GraphError) as info:
        Graph.build([relu, sigmoid], [X], ["y"])
    message = str(info.value)
    assert "node sigmoid expects tensor 'a' as [2, 5]" in message
    assert "produced as [2, 4] float32" in message


def test_dtype_mismatch_between_producer_and_consumer() -> None:
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, {"x": X}, {})
    sigmoid = make_op("sigmoid", "Sigmoid", ["a"], ["y"], {}, {"a": spec("a", 2, 4, dtype="float64")}, {})
    with pytest.raises(GraphError, match="node sigmoid expects tensor 'a'.*float32"):
        Graph.build([relu, sigmoid], [X], ["y"])


def test_declared_outputs_revalidated() -> None:
    relu = make_op("relu", "Relu", ["x"], ["a"], {}, {"x": X}, {})
    forged = dataclasses.replace(relu, output_specs=(spec("a", 4, 2),))
    with pytest.raises(GraphError, match=r"node relu \(Relu\) declares outputs \[\(\(4, 2\), 'float32'\)\]"):
        Graph.build([forged], [X], ["a"])


def test_make_op_shape_errors_name_the_node() -> None:
    with pytest.raises(GraphError, match=r"node plus \(Add\): shapes \[2, 4\] and \[3\] do not broadcast"):
        make_op("plus", "Add", ["x", "k"], ["y"], {}, {"x": X}, {"k": np.ones(3, np.float32)})
    with pytest.raises(GraphError, match=r"node mm \(MatMul\): MatMul shapes \[2, 4\] and \[3, 2\] do not match"):
        make_op("mm", "MatMul", ["x", "k"], ["y"], {}, {"x": X}, {"k": np.ones((3, 2), np.float32)})


def test_make_op_arity_and_output_count() -> None:
    with pytest.raises(GraphError, match=r"node g \(Gemm\) has 1 inputs, expected 2 to 3"):
        make_op("g", "Gemm", ["x"], ["y"], {}, {"x": X}, {})
    with pytest.raises(GraphError, match=r"node r \(Relu\) has 2 outputs, expected 1"):
        make_op("r", "Relu", ["x"], ["y", "z"], {}, {"x": X}, {})


def test_make_op_unknown_type() -> None:
    with pytest.raises(UnsupportedOpError, match="operator GridSample is not supported"):
        make_op("up", "GridSample", ["x"], ["y"], {}, {"x": X}, {})


def test_graph_is_a_networkx_digraph() -> None:
    ops, _ = diamond()
    graph = Graph.build(ops, [X], ["y"])
    assert isinstance(graph, nx.DiGraph)
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.graph["producer"]["a"] == "relu" and graph.graph["producer"]["x"] == ""
    graph.validate()  # idempotent


def test_op_arguments_put_activations_and_constants_in_onnx_order() -> None:
    ops, _ = diamond()
    gemm = ops[-1]
    f = np.ones((2, 4), np.float32)
    w, bias = gemm.arguments([f])[1:]
    assert gemm.arguments([f])[0] is f and w is gemm.weights["W"] and bias is gemm.weights["bias"]
    assert gemm.arguments([f], constant=lambda name: name)[1:] == ["W", "bias"]
    clip = make_op("clip", "Clip", ["x", "", "hi"], ["y"], {}, {"x": X}, {"hi": np.float32(1.0)})
    assert clip.arguments(["X"], constant=lambda name: name) == ["X", None, "hi"]


def test_observe_sees_every_op_once_in_order_and_dead_tensors_are_freed() -> None:
    from hetero.backends.reference import ReferenceDevice
    from hetero.exec.executor import run_on_device, walk

    ops, _ = diamond()
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    graph = Graph.build(ops, [X], ["y"])
    seen: list[tuple[str, tuple[str, ...], object]] = []
    result = run_on_device(graph, ReferenceDevice(), {"x": x}, observe=lambda op, outs, t: seen.append((op.name, tuple(o.shape for o in outs), t)))
    assert [name for name, _, _ in seen] == [op.name for op in graph.ops_in_order()]
    assert all(t is None for _, _, t in seen) and seen[-1][1] == ((2, 3),)
    np.testing.assert_array_equal(result["y"], run_reference(graph, {"x": x})["y"])
    timed: list[object] = []
    run_on_device(graph, ReferenceDevice(), {"x": x}, observe=lambda op, outs, t: timed.append(t), timed=True)
    assert len(timed) == len(ops) and all(t.wall_s >= t.device_s >= 0 for t in timed)
    device = ReferenceDevice()
    assert set(walk(graph, {"x": x}, device.run, keep=["y"])) == {"y"}  # x, a .. f dropped after their last use
    assert set(walk(graph, {"x": x}, device.run, keep=["y", "c"])) == {"y", "c"}
