"""Live model update: a second version of the same graph (new weights) that the runtime switches to.

Only weights may differ: the graphs must have the same ops, in the same order, with the same types,
attributes, tensor shapes and weight shapes, so the plan that places one places the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hetero.backends.base import Device
from hetero.errors import InputError
from hetero.ir.graph import Graph, Op

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveUpdate:
    """Load ``graph``'s weights on every device once request ``after_request`` starts; switch to it
    between requests as soon as every device holds them. Requests before the switch are version 0."""

    graph: Graph
    after_request: int
    label: str = "the new model"


def check_same_structure(old: Graph, new: Graph, old_label: str = "the running model", new_label: str = "the new model") -> None:
    """InputError naming the first op, tensor or weight at which ``new`` differs from ``old`` in structure."""
    fix = "a live update changes weights only: give a model exported from the same graph"
    old_specs = [(s.name, s.shape, s.dtype) for s in (*old.inputs, *old.outputs)]
    new_specs = [(s.name, s.shape, s.dtype) for s in (*new.inputs, *new.outputs)]
    if old_specs != new_specs:
        raise InputError(f"{new_label}: inputs and outputs {new_specs} differ from {old_label}'s {old_specs}; {fix}")
    old_ops, new_ops = list(old.ops_in_order()), list(new.ops_in_order())
    for a, b in zip(old_ops, new_ops):
        if (a.name, a.type, a.inputs, a.outputs) != (b.name, b.type, b.inputs, b.outputs):
            raise InputError(f"{new_label}: node {b.name} ({b.type}) stands where {old_label} has node {a.name} ({a.type}); {fix}")
        if a.signature() != b.signature() or a.output_specs != b.output_specs:
            raise InputError(f"{new_label}: node {b.name} has shapes or attributes {b.signature()}, {old_label} "
                             f"{a.signature()}; {fix}")
        for name, weight in a.weights.items():
            other = b.weights.get(name)
            if other is None or other.shape != weight.shape or other.dtype != weight.dtype:
                got = "none" if other is None else f"{list(other.shape)} {other.dtype}"
                raise InputError(f"{new_label}: node {b.name} weight {name} is {got}, {old_label}'s "
                                 f"{list(weight.shape)} {weight.dtype}; {fix}")
    if len(old_ops) != len(new_ops):
        raise InputError(f"{new_label} has {len(new_ops)} nodes, {old_label} {len(old_ops)}; {fix}")


def load_weights(device: Device, ops: list[Op]) -> int:
    """Prepare ``ops`` on ``device`` (weights uploaded and packed, kernels bound) by running each once
    on zero inputs; the bytes of weights loaded. An op that cannot run on zeros is prepared by its
    first request instead."""
    loaded = 0
    for op in ops:
        specs = [s for s, name in zip(op.input_specs, op.inputs) if name and name not in op.weights]
        if any(s is None for s in specs):
            continue
        try:
            buffers = [device.upload(np.zeros(s.shape, dtype=s.dtype)) for s in specs if s is not None]
            device.run(op, buffers)
            device.synchronize()
            loaded += op.param_bytes
        except Exception as err:  # e.g. an index input of zeros is out of range: its first request prepares it
            log.info("live update: %s not prepared ahead on %s (%s); its first request prepares it", op.name, device.name, err)
    return loaded
