"""Reductions (Reduce*, ArgMax/ArgMin, CumSum/CumProd) and LogSoftmax/Hardmax.

Float reductions accumulate in float64 and round once to the input dtype; integer ones stay
in integer arithmetic. ReduceMean and Softmax live in pool.py (they predate this module).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.pool import reduce_axes


def _reduced_shape(shape: Shape, axes: tuple[int, ...], keep: bool) -> Shape:
    return tuple((1 if i in axes else d) for i, d in enumerate(shape) if keep or i not in axes)


def _reduce_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axes = reduce_axes(inputs, attrs, len(x.shape))
    return [(_reduced_shape(x.shape, axes, bool(attrs.get("keepdims", 1))), x.dtype)]


def _input_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    x = inputs[0]
    return int(np.prod(x.shape)) if x is not None else 0


def _extreme(x: np.ndarray, high: bool):
    if x.dtype.kind == "f":
        return -np.inf if high else np.inf
    if x.dtype == np.bool_:
        return not high
    info = np.iinfo(x.dtype)
    return info.min if high else info.max


_REDUCERS: dict[str, Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]] = {
    "ReduceSum": lambda x, ax, k: np.sum(x, axis=ax, keepdims=k),
    "ReduceProd": lambda x, ax, k: np.prod(x, axis=ax, keepdims=k),
    "ReduceMax": lambda x, ax, k: np.max(x, axis=ax, keepdims=k, initial=_extreme(x, True)),
    "ReduceMin": lambda x, ax, k: np.min(x, axis=ax, keepdims=k, initial=_extreme(x, False)),
    "ReduceL1": lambda x, ax, k: np.sum(np.abs(x), axis=ax, keepdims=k),
    "ReduceL2": lambda x, ax, k: np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=ax, keepdims=k)),
    "ReduceSumSquare": lambda x, ax, k: np.sum(np.square(x), axis=ax, keepdims=k),
    "ReduceLogSum": lambda x, ax, k: np.log(np.sum(x.astype(np.float64), axis=ax, keepdims=k)),
    "ReduceLogSumExp": lambda x, ax, k: _logsumexp(x.astype(np.float64), ax, k),
}


def _logsumexp(x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    if x.size == 0 or any(x.shape[a] == 0 for a in axes):
        return np.log(np.sum(np.exp(x), axis=axes, keepdims=keep))
    peak = np.max(x, axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)
    out = np.log(np.sum(np.exp(x - peak), axis=axes, keepdims=True)) + peak
    return out if keep else np.squeeze(out, axis=axes)


def _reducer(name: str):
    fn = _REDUCERS[name]

    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = ins[0]
        axes = reduce_axes(ins, attrs, x.ndim)
        keep = bool(attrs.get("keepdims", 1))
        wide = x.astype(np.float64) if x.dtype.kind == "f" else x
        return [np.asarray(fn(wide, axes, keep)).astype(x.dtype)]

    return reference


for _name in _REDUCERS:
    register(_name, infer=_reduce_infer, reference=_reducer(_name), flops=_input_flops, inputs=(1, 2))


# --- ArgMax, ArgMin -------------------------------------------------------------------------

def _arg_axis(rank: int, attrs: Attrs) -> int:
    axis = int(attrs.get("axis", 0))
    if not -rank <= axis < rank:
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _arg_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axis = _arg_axis(len(x.shape), attrs)
    return [(_reduced_shape(x.shape, (axis,), bool(attrs.get("keepdims", 1))), "int64")]


def _arg(fn: Callable[..., np.ndarray]):
    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = ins[0]
        axis = _arg_axis(x.ndim, attrs)
        if attrs.get("select_last_index", 0):
            flipped = np.flip(x, axis=axis)
            index = x.shape[axis] - 1 - fn(flipped, axis=axis)
        else:
            index = fn(x, axis=axis)
        if attrs.get("keepdims", 1):
            index = np.expand_dims(index, axis)
        return [np.asarray(index, np.int64)]

    return reference


register("ArgMax", infer=_arg_infer, reference=_arg(np.argmax), flops=_input_flops)
register("ArgMin", infer=_arg_infer, reference=_arg(np.argmin), flops=_input_flops)


# --- CumSum, CumProd ------------------------------------------------------------------------

def _cum_axis(inputs: Sequence[object], rank: int) -> int:
    axis = getattr(inputs[1], "const", inputs[1])
    if axis is None:
        raise UnsupportedOpError("the axis input must be a constant known at import time")
    axis = int(np.asarray(axis).reshape(-1)[0])
    if not -rank <= axis < rank:
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _cum_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    _cum_axis(inputs, len(x.shape))
    return [(x.shape, x.dtype)]


def _cum(fn: Callable[..., np.ndarray], identity: int):
    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = ins[0]
        axis = _cum_axis(ins, x.ndim)
        wide = x.astype(np.float64) if x.dtype.kind == "f" else x
        if attrs.get("reverse", 0):
            wide = np.flip(wide, axis)
        out = fn(wide, axis=axis)
        if attrs.get("exclusive", 0):
            pad = np.full_like(np.take(out, [0], axis=axis), identity)
            out = np.concatenate([pad, np.take(out, range(x.shape[axis] - 1), axis=axis)], axis=axis)
        if attrs.get("reverse", 0):
            out = np.flip(out, axis)
        return [np.ascontiguousarray(out).astype(x.dtype)]

    return reference


register("CumSum", infer=_cum_infer, reference=_cum(np.cumsum, 0), flops=_input_flops, inputs=(2, 2))
register("CumProd", infer=_cum_infer, reference=_cum(np.cumprod, 1), flops=_input_flops, inputs=(2, 2))


# --- LogSoftmax, Hardmax --------------------------------------------------------------------

def _same(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(x.shape, x.dtype)]


def _log_softmax(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0].astype(np.float64)
    axis = int(attrs.get("axis", -1))
    shifted = x - x.max(axis=axis, keepdims=True)
    return [(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(ins[0].dtype)]


def _hardmax(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axis = int(attrs.get("axis", -1)) % x.ndim
    index = np.expand_dims(np.argmax(x, axis=axis), axis)
    out = np.zeros_like(x)
    np.put_along_axis(out, index, 1, axis=axis)
    return [out]


register("LogSoftmax", infer=_same, reference=_log_softmax, flops=lambda i, o, a: 5 * int(np.prod(o[0])))
register("Hardmax", infer=_same, reference=_hardmax, flops=_input_flops)
