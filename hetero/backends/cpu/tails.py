"""Float tails a compiled cpu plan runs as one 8-bit pass.

A QDQ model keeps in float what has no integer op: HardSwish, Swish (x * Sigmoid(x)), Gelu, a
squeeze-and-excitation gate's Mul, ... Each such group reads an 8-bit tensor through a
DequantizeLinear and returns to 8 bits through a QuantizeLinear: three or more passes over the
tensor, two of them in 4-byte floats. Two shapes of group are a single pass over the bytes:

- **lookup**: DequantizeLinear(x) -> elementwise float ops (any DAG of them, with scalar
  constants) -> one per-tensor QuantizeLinear, every intermediate read only inside the group. The
  output byte is a function of the input byte alone, so the group is a 256-entry table, computed
  once, when the plan is compiled, by running the group's ops in the numpy reference on the 256
  possible inputs: the table *is* the reference's answer for each byte, so the pass gives the
  reference's (and onnxruntime's) bits by construction.
- **gated**: QuantizeLinear(DequantizeLinear(x) * g) with g a float per (image, channel) (an
  (N, C, 1, 1) gate, computed by the plan, or a constant): per element the same float32
  operations as the three ops (dequantize, multiply, divide and round), fused into one loop.

:func:`find_tails` finds the groups of a graph; a plan (``hetero.backends.cpu.plan``) runs the
fused step in place of the group's QuantizeLinear, drops the group's other ops (and a
DequantizeLinear no other op reads), and, for a hook that wants every op's outputs, recomputes the
dropped ones on demand (:meth:`Tail.replay`). ``HETERO_CPU_FUSE_TAILS=0`` compiles plans without.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hetero.backends.cpu import kernels_tail as kt
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu import native
from hetero.backends.cpu.kernels_quant import scalar
from hetero.ir.ops.pool import batch_norm_float32
from hetero.backends.cpu.steps import INT8, NCHW, NHWC, Step
from hetero.backends.reference import reference_op
from hetero.ir.graph import Graph, Op

F32 = np.float32

ENABLED = os.environ.get("HETERO_CPU_FUSE_TAILS", "1") != "0"

UNARY = frozenset((
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity", "LeakyRelu", "Elu", "Selu", "Celu",
    "Erf", "Gelu", "QuickGelu", "Softplus", "Softsign", "Mish", "Swish", "ThresholdedRelu", "Shrink", "Neg", "Abs",
    "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos", "Tan", "Atan", "Sinh", "Cosh",
))
"""Float ops each output element of which is a function of the same element of its one input."""
BINARY = frozenset(("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"))
"""Elementwise ops of two operands (both from the group, or one a scalar constant)."""


@dataclass(frozen=True)
class Tail:
    """A fused group: ``kind`` ("lookup", "gated" or "affine"), ``ops`` (every op of the group, in graph
    order, the QuantizeLinear ``anchor`` last), ``sources`` (the activation tensors the fused pass
    reads: the 8-bit tensor, then the gate for "gated") and ``table`` (lookup: the 256 output
    bytes, indexed by the input byte)."""

    kind: str
    ops: tuple[Op, ...]
    sources: tuple[str, ...]
    table: np.ndarray | None = None

    @property
    def anchor(self) -> Op:
        return self.ops[-1]

    def replay(self, sources: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Every tensor of the group from NCHW source arrays, by the reference (what the dropped
        ops would have computed: the fused pass equals the reference bit for bit)."""
        values = dict(zip(self.sources, sources))
        for op in self.ops:
            values.update(zip(op.outputs, reference_op(op, [values[t] for t in op.activation_inputs])))
        return values

    def step(self, available: tuple[str, ...]) -> Step:
        """The fused pass for sources in the ``available`` layouts (the output keeps the 8-bit
        source's layout)."""
        return (_lookup_step if self.kind == "lookup" else _gated_step)(self, available)  # gated, affine


def _scalar_params(op: Op) -> bool:
    """A QuantizeLinear/DequantizeLinear with constant per-tensor scale and zero point."""
    if len(op.inputs) < 2 or op.inputs[1] not in op.weights:
        return False
    if len(op.inputs) > 2 and op.inputs[2] and (op.inputs[2] not in op.weights or np.asarray(op.weights[op.inputs[2]]).size != 1):
        return False
    return np.asarray(op.weights[op.inputs[1]]).size == 1


def _eight_bit(spec) -> bool:
    return spec is not None and np.dtype(spec.dtype) in INT8


def find_tails(graph: Graph) -> list[Tail]:
    """The lookup and gated groups of ``graph`` (see the module docstring), each anchored at a
    distinct QuantizeLinear; none where fusion is off."""
    if not ENABLED:
        return []
    order = list(graph.ops_in_order())
    index = {op.name: i for i, op in enumerate(order)}
    producer = {t: op for op in order for t in op.outputs}
    readers: dict[str, list[Op]] = {}
    for op in order:
        for t in op.activation_inputs:
            readers.setdefault(t, []).append(op)
    outputs = {spec.name for spec in graph.outputs}

    def only_read_by(tensor: str, allowed: set[str]) -> bool:
        return tensor not in outputs and all(r.name in allowed for r in readers.get(tensor, []))

    def dequantize_of_bytes(op: Op | None) -> bool:
        return (op is not None and op.type == "DequantizeLinear" and _scalar_params(op)
                and _eight_bit(op.input_specs[0]) and op.output_specs[0].dtype == "float32"
                and int(op.attrs.get("block_size", 0) or 0) == 0)

    tails = []
    for q in order:
        if not (q.type == "QuantizeLinear" and _scalar_params(q) and _eight_bit(q.output_specs[0])
                and q.input_specs[0] is not None and q.input_specs[0].dtype == "float32"):
            continue
        tail = (_lookup(q, producer, dequantize_of_bytes, only_read_by) or _gated(q, producer, dequantize_of_bytes, only_read_by)
                or _affine(q, producer, dequantize_of_bytes, only_read_by))
        if tail is not None:
            ops = tuple(sorted(tail[1], key=lambda op: index[op.name])) + (q,)
            tails.append(_finish(tail[0], ops, tail[2]))
    return tails


def _lookup(q: Op, producer, dequantize_of_bytes, only_read_by):
    """A lookup group ending at ``q``: (kind, ops, sources) or None."""
    shape = tuple(q.input_specs[0].shape)
    members: dict[str, Op] = {}
    source = None
    pending = [q.inputs[0]]
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if op is None:
            return None
        if op.name in members:
            continue
        if dequantize_of_bytes(op):
            if source is not None and op.inputs[0] != source:
                return None  # two different 8-bit tensors: not a function of one byte
            source = op.inputs[0]
            members[op.name] = op
            continue
        if op.type not in UNARY and op.type not in BINARY:
            return None
        if len(op.outputs) != 1 or op.output_specs[0].dtype != "float32" or tuple(op.output_specs[0].shape) != shape:
            return None
        if any(np.asarray(w).size != 1 for w in op.weights.values()):
            return None
        if any(spec is None or spec.dtype != "float32" or tuple(spec.shape) != shape
               for t, spec in zip(op.inputs, op.input_specs) if t in op.activation_inputs):
            return None
        members[op.name] = op
        pending.extend(op.activation_inputs)
    if source is None or tuple(producer[q.inputs[0]].output_specs[0].shape) != shape:
        return None
    allowed = set(members) | {q.name}
    for op in members.values():
        if op.type != "DequantizeLinear" and not only_read_by(op.outputs[0], allowed):
            return None
    return "lookup", list(members.values()), (source,)


def _gated(q: Op, producer, dequantize_of_bytes, only_read_by):
    """A gated group ending at ``q``: (kind, ops, sources) or None."""
    mul = producer.get(q.inputs[0])
    if mul is None or mul.type != "Mul" or not only_read_by(mul.outputs[0], {q.name}):
        return None
    shape = tuple(mul.output_specs[0].shape)
    if len(shape) != 4 or mul.output_specs[0].dtype != "float32":
        return None
    for side in (0, 1):
        x, g = mul.inputs[side], mul.inputs[1 - side]
        dq = producer.get(x)
        if x in mul.weights or not dequantize_of_bytes(dq) or tuple(dq.output_specs[0].shape) != shape:
            continue
        g_spec = mul.input_specs[1 - side]
        if g_spec is None or g_spec.dtype != "float32" or not _channel_gate(tuple(g_spec.shape), shape):
            continue
        sources = (dq.inputs[0],) if g in mul.weights else (dq.inputs[0], g)
        return "gated", [dq, mul], sources
    return None


def _affine(q: Op, producer, dequantize_of_bytes, only_read_by):
    """An affine group ending at ``q``: QuantizeLinear(BatchNormalization(DequantizeLinear(x)))
    with constant normalisation parameters (DenseNet's pre-activation blocks), run as a gate of the
    normalisation's per-channel scale plus its shift; (kind, ops, sources) or None."""
    bn = producer.get(q.inputs[0])
    if bn is None or bn.type != "BatchNormalization" or not only_read_by(bn.outputs[0], {q.name}):
        return None
    if len(bn.inputs) != 5 or any(t not in bn.weights for t in bn.inputs[1:5]) or bn.attrs.get("training_mode", 0):
        return None
    shape = tuple(bn.output_specs[0].shape)
    dq = producer.get(bn.inputs[0])
    if len(shape) != 4 or bn.output_specs[0].dtype != "float32" or not dequantize_of_bytes(dq):
        return None
    return "affine", [dq, bn], (dq.inputs[0],)


def _channel_gate(g: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether a tensor of shape ``g`` broadcasts over ``shape`` (N, C, H, W) with one value per
    (image, channel) at most."""
    if len(g) > 4:
        return False
    g4 = (1,) * (4 - len(g)) + g
    return g4[2] == 1 and g4[3] == 1 and g4[0] in (1, shape[0]) and g4[1] in (1, shape[1])


def _finish(kind: str, ops: tuple[Op, ...], sources: tuple[str, ...]) -> Tail:
    if kind != "lookup":
        return Tail(kind, ops, sources)
    dq = next(op for op in ops if op.type == "DequantizeLinear")
    spec = dq.input_specs[0]
    dtype = np.dtype(spec.dtype)
    rank = max(len(spec.shape), 1)
    every_byte = np.arange(256, dtype=np.uint8).view(dtype).reshape((1,) * (rank - 1) + (256,))
    table = Tail(kind, ops, sources).replay([every_byte])[ops[-1].outputs[0]]
    return Tail(kind, ops, sources, np.ascontiguousarray(table.reshape(256)).view(np.uint8))


def _bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1).view(np.uint8)


def _lookup_step(tail: Tail, available: tuple[str, ...]) -> Step:
    table = tail.table
    dtype = np.dtype(tail.anchor.output_specs[0].dtype)
    assert table is not None

    size = int(np.prod(tail.anchor.output_specs[0].shape))
    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None else jobs.bind_part(kt.lookup_part, (
        np.empty(size, np.uint8), table, np.empty(size, np.uint8)), -(-size // kt.LOOKUP_CHUNK), 0, 3)

    def lookup(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(x.shape, dtype)
        if bound is not None and x.size == size and x.flags.c_contiguous and bound.run(x, out):
            return [out]
        flat = _bytes(out)
        ks.run_items(kt.lookup_part, (_bytes(x), table, flat), -(-flat.size // kt.LOOKUP_CHUNK))
        return [out]

    return Step(tail.anchor, (available[0],), (available[0],), lookup)


def _gated_step(tail: Tail, available: tuple[str, ...]) -> Step:
    """A gated group's step (QuantizeLinear(DequantizeLinear(x) * g)), or an affine one's (g the
    normalisation's per-channel scale, plus its shift: the reference's two float32 roundings)."""
    dq, mul, q = tail.ops
    n, c, h, w = mul.output_specs[0].shape
    (_, sx, zx), (_, sy, zy) = ((op.arguments([None]) + [None])[:3] for op in (dq, q))
    sx, zx, sy, zy = F32(np.asarray(sx).reshape(())), np.int32(scalar(zx)), F32(np.asarray(sy).reshape(())), F32(scalar(zy))
    dtype = np.dtype(q.output_specs[0].dtype)
    info = np.iinfo(dtype)
    lo, hi = F32(info.min), F32(info.max)
    if tail.kind == "affine":
        scale, offset = batch_norm_float32(mul.arguments([None]), mul.attrs)
        constant = scale.reshape(1, c, 1, 1)
        shift = np.ascontiguousarray(np.broadcast_to(offset.reshape(1, c), (n, c)), F32)
    else:
        g_name = next(t for t in mul.inputs if t != dq.outputs[0])
        constant = mul.weights.get(g_name)
        shift = np.zeros((n, c), F32)
    channels_last = available[0] == NHWC

    def gate_of(g: np.ndarray) -> np.ndarray:
        g = np.asarray(g, F32)
        g4 = g.reshape((1,) * (4 - g.ndim) + g.shape) if g.ndim < 4 else g
        if g4.shape[1] == 1 and g4.shape[3] != 1:  # an (N, 1, 1, C) channels-last gate
            g4 = g4.reshape(g4.shape[0], g4.shape[3], 1, 1)
        return np.ascontiguousarray(np.broadcast_to(g4.reshape(g4.shape[0], g4.shape[1]), (n, c)), F32)

    fixed = None if constant is None else gate_of(constant)
    shape3 = (n, h * w, c) if channels_last else (n, c, h * w)
    per = max(1, kt.GATED_ELEMENTS // max(shape3[2], 1))
    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None else jobs.bind_part(kt.gated_part, (
        np.empty(shape3, dtype), zx, sx, np.empty((n, c), F32), shift, channels_last, sy, zy, lo, hi, np.empty(shape3, dtype)),
        n * -(-shape3[1] // per), 0, 13, 6)

    def gated(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(inputs[0])
        gate = fixed if fixed is not None else gate_of(inputs[1])
        out = np.empty(x.shape, dtype)
        if bound is not None and x.size == n * c * h * w and x.dtype == dtype and bound.run(x, out, gate):
            return [out]
        x3 = x.reshape(n, h * w, c) if channels_last else x.reshape(n, c, h * w)
        rows, cols = x3.shape[1], x3.shape[2]
        per = max(1, kt.GATED_ELEMENTS // max(cols, 1))
        ks.run_items(kt.gated_part, (x3, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out.reshape(x3.shape)),
                     n * -(-rows // per))
        return [out]

    wants = (available[0],) if constant is not None else (available[0], available[1])
    return Step(q, wants, (available[0],), gated)


__all__ = ["Tail", "find_tails", "ENABLED", "UNARY", "BINARY", "NCHW", "NHWC"]
