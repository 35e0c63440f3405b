"""CPU kernels of the ops transformers add: LayerNormalization, InstanceNormalization,
LogSoftmax, Erf/Gelu and the float math unaries (Exp, Log, Sqrt, Reciprocal, Neg, Abs,
Sin, Cos, Softplus, Floor, Ceil), Pow, Mod, comparisons and logic, Where,
ReduceSum/ReduceMax, Trilu, CumSum, IsNaN (numba, kernels_transformer_nb.py), and Expand/Tile (numpy copies,
as the other data-movement ops of this device).

``TRANSFORMER_KERNELS`` and ``TRANSFORMER_CONDITIONS`` are merged into the CpuDevice tables;
each condition admits exactly the dtypes and attributes its kernel handles, anything else is a
capability gap.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from hetero.backends.base import Device, Predicate
from hetero.backends.cpu import kernels_transformer_nb as t
from hetero.ir.graph import Op, TensorSpec
from hetero.backends.cpu import kernels_mlas as m
from hetero.ir.ops.pool import reduce_axes

Kernel = Callable[[Device, Op, Sequence[np.ndarray]], list[np.ndarray]]
F32 = np.float32
COMPARABLE = ("float32", "int32", "int64")
MOVABLE = ("float32", "int8", "uint8", "int32", "int64", "bool")


def broadcast_plan(shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]):
    """Collapse a numpy broadcast of C-contiguous operands to 4 dims: (dims, [strides per operand])
    as int64 arrays (stride 0 where an operand is broadcast), or None past 4 dims."""
    rank = len(out_shape)
    walks = []
    for shape in shapes:
        full = (1,) * (rank - len(shape)) + tuple(shape)
        strides, step = [0] * rank, 1
        for i in range(rank - 1, -1, -1):
            strides[i] = step if full[i] != 1 else 0
            step *= full[i]
        walks.append(strides)
    dims: list[int] = []
    merged: list[list[int]] = [[] for _ in shapes]
    for axis, d in enumerate(out_shape):
        if d == 1:
            continue
        if dims and all(m[-1] == w[axis] * d for m, w in zip(merged, walks)):
            dims[-1] *= d
            for m, w in zip(merged, walks):
                m[-1] = w[axis]
        else:
            dims.append(d)
            for m, w in zip(merged, walks):
                m.append(w[axis])
    if len(dims) > 4:
        return None
    pad = 4 - len(dims)
    return np.array([1] * pad + dims, np.int64), [np.array([0] * pad + m, np.int64) for m in merged]


def _flat(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).reshape(-1)


# --- unary ----------------------------------------------------------------------------------

def unary(code: int | None) -> Kernel:
    """A float32 math unary (None: Neg, on float32 or signed integers)."""

    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(activations[0])
        out = np.empty_like(x)
        if x.size:
            if code is None:
                t.negate(x.reshape(-1), out.reshape(-1))
            else:
                t.unary(code, x.reshape(-1), out.reshape(-1))
        return [out]

    return kernel


def gelu(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Gelu (float32): the reference's arithmetic (onnxruntime's, hetero.ir.ops.mlas), bit for bit."""
    code = m.GELU_TANH if op.attrs.get("approximate", "none") == "tanh" else m.GELU
    return [m.mlas_unary(code, activations[0])]


def erf(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Erf (float32): the reference's arithmetic (onnxruntime's, hetero.ir.ops.mlas), bit for bit."""
    return [m.mlas_unary(m.ERF, activations[0])]


def logical_not(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.ascontiguousarray(activations[0])
    out = np.empty(x.shape, np.bool_)
    t.logical_not(x.reshape(-1), out.reshape(-1))
    return [out]


# --- broadcasting binaries and Where --------------------------------------------------------

def _binary(run: Callable[..., None], out_dtype: str | None = None, float_b: bool = False) -> Kernel:
    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = op.arguments(activations)
        spec = op.output_specs[0]
        dims, (sa, sb) = device.prepared(op, lambda: broadcast_plan([a.shape, b.shape], spec.shape))
        if float_b and b.dtype != F32:
            b = np.asarray(b, F32)
        out = np.empty(spec.shape, out_dtype or spec.dtype)
        if out.size:
            run(op, _flat(a), _flat(b), dims, sa, sb, out.reshape(-1))
        return [out]

    return kernel


def _compare(code: int) -> Kernel:
    return _binary(lambda op, *args: t.compare(code, *args), "bool")


power = _binary(lambda op, *args: t.power(*args), float_b=True)
modulo = _binary(lambda op, *args: t.modulo(bool(op.attrs.get("fmod", 0)), *args))


def where(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    cond, x, y = op.arguments(activations)
    spec = op.output_specs[0]
    dims, (sc, sx, sy) = device.prepared(op, lambda: broadcast_plan([cond.shape, x.shape, y.shape], spec.shape))
    out = np.empty(spec.shape, spec.dtype)
    if out.size:
        t.where(_flat(cond), _flat(x), _flat(y), dims, sc, sx, sy, out.reshape(-1))
    return [out]


# --- normalisations, LogSoftmax, reductions ---------------------------------------------------

def _norm_axis(op: Op) -> int:
    rank = len(op.input_specs[0].shape)  # type: ignore[union-attr]
    return int(op.attrs.get("axis", -1)) % rank


def _row_parameter(value: np.ndarray, norm_shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, F32), norm_shape)).reshape(-1)


def layer_norm(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """LayerNormalization: one row per leading index, float64 mean and variance; Mean and
    InvStdDev (float32) when the node asks for them."""
    args = op.arguments(activations) + [None]
    x, scale, bias = np.ascontiguousarray(args[0]), args[1], args[2]
    axis = _norm_axis(op)
    if x.dtype == F32 and int(op.attrs.get("stash_type", 1)) == 1:  # the reference's float32 bits (onnxruntime's)
        return m.layer_norm(x, scale, bias, axis, float(op.attrs.get("epsilon", 1e-5)))[: len(op.outputs)]
    norm_shape = x.shape[axis:]
    rows, n = math.prod(x.shape[:axis]), math.prod(norm_shape)

    def parameters() -> tuple[np.ndarray, np.ndarray]:
        s = _row_parameter(scale, norm_shape)
        return s, (np.zeros_like(s) if bias is None else _row_parameter(bias, norm_shape))

    constant = all(not name or name in op.weights for name in op.inputs[1:])
    s, b = device.prepared(op, parameters) if constant else parameters()
    out = np.empty_like(x)
    stats = [np.empty(spec.shape, F32) for spec in op.output_specs[1:]]
    mean, inv = (stats + [np.empty(rows, F32), np.empty(rows, F32)])[:2]
    if x.size:
        eps = float(op.attrs.get("epsilon", 1e-5))
        t.layer_norm(x.reshape(rows, n), s, b, bias is not None, eps, out.reshape(rows, n), mean.reshape(-1),
                     inv.reshape(-1))
    return [out, *stats]


def instance_norm(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    x, scale, bias = op.arguments(activations)
    x = np.ascontiguousarray(x)
    shape3 = (x.shape[0], x.shape[1], math.prod(x.shape[2:]))
    out = np.empty_like(x)
    if x.size:
        t.instance_norm(x.reshape(shape3), np.asarray(scale, F32), np.asarray(bias, F32),
                        float(op.attrs.get("epsilon", 1e-5)), out.reshape(shape3))
    return [out]


def log_softmax(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = activations[0]
    axis = int(op.attrs.get("axis", -1)) % max(x.ndim, 1)
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    out = np.empty_like(moved)
    if moved.size:
        t.log_softmax_rows(moved.reshape(-1, moved.shape[-1]), out.reshape(-1, moved.shape[-1]))
    return [np.ascontiguousarray(np.moveaxis(out, -1, axis))]


def _reduce(maximum: bool) -> Kernel:
    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        args = op.arguments(activations)
        x = args[0]
        axes = reduce_axes(args, op.attrs, x.ndim)
        spec = op.output_specs[0]
        if not axes:
            return [np.array(x, copy=True).reshape(spec.shape)]
        kept = tuple(i for i in range(x.ndim) if i not in axes)
        moved = np.ascontiguousarray(x.transpose(kept + axes))
        length = math.prod(x.shape[i] for i in axes)
        out = np.empty(math.prod(x.shape[i] for i in kept), F32)
        rows = moved.reshape(out.size, length)
        if maximum:
            t.row_max(rows, F32(-np.inf), out)
        else:
            t.row_sum(rows, out)
        return [out.reshape(spec.shape)]

    return kernel


# --- Trilu, Expand, Tile ----------------------------------------------------------------------

def trilu(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    args = op.arguments(activations) + [None]
    x = np.ascontiguousarray(args[0])
    k = 0 if args[1] is None else int(np.asarray(args[1]).reshape(()))
    out = np.empty_like(x)
    if x.size:
        shape3 = (-1, x.shape[-2], x.shape[-1])
        t.trilu(x.reshape(shape3), k, bool(op.attrs.get("upper", 1)), x.dtype.type(0), out.reshape(shape3))
    return [out]


def expand(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Expand: a broadcast copy on the host."""
    return [np.ascontiguousarray(np.broadcast_to(activations[0], op.output_specs[0].shape))]


def tile(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Tile: numpy's tiled copy on the host."""
    x, repeats = op.arguments(activations)
    return [np.tile(x, tuple(int(r) for r in np.asarray(repeats).reshape(-1)))]


def cumsum(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.ascontiguousarray(activations[0])
    axis = int(np.asarray(op.weights[op.inputs[1]]).reshape(-1)[0]) % x.ndim
    shape3 = (math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1 :]))
    zero = np.float64(0) if x.dtype.kind == "f" else np.int64(0)
    out = np.empty_like(x)
    if x.size:
        t.cumsum(x.reshape(shape3), zero, bool(op.attrs.get("exclusive", 0)), bool(op.attrs.get("reverse", 0)),
                 out.reshape(shape3))
    return [out]


def is_nan(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.ascontiguousarray(activations[0])
    out = np.empty(x.shape, np.bool_)
    t.is_nan(x.reshape(-1), out.reshape(-1))
    return [out]


TRANSFORMER_KERNELS: dict[str, Kernel] = {
    "CumSum": cumsum,
    "IsNaN": is_nan,
    "Erf": erf,
    "Gelu": gelu,
    "Exp": unary(t.EXP),
    "Log": unary(t.LOG),
    "Sqrt": unary(t.SQRT),
    "Reciprocal": unary(t.RECIPROCAL),
    "Abs": unary(t.ABS),
    "Sin": unary(t.SIN),
    "Cos": unary(t.COS),
    "Softplus": unary(t.SOFTPLUS),
    "Floor": unary(t.FLOOR),
    "Ceil": unary(t.CEIL),
    "Neg": unary(None),
    "Not": logical_not,
    "Pow": power,
    "Mod": modulo,
    "Equal": _compare(t.EQUAL),
    "Less": _compare(t.LESS),
    "Greater": _compare(t.GREATER),
    "LessOrEqual": _compare(t.LESS_EQUAL),
    "GreaterOrEqual": _compare(t.GREATER_EQUAL),
    "And": _compare(t.AND),
    "Or": _compare(t.OR),
    "Xor": _compare(t.XOR),
    "Where": where,
    "LayerNormalization": layer_norm,
    "InstanceNormalization": instance_norm,
    "LogSoftmax": log_softmax,
    "ReduceSum": _reduce(maximum=False),
    "ReduceMax": _reduce(maximum=True),
    "Trilu": trilu,
    "Expand": expand,
    "Tile": tile,
}
"""Kernels by op type, merged into CpuDevice.kernels."""


# --- conditions -------------------------------------------------------------------------------

def _spec(op: Op, index: int) -> TensorSpec | None:
    return op.input_specs[index] if index < len(op.input_specs) else None


def _dtypes(index: int, *dtypes: str) -> Predicate:
    return lambda op: (spec := _spec(op, index)) is not None and spec.dtype in dtypes


def _all(*predicates: Predicate) -> Predicate:
    return lambda op: all(p(op) for p in predicates)


def _broadcasts(op: Op) -> bool:
    shapes = [s.shape for s in op.input_specs if s is not None]
    return broadcast_plan(shapes, op.output_specs[0].shape) is not None


def _same_dtype(first: int, second: int) -> Predicate:
    def ok(op: Op) -> bool:
        a, b = _spec(op, first), _spec(op, second)
        return a is not None and b is not None and a.dtype == b.dtype

    return ok


def _constant(op: Op, index: int) -> bool:
    return index < len(op.inputs) and op.inputs[index] in op.weights


def _layer_norm_ok(op: Op) -> bool:
    x = _spec(op, 0)
    if x is None or x.dtype != "float32" or not x.shape or int(op.attrs.get("stash_type", 1)) != 1:
        return False
    norm_shape = x.shape[_norm_axis(op):]
    for index in (1, 2):
        spec = _spec(op, index)
        if spec is None:
            continue
        if spec.dtype != "float32" or len(spec.shape) > len(norm_shape):
            return False
        try:
            if tuple(np.broadcast_shapes(spec.shape, norm_shape)) != norm_shape:
                return False
        except ValueError:
            return False
    return all(op.outputs)  # Mean and InvStdDev are written when named


def _instance_norm_ok(op: Op) -> bool:
    x, scale, bias = _spec(op, 0), _spec(op, 1), _spec(op, 2)
    if x is None or x.dtype != "float32" or len(x.shape) < 2:
        return False
    return all(p is not None and p.dtype == "float32" and p.shape == (x.shape[1],) for p in (scale, bias))


def _reduce_ok(op: Op) -> bool:
    x = _spec(op, 0)
    if x is None or x.dtype != "float32":
        return False
    return len(op.inputs) < 2 or not op.inputs[1] or _constant(op, 1)


def _trilu_ok(op: Op) -> bool:
    x = _spec(op, 0)
    k_ok = len(op.inputs) < 2 or not op.inputs[1] or _constant(op, 1)
    return x is not None and x.dtype in MOVABLE and len(x.shape) >= 2 and k_ok


def _tile_ok(op: Op) -> bool:
    return _dtypes(0, *MOVABLE)(op) and _constant(op, 1)


FLOAT = _dtypes(0, "float32")
COMPARISON = _all(_dtypes(0, *COMPARABLE), _same_dtype(0, 1), _broadcasts)
LOGIC = _all(_dtypes(0, "bool"), _dtypes(1, "bool"), _broadcasts)
TRANSFORMER_CONDITIONS: dict[str, Predicate] = {
    "CumSum": _all(_dtypes(0, "float32", "int32", "int64"), lambda op: _constant(op, 1)),
    "IsNaN": FLOAT,
    **{name: FLOAT for name in ("Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Sin", "Cos", "Softplus", "Floor",
                                "Ceil")},
    "LogSoftmax": _all(FLOAT, lambda op: len(op.input_specs[0].shape) >= 1),  # type: ignore[union-attr]
    "Gelu": _all(FLOAT, lambda op: op.attrs.get("approximate", "none") in ("none", "tanh")),
    "Neg": _dtypes(0, "float32", "int32", "int64"),
    "Not": _dtypes(0, "bool"),
    "Pow": _all(FLOAT, _dtypes(1, "float32", "int32", "int64"), _broadcasts),
    "Mod": _all(_dtypes(0, "float32", "int32", "int64"), _same_dtype(0, 1), _broadcasts),
    **{name: COMPARISON for name in ("Less", "Greater", "LessOrEqual", "GreaterOrEqual")},
    "Equal": _all(_dtypes(0, *COMPARABLE, "bool"), _same_dtype(0, 1), _broadcasts),
    **{name: LOGIC for name in ("And", "Or", "Xor")},
    "Where": _all(_dtypes(0, "bool"), _dtypes(1, *MOVABLE), _same_dtype(1, 2), _broadcasts),
    "LayerNormalization": _layer_norm_ok,
    "InstanceNormalization": _instance_norm_ok,
    "ReduceSum": _reduce_ok,
    "ReduceMax": _reduce_ok,
    "Trilu": _trilu_ok,
    "Expand": _dtypes(0, *MOVABLE),
    "Tile": _tile_ok,
}
"""What each kernel above handles, merged into CpuDevice.conditions."""
