"""The reference executor: numpy execution of a Graph, op by op in topological order.

It is the correctness oracle every other backend is compared with.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

import numpy as np

from hetero import ops
from hetero.errors import InputError
from hetero.graph import Graph, Op


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
        checked[spec.name] = np.ascontiguousarray(array)
    return checked


def run_op(op: Op, values: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run one op on numpy arrays; constant inputs come from the op's weights."""
    args = [None if not t else (op.weights[t] if t in op.weights else values[t]) for t in op.inputs]
    return ops.get(op.type).reference(args, op.attrs)


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the graph on numpy arrays and return its outputs by name."""
    values: dict[str, np.ndarray] = dict(check_feeds(graph, feeds))
    remaining = Counter(t for op in graph.ops_in_order() for t in op.activation_inputs)
    keep = {spec.name for spec in graph.outputs}
    for op in graph.ops_in_order():
        for tensor, result in zip(op.outputs, run_op(op, values)):
            values[tensor] = result
        for tensor in op.activation_inputs:
            remaining[tensor] -= 1
            if remaining[tensor] == 0 and tensor not in keep:
                del values[tensor]
    return {spec.name: values[spec.name] for spec in graph.outputs}
