"""The graph IR: a networkx.DiGraph whose nodes are operators and whose edges are tensors.

Node attribute ``op`` holds an immutable :class:`Op`; edge attribute ``tensors`` holds the
:class:`TensorSpec` records flowing from producer to consumer (``tensor`` is the first of
them, ``nbytes`` their total). Graph inputs and outputs are not nodes: they are listed in
``graph.inputs`` / ``graph.outputs``. A Graph is validated once when built: acyclic, every
tensor produced exactly once, every shape consistent with the op registry.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import networkx as nx
import numpy as np

from hetero.ir import ops
from hetero.errors import GraphError, HeteroError, InputError


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, static shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * np.dtype(self.dtype).itemsize


def _freeze_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        frozen = value.copy()
        frozen.flags.writeable = False
        return frozen
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_attr(v) for v in value)
    return value


def random_input(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """A plausible input array for timing: normal floats, full-range small ints, zero indices."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(dtype)
    if dtype.kind == "b":  # masks (And, Where's condition)
        return rng.integers(0, 2, spec.shape).astype(dtype)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, spec.shape).astype(dtype)
    return np.zeros(spec.shape, dtype)



@dataclass(frozen=True, eq=False)
class Op:
    """One operator: type, attributes, tensor specs, constant inputs and its costs.

    ``inputs`` lists input tensor names in ONNX order ("" for an absent optional input);
    those named in ``weights`` are constants, the others are activations.
    """

    name: str
    type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]
    input_specs: tuple[TensorSpec | None, ...]
    output_specs: tuple[TensorSpec, ...]
    weights: Mapping[str, np.ndarray] = field(repr=False)
    flops: int
    bytes_read: int
    bytes_written: int
    param_bytes: int

    @property
    def activation_inputs(self) -> tuple[str, ...]:
        """Names of the non-constant inputs, in order."""
        return tuple(n for n in self.inputs if n and n not in self.weights)

    def arguments(self, activations: Sequence[Any], constant: Callable[[str], Any] | None = None) -> list[Any]:
        """Every input in ONNX order: ``activations`` (the non-constant inputs, in order) in their
        slots, each constant from ``weights`` (or ``constant(name)``: a device copy, say), None
        where an optional input is absent."""
        given = iter(activations)
        return [
            None if not t else next(given) if t not in self.weights else self.weights[t] if constant is None else constant(t)
            for t in self.inputs
        ]

    def signature(self) -> str:
        """A key that is equal for ops that compute the same thing on the same shapes."""
        shapes = ",".join(
            "-" if s is None else f"{'x'.join(map(str, s.shape))}:{s.dtype}" for s in self.input_specs
        )
        attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in sorted(self.attrs.items()))
        return f"{self.type}({shapes})[{attrs}]"


def _attr_text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array{list(value.shape)}"
    return str(value)


def make_op(
    name: str,
    op_type: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    attrs: Mapping[str, Any],
    specs: Mapping[str, TensorSpec],
    weights: Mapping[str, np.ndarray],
) -> Op:
    """Build an Op, inferring output specs and costs from the registry.

    ``specs`` gives the spec of every activation input; ``weights`` every constant input.
    """
    definition = ops.get(op_type)
    if not definition.min_inputs <= len(inputs) <= definition.max_inputs:
        raise GraphError(
            f"node {name} ({op_type}) has {len(inputs)} inputs, expected "
            f"{definition.min_inputs} to {definition.max_inputs}"
        )
    values: list[ops.Value | None] = []
    input_specs: list[TensorSpec | None] = []
    used_weights: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if not tensor:
            values.append(None)
            input_specs.append(None)
        elif tensor in weights:
            array = np.asarray(weights[tensor])
            if array.flags.writeable:
                array = array.copy()
                array.flags.writeable = False
            used_weights[tensor] = array
            values.append(ops.Value(tuple(array.shape), str(array.dtype), array))
            input_specs.append(TensorSpec(tensor, tuple(array.shape), str(array.dtype)))
        elif tensor in specs:
            spec = specs[tensor]
            values.append(ops.Value(spec.shape, spec.dtype))
            input_specs.append(spec)
        else:
            raise GraphError(f"node {name} ({op_type}) reads tensor '{tensor}' that nothing produces")
    frozen_attrs = types.MappingProxyType({k: _freeze_attr(v) for k, v in attrs.items()})
    try:
        inferred = definition.infer(values, frozen_attrs)
    except HeteroError as err:
        raise type(err)(f"node {name} ({op_type}): {err}") from None
    if definition.optional_outputs and len(inferred) > len(outputs):  # trailing optional outputs unused
        inferred = inferred[: len(outputs)]
    if len(inferred) != len(outputs):
        raise GraphError(f"node {name} ({op_type}) has {len(outputs)} outputs, expected {len(inferred)}")
    output_specs = tuple(TensorSpec(t, tuple(int(d) for d in shape), dtype) for t, (shape, dtype) in zip(outputs, inferred))
    flops = int(definition.flops(values, [s.shape for s in output_specs], frozen_attrs))
    param_bytes = sum(int(a.nbytes) for a in used_weights.values())
    activation_bytes = sum(s.nbytes for s in input_specs if s is not None and s.name not in used_weights)
    return Op(
        name=name,
        type=op_type,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        attrs=frozen_attrs,
        input_specs=tuple(input_specs),
        output_specs=output_specs,
        weights=types.MappingProxyType(used_weights),
        flops=flops,
        bytes_read=activation_bytes + param_bytes,
        bytes_written=sum(s.nbytes for s in output_specs),
        param_bytes=param_bytes,
    )


class Graph(nx.DiGraph):
    """A validated operator graph. Build it with :meth:`Graph.build`."""

    @classmethod
    def build(
        cls,
        ops_in_order: Iterable[Op],
        inputs: Sequence[TensorSpec],
        outputs: Sequence[str],
        name: str = "graph",
    ) -> "Graph":
        """Assemble and validate a graph from ops, graph inputs and graph output names."""
        graph = cls(name=name)
        producer: dict[str, str] = {spec.name: "" for spec in inputs}
        specs: dict[str, TensorSpec] = {spec.name: spec for spec in inputs}
        op_list = list(ops_in_order)
        for op in op_list:
            if op.name in graph:
                raise GraphError(f"two nodes are named {op.name}; node names must be unique")
            graph.add_node(op.name, op=op)
            for spec in op.output_specs:
                if spec.name in producer:
                    first = producer[spec.name] or "the graph input"
                    raise GraphError(f"tensor '{spec.name}' is produced twice: by {first} and by {op.name}")
                producer[spec.name] = op.name
                specs[spec.name] = spec
        for op in op_list:
            for tensor, spec in zip(op.inputs, op.input_specs):
                if not tensor or tensor in op.weights:
                    continue
                if tensor not in producer:
                    raise GraphError(f"node {op.name} reads tensor '{tensor}' that nothing produces")
                if spec != specs[tensor]:
                    raise GraphError(
                        f"node {op.name} expects tensor '{tensor}' as {list(spec.shape) if spec else None}, "
                        f"but it is produced as {list(specs[tensor].shape)} {specs[tensor].dtype}"
                    )
                source = producer[tensor]
                if not source:
                    continue
                if graph.has_edge(source, op.name):
                    edge = graph.edges[source, op.name]
                    if spec not in edge["tensors"]:
                        edge["tensors"] = edge["tensors"] + (spec,)
                        edge["nbytes"] += spec.nbytes
                else:
                    graph.add_edge(source, op.name, tensor=spec, tensors=(spec,), nbytes=spec.nbytes)
        for tensor in outputs:
            if tensor not in specs:
                raise GraphError(f"graph output '{tensor}' is not produced by any node")
        graph.graph["inputs"] = tuple(inputs)
        graph.graph["outputs"] = tuple(specs[t] for t in outputs)
        graph.graph["producer"] = producer
        graph.validate()
        return graph

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(self.graph.get("name", "graph"))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.graph["inputs"]

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.graph["outputs"]

    def op(self, node: str) -> Op:
        """The Op record of a node."""
        return self.nodes[node]["op"]

    def ops_in_order(self) -> Iterator[Op]:
        """Ops in a deterministic topological order (ties broken by insertion order)."""
        position = {name: i for i, name in enumerate(self.nodes)}
        for name in nx.lexicographical_topological_sort(self, key=position.__getitem__):
            yield self.op(name)

    def validate(self) -> None:
        """Check the invariants: acyclic and shapes consistent with the op registry."""
        if not nx.is_directed_acyclic_graph(self):
            cycle = nx.find_cycle(self)
            path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            raise GraphError(f"graph {self.name} has a cycle: {path}; a model graph must be acyclic")
        for name in self.nodes:
            op = self.op(name)
            values = [
                None if s is None else ops.Value(s.shape, s.dtype, op.weights.get(s.name)) for s in op.input_specs
            ]
            definition = ops.get(op.type)
            inferred = definition.infer(values, op.attrs)
            got = [(s.shape, s.dtype) for s in op.output_specs]
            if definition.optional_outputs:  # a node may use a prefix of the outputs
                inferred = inferred[: len(got)]
            if [(tuple(shape), dtype) for shape, dtype in inferred] != got:
                raise GraphError(f"node {name} ({op.type}) declares outputs {got} but computes {inferred}")

    def totals(self) -> dict[str, int]:
        """Whole-graph FLOPs, parameter bytes and op count."""
        all_ops = [self.op(n) for n in self.nodes]
        return {
            "ops": len(all_ops),
            "flops": sum(o.flops for o in all_ops),
            "param_bytes": sum(o.param_bytes for o in all_ops),
        }


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match user arrays to graph inputs: names, shapes and dtypes, with one-line errors."""
    unknown = sorted(set(feeds) - {spec.name for spec in graph.inputs})
    if unknown:
        raise InputError(f"model {graph.name} has no input named {unknown[0]} (inputs: {[s.name for s in graph.inputs]})")
    checked = {}
    for spec in graph.inputs:
        if spec.name not in feeds:
            raise InputError(f"model {graph.name} needs input '{spec.name}' of shape {list(spec.shape)} {spec.dtype}")
        array = np.asarray(feeds[spec.name])
        if tuple(array.shape) != spec.shape:
            raise InputError(
                f"input '{spec.name}' has shape {list(array.shape)}, model {graph.name} expects {list(spec.shape)}"
            )
        if array.dtype != np.dtype(spec.dtype):
            if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                raise InputError(f"input '{spec.name}' is {array.dtype}, model {graph.name} expects {spec.dtype}")
            array = array.astype(spec.dtype)
        checked[spec.name] = np.require(array, requirements="C")
    return checked
