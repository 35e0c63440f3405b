"""Pooling, reductions, normalisation and softmax."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import mlas
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.nn import Window, patches, window
from hetero.ir.ops.window_nd import average_pool_nd, lp_pool_nd, max_pool_indices, max_pool_nd, window_nd


def _pool_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if len(x.shape) not in (3, 4, 5):
        raise UnsupportedOpError(f"only 1-D, 2-D and 3-D pooling (3-D to 5-D input) are supported, got {list(x.shape)}")
    if len(x.shape) != 4:
        return [((x.shape[0], x.shape[1], *window_nd(attrs, x.shape[2:]).out_shape), x.dtype)]
    win = window(attrs, x.shape[2:])
    return [((x.shape[0], x.shape[1], *win.out_hw), x.dtype)]


def _max_pool_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    """MaxPool's values and, when a node asks for it, its Indices (int64)."""
    values = _pool_infer(inputs, attrs)[0]
    return [values, (values[0], "int64")]


def _max_pool(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    values = max_pool(x, attrs) if x.ndim == 4 else max_pool_nd(x, attrs)
    return [values, max_pool_indices(x, attrs)]


def _pool_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return int(np.prod(outputs[0])) * int(np.prod(attrs["kernel_shape"]))


def max_pool(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """MaxPool over 2-D windows; padding never wins the max."""
    win = window(attrs, x.shape[2:])
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    return np.ascontiguousarray(patches(x, win, pad_value=low).max(axis=(4, 5)))


def average_divisor(win: Window, in_hw: Sequence[int], count_include_pad: bool) -> np.ndarray:
    """Per output position, how many elements AveragePool divides by (onnxruntime's rule).

    With count_include_pad the explicit pads count but ceil_mode's overhang does not;
    without it only real input elements count.
    """
    h, w = in_hw
    top, left, bottom, right = win.pads
    if count_include_pad:
        ones = np.ones((1, 1, h + top + bottom, w + left + right), np.float32)
        inner = Window(win.kernel, win.strides, win.dilations, (0, 0, 0, 0), win.out_hw)
        return patches(ones, inner).sum(axis=(4, 5))[0, 0]
    ones = np.ones((1, 1, h, w), np.float32)
    return patches(ones, win).sum(axis=(4, 5))[0, 0]


def average_pool(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """AveragePool over 2-D windows with onnxruntime's divisor rule."""
    win = window(attrs, x.shape[2:])
    sums = patches(x, win).sum(axis=(4, 5), dtype=np.float32)
    divisor = average_divisor(win, x.shape[2:], bool(attrs.get("count_include_pad", 0)))
    return (sums / divisor).astype(x.dtype)


register(
    "MaxPool",
    infer=_max_pool_infer,
    reference=_max_pool,
    flops=_pool_flops,
    optional_outputs=True,
)
register(
    "AveragePool",
    infer=_pool_infer,
    reference=lambda ins, attrs: [
        average_pool(ins[0], attrs) if ins[0].ndim == 4 else average_pool_nd(ins[0], attrs)
    ],
    flops=_pool_flops,
)
register("LpPool", infer=_pool_infer, reference=lambda ins, attrs: [lp_pool_nd(ins[0], attrs)], flops=_pool_flops)


def _gap_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [((*x.shape[:2],) + (1,) * (len(x.shape) - 2), x.dtype)]


def _input_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    x = inputs[0]
    assert x is not None
    return int(np.prod(x.shape))


register(
    "GlobalAveragePool",
    infer=_gap_infer,
    reference=lambda ins, attrs: [
        ins[0].mean(axis=tuple(range(2, ins[0].ndim)), keepdims=True, dtype=np.float32).astype(ins[0].dtype)
    ],
    flops=_input_flops,
)


register(
    "GlobalMaxPool",
    infer=_gap_infer,
    reference=lambda ins, attrs: [ins[0].max(axis=tuple(range(2, ins[0].ndim)), keepdims=True)],
    flops=_input_flops,
)


def _global_lp_pool(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, p = ins[0], float(attrs.get("p", 2))
    sums = (np.abs(x.astype(np.float64)) ** p).sum(axis=tuple(range(2, x.ndim)), keepdims=True)
    return [(sums ** (1.0 / p)).astype(x.dtype)]


register("GlobalLpPool", infer=_gap_infer, reference=_global_lp_pool, flops=_input_flops)


def reduce_axes(inputs: Sequence[object], attrs: Attrs, rank: int) -> tuple[int, ...]:
    """ReduceMean's axes from the opset-18 input or the older attribute; all axes when absent."""
    axes = attrs.get("axes")
    if len(inputs) > 1 and inputs[1] is not None:
        const = getattr(inputs[1], "const", inputs[1])
        if const is None:
            raise UnsupportedOpError("ReduceMean with axes computed at run time is not supported")
        axes = [int(a) for a in np.asarray(const).reshape(-1)]
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return ()
        return tuple(range(rank))
    return tuple(sorted(int(a) % rank for a in axes))


def _reduce_mean_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axes = reduce_axes(inputs, attrs, len(x.shape))
    keep = bool(attrs.get("keepdims", 1))
    shape = tuple(
        (1 if i in axes else d) for i, d in enumerate(x.shape) if keep or i not in axes
    )
    return [(shape, x.dtype)]


def _reduce_mean(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axes = reduce_axes(ins, attrs, x.ndim)
    keep = bool(attrs.get("keepdims", 1))
    if x.dtype == np.float32 and axes and axes == tuple(range(axes[0], x.ndim)) and x.size:
        return [mlas.reduce_mean_trailing(x, axes[0], keep)]  # as onnxruntime's kernel sums
    return [np.asarray(x.mean(axis=axes, keepdims=keep, dtype=np.float32), dtype=x.dtype)]


register(
    "ReduceMean", infer=_reduce_mean_infer, reference=_reduce_mean, flops=_input_flops, inputs=(1, 2)
)


def _same(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(x.shape, x.dtype)]


def _softmax(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axis = int(attrs.get("axis", -1))
    if x.dtype == np.float32:  # as onnxruntime's CPU kernel rounds, so that a QuantizeLinear after it agrees
        return [mlas.softmax(x, axis)]
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return [(e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)]


register("Softmax", infer=_same, reference=_softmax, flops=lambda i, o, a: 5 * int(np.prod(o[0])))


def batch_norm_affine(ins: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization (inference) as a per-channel (scale, shift) pair in float32."""
    gamma, beta, mean, var = (np.asarray(a, np.float64) for a in ins[1:5])
    eps = float(attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _batch_norm_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if attrs.get("training_mode", 0):
        raise UnsupportedOpError("BatchNormalization in training mode is not supported")
    for param in inputs[1:5]:
        if param is None or param.shape != (x.shape[1],):
            raise GraphError(f"BatchNormalization parameters must have shape [{x.shape[1]}]")
    return [(x.shape, x.dtype)]


def batch_norm_float32(ins: Sequence[np.ndarray], attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization (inference) as onnxruntime's CPU kernel runs it, every step a float32
    rounding: 1 / sqrt(var + eps), times gamma, and beta - mean * that; then y = x * scale + shift.
    (``batch_norm_affine``, in float64, folds a BatchNormalization into the conv before it at
    import; an unfolded one, as in a pre-activation block, runs with these roundings so that an
    int8 graph quantizing its output gets onnxruntime's integers.)"""
    gamma, beta, mean, var = (np.asarray(a, np.float32) for a in ins[1:5])
    inv_std = (np.float32(1.0) / np.sqrt((var + np.float32(attrs.get("epsilon", 1e-5))).astype(np.float32))).astype(np.float32)
    scale = (inv_std * gamma).astype(np.float32)
    return scale, (beta - (mean * scale).astype(np.float32)).astype(np.float32)


def _batch_norm(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    scale, shift = batch_norm_float32(ins, attrs)  # type: ignore[arg-type]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return [(x * scale.reshape(shape) + shift.reshape(shape)).astype(x.dtype)]


register(
    "BatchNormalization",
    infer=_batch_norm_infer,
    reference=_batch_norm,
    flops=lambda i, o, a: 2 * int(np.prod(o[0])),
    inputs=(5, 5),
)
