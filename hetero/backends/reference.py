"""The reference device and executor: numpy, op by op in topological order.

It is the correctness oracle every other backend is compared with.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from hetero.ir import ops
from hetero.backends.base import Buffer, HostDevice
from hetero.backends.discovery import DeviceInfo
from hetero.errors import InputError
from hetero.ir.graph import Graph, Op


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


def reference_op(op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run one op in numpy; ``activations`` are its non-constant inputs in order."""
    it = iter(activations)
    args = [None if not t else (op.weights[t] if t in op.weights else next(it)) for t in op.inputs]
    return ops.get(op.type).reference(args, op.attrs)


def run_op(op: Op, values: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run one op in numpy, reading its activation inputs from ``values`` by name."""
    return reference_op(op, [values[t] for t in op.activation_inputs])


def _reference_kernel(device: "ReferenceDevice", op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return reference_op(op, inputs)


class ReferenceDevice(HostDevice):
    """numpy on the host: every registered op type, the oracle for the others."""

    kernels = {name: _reference_kernel for name in ops.supported_ops()}

    def __init__(self, info: DeviceInfo | None = None) -> None:
        super().__init__(info or DeviceInfo("reference", "reference", "numpy on the host", "numpy", 1, 0))
