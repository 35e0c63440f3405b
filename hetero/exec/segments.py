"""Same-device segments of a placement: runs of ops the runtime hands to a device as one compiled plan.

A device that can run a graph of ops as one plan (``run_segment``: the cpu device) gets, instead
of one queue task per op, one task per segment: the kernels it runs are then those of its
compiled single-device plan (the same steps, layouts and thread counts that ``run_on_device``, the
profiler and ``hetero run --device`` time), and the runtime's per-op Python (queueing, locks,
bookkeeping) is paid once per segment.

The rule, in the graph's topological order: an op joins the open segment of its device when every
op it reads from is already in that segment; otherwise (no producer, a producer elsewhere, or
producers in two segments) it starts a new one. A segment closes after an op whose output leaves
the device (a reader elsewhere, or a graph output), so a tensor another device waits for is handed
over as soon as its segment ends, never held back behind unrelated work. Hence every segment is
ready once its first op (the root) is ready, and its other members are never queued on their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.ir.graph import Graph, Op

log = logging.getLogger(__name__)


@dataclass
class Segment:
    """Ops of one device run together: ``ops`` in topological order, ``ops[0]`` the root."""

    device: str
    ops: list[Op]
    members: set[str] = field(default_factory=set)
    inputs: tuple[str, ...] = ()  # tensors read from outside the segment (graph inputs included)
    outputs: tuple[str, ...] = ()  # tensors read outside the segment, or graph outputs
    graph: Graph | None = None


def plan_segments(order: Sequence[Op], placement: Mapping[str, str], producer: Mapping[str, str],
                  readers: Mapping[str, Sequence[str]], graph_outputs: Sequence[str],
                  segmented: set[str]) -> dict[str, Segment]:
    """The placement's segments of two or more ops on the devices in ``segmented``, by root op
    name (ops outside them run one by one, as before). ``producer``: tensor -> op name,
    ``readers``: tensor -> the op names that read it."""
    final = set(graph_outputs)
    open_segment: dict[str, Segment] = {}
    of: dict[str, Segment] = {}
    for op in order:
        device = placement[op.name]
        sources = {producer[t] for t in op.activation_inputs if t in producer}
        current = open_segment.get(device) if device in segmented else None
        if current is not None and sources and sources <= current.members:
            current.ops.append(op)
            current.members.add(op.name)
        else:
            current = Segment(device, [op], {op.name})
            if device in segmented:
                open_segment[device] = current
        of[op.name] = current
        leaves = any(placement[r] != device for t in op.outputs for r in readers.get(t, ())) or final & set(op.outputs)
        if leaves and open_segment.get(device) is current:
            del open_segment[device]
    segments = {}
    for segment in {id(s): s for s in of.values()}.values():
        if len(segment.ops) < 2:
            continue
        inside = {t for op in segment.ops for t in op.outputs}
        segment.inputs = tuple(dict.fromkeys(t for op in segment.ops for t in op.activation_inputs if t not in inside))
        segment.outputs = tuple(t for op in segment.ops for t in op.outputs
                                if t in final or any(r not in segment.members for r in readers.get(t, ())))
        segments[segment.ops[0].name] = segment
    return segments


def segment_graph(segment: Segment, name: str) -> Graph:
    """The segment as a graph of its own: its external tensors as inputs, ``outputs`` as outputs."""
    specs = {}
    for op in segment.ops:
        for tensor, spec in zip(op.inputs, op.input_specs):
            if tensor in segment.inputs and spec is not None:
                specs.setdefault(tensor, spec)
    return Graph.build(segment.ops, [specs[t] for t in segment.inputs], list(segment.outputs), name=name)


def prepare_segment(device: Device, segment: Segment) -> None:
    """Compile the segment's plan on its device ahead of its first request (a live update's
    load) by running it once on zero inputs; a segment that cannot run on zeros is compiled by
    its first request instead."""
    assert segment.graph is not None
    try:
        device.run_segment(segment.graph, {spec.name: device.upload(np.zeros(spec.shape, spec.dtype))
                                           for spec in segment.graph.inputs})
    except Exception as err:  # e.g. an index input of zeros out of range
        log.info("segment %s not compiled ahead on %s (%s); its first request compiles it", segment.ops[0].name,
                 device.name, err)
