"""The QDQ fusion rules, one per float op type: each returns the QLinear op to emit or None.

Which patterns fuse and why is described in hetero.quant.lowering's docstring; a rule reads
the graph through the Lowering it is given (DQ producers, single Q consumers, tensor specs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hetero.ir.graph import Op
from hetero.quant.qgroups import DROP_QDQ_OPS, INT8_TYPES, QLINEAR_POOLS, QuantParams, Rewrite

if TYPE_CHECKING:
    from hetero.quant.lowering import Lowering


def _consts(*quants: QuantParams | None) -> dict[str, np.ndarray]:
    merged: dict[str, np.ndarray] = {}
    for quant in quants:
        if quant is not None:
            merged.update(quant.consts)
    return merged


def _group(low: Lowering, op: Op, count: int) -> tuple[list[QuantParams], Op, QuantParams, dict[str, Any]] | None:
    """The 8-bit DQs feeding the first ``count`` inputs and the one Q after the op, if all exist."""
    quants = [low.dq(t) if t else None for t in op.inputs[:count]]
    output = low.output_q(op)
    if output is None or len(op.inputs) < count or any(q is None or q.dtype not in INT8_TYPES for q in quants):
        return None
    return quants, *output  # type: ignore[return-value]


def _int8_ok(low: Lowering, x: QuantParams, w: QuantParams) -> bool:
    """Conv and MatMul take int8 activations only where allowed, and then with int8 weights."""
    return x.kind != "int8" or (low.int8_allowed and w.kind == "int8")


def _bias(low: Lowering, op: Op, x: QuantParams, w: QuantParams) -> tuple[bool, str, dict[str, np.ndarray]]:
    """(usable, tensor, weights) of a Conv/Gemm bias: absent, a constant int32 DQ, or a 1-D float
    constant quantized as onnxruntime's WeightBiasQuantization does: round(b / float32(sx * sw))."""
    if len(op.inputs) < 3 or not op.inputs[2]:
        return True, "", {}
    bias = low.dq(op.inputs[2])
    if bias is not None:
        usable = bias.dtype == "int32" and bias.constant
        return usable, bias.tensor, {bias.tensor: bias.consts[bias.tensor]} if usable else {}
    array = op.weights.get(op.inputs[2])
    if array is None or array.dtype != np.float32 or array.ndim != 1 or not x.per_tensor:
        return False, "", {}
    scale = (np.float32(x.scale_array.reshape(())) * w.scale_array.astype(np.float32).reshape(-1)).astype(np.float32)
    if scale.size not in (1, array.size):
        return False, "", {}
    name = f"{op.name}.bias_quantized"
    return True, name, {name: np.rint((array / scale).astype(np.float32)).astype(np.int32)}


def _conv(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 2)
    if group is None:
        return None
    (x, w), q_op, y, attrs = group
    usable, bias, bias_weights = _bias(low, op, x, w)
    if not usable:
        return None
    if x.constant or not w.constant or not x.per_tensor or x.kind != y.kind or not _int8_ok(low, x, w):
        return None
    if not w.per_tensor and w.axis % 4 != 0:
        return None
    inputs = [x.tensor, x.scale, x.zero_point, w.tensor, w.scale, w.zero_point, y.scale, y.zero_point]
    inputs += [bias] if bias else []
    return Rewrite(op.name, "QLinearConv", inputs, [y.tensor], attrs, {**_consts(x, w, y), **bias_weights}, [q_op])


def _gemm(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 2)
    if group is None:
        return None
    (a, b), q_op, y, attrs = group
    usable, bias, bias_weights = _bias(low, op, a, b)
    if not usable or (bias and float(op.attrs.get("beta", 1.0)) != 1.0):
        return None
    if a.constant or not a.per_tensor or a.kind != y.kind or (a.kind == "int8" and b.kind != "int8"):
        return None
    if not b.per_tensor and (low.rank(b) != 2 or b.axis % 2 != (0 if op.attrs.get("transB", 0) else 1)):
        return None
    attrs = {k: v for k, v in attrs.items() if k != "beta"}
    inputs = [a.tensor, a.scale, a.zero_point, b.tensor, b.scale, b.zero_point, bias, y.scale, y.zero_point]
    return Rewrite(op.name, "QGemm", inputs, [y.tensor], attrs, {**_consts(a, b, y), **bias_weights}, [q_op])


def _matmul(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 2)
    if group is None:
        return None
    (a, b), q_op, y, attrs = group
    if not a.per_tensor or a.kind != y.kind or not _int8_ok(low, a, b):
        return None
    if not b.per_tensor and (low.rank(b) != 2 or b.axis % 2 != 1):
        return None
    inputs = [a.tensor, a.scale, a.zero_point, b.tensor, b.scale, b.zero_point, y.scale, y.zero_point]
    return Rewrite(op.name, "QLinearMatMul", inputs, [y.tensor], attrs, _consts(a, b, y), [q_op])


def _add(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 2)
    if group is None:
        return None
    (a, b), q_op, y, attrs = group
    if not (a.per_tensor and b.per_tensor) or not a.kind == b.kind == y.kind:
        return None
    inputs = [a.tensor, a.scale, a.zero_point, b.tensor, b.scale, b.zero_point, y.scale, y.zero_point]
    return Rewrite(op.name, "QLinearAdd", inputs, [y.tensor], attrs, _consts(a, b, y), [q_op])


def _mul(low: Lowering, op: Op) -> Rewrite | None:
    rewrite = _add(low, op)
    if rewrite is not None:
        rewrite.op_type = "QLinearMul"
    return rewrite


def _softmax(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 1)
    if group is None:
        return None
    (x,), q_op, y, attrs = group
    if x.constant or not x.per_tensor or x.kind != y.kind:
        return None
    opset = int(low.graph.graph.get("opset", 13))
    rank = low.rank(x)
    axis = int(attrs.get("axis", -1 if opset >= 13 else 1)) % rank
    if opset < 13 and axis != rank - 1:
        return None
    attrs = {**{k: v for k, v in attrs.items() if k in ("qmin", "qmax")}, "axis": axis, "opset": max(opset, 13)}
    inputs = [x.tensor, x.scale, x.zero_point, y.scale, y.zero_point]
    return Rewrite(op.name, "QLinearSoftmax", inputs, [y.tensor], attrs, _consts(x, y), [q_op])


def _pool(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, 1)
    if group is None:
        return None
    (x,), q_op, y, attrs = group
    if x.constant or not x.per_tensor or x.kind != y.kind:
        return None
    inputs = [x.tensor, x.scale, x.zero_point, y.scale, y.zero_point]
    return Rewrite(op.name, QLINEAR_POOLS[op.type], inputs, [y.tensor], attrs, _consts(x, y), [q_op])


def _concat(low: Lowering, op: Op) -> Rewrite | None:
    group = _group(low, op, len(op.inputs))
    if group is None:
        return None
    operands, q_op, y, attrs = group
    if any(not x.per_tensor or x.kind != y.kind for x in operands):
        return None
    inputs = [y.scale, y.zero_point] + [name for x in operands for name in (x.tensor, x.scale, x.zero_point)]
    return Rewrite(op.name, "QLinearConcat", inputs, [y.tensor], attrs, _consts(y, *operands), [q_op])


def _drop(low: Lowering, op: Op) -> Rewrite | None:
    """Data movement between a DQ and Qs of equal parameters runs on the integer tensor."""
    x = low.dq(op.inputs[0])
    if x is None or x.constant or x.dtype not in INT8_TYPES:
        return None
    if op.type == "MaxPool" and not float(x.scale_array.reshape(-1)[0]) > 0:
        return None
    found = [low.single_q(t) for t in op.outputs]
    if any(f is None or not x.same_as(f[1]) for f in found):
        return None
    pairs = [f for f in found if f is not None]
    outputs, absorbed = [quant.tensor for _, quant in pairs], [q_op for q_op, _ in pairs]
    return Rewrite(op.name, op.type, [x.tensor, *op.inputs[1:]], outputs, dict(op.attrs), dict(op.weights), absorbed)


RULES: dict[str, Callable[[Lowering, Op], Rewrite | None]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Mul": _mul,
    "Softmax": _softmax,
    "Concat": _concat,
    "Split": _drop,
    **{name: _pool for name in QLINEAR_POOLS},
    **{name: _drop for name in DROP_QDQ_OPS},
}
