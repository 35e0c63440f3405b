"""Normalisations: LayerNormalization, RMSNormalization, InstanceNormalization,
LpNormalization, MeanVarianceNormalization (float64 statistics, rounded once)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, mlas, register


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _flops(per_element: int):
    def flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
        return per_element * int(np.prod(outputs[0]))

    return flops


def _layer_norm_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axis = _axis(int(attrs.get("axis", -1)), len(x.shape))
    stats = tuple(d if i < axis else 1 for i, d in enumerate(x.shape))
    stash = "float32" if int(attrs.get("stash_type", 1)) == 1 else x.dtype
    return [(x.shape, x.dtype), (stats, stash), (stats, stash)]


def _layer_norm(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    """float32: onnxruntime's arithmetic (``mlas.layer_norm``); other types: float64 statistics
    summed in index order, ``(x - mean) * inv_std * scale + bias``, rounded once."""
    x = ins[0]
    axis = _axis(int(attrs.get("axis", -1)), x.ndim)
    if x.dtype == np.float32 and int(attrs.get("stash_type", 1)) == 1:  # as onnxruntime rounds it
        bias = ins[2] if len(ins) > 2 else None
        return list(mlas.layer_norm(x, ins[1], bias, axis, float(attrs.get("epsilon", 1e-5))))
    n = int(np.prod(x.shape[axis:]))
    rows = x.reshape(-1, n).astype(np.float64)
    mean = (np.add.accumulate(rows, axis=1)[:, -1:] if n else np.zeros((rows.shape[0], 1))) / n
    d = rows - mean
    square = np.add.accumulate(d * d, axis=1)[:, -1:] if n else np.zeros_like(mean)
    inv_std = 1.0 / np.sqrt(square / n + float(attrs.get("epsilon", 1e-5)))
    norm_shape = x.shape[axis:]
    y = d * inv_std * np.broadcast_to(ins[1], norm_shape).reshape(1, n).astype(np.float64)
    if len(ins) > 2 and ins[2] is not None:
        y = y + np.broadcast_to(ins[2], norm_shape).reshape(1, n).astype(np.float64)
    stash = np.float32 if int(attrs.get("stash_type", 1)) == 1 else x.dtype
    stats = (*x.shape[:axis], *([1] * (x.ndim - axis)))
    return [y.astype(x.dtype).reshape(x.shape), mean.astype(stash).reshape(stats), inv_std.astype(stash).reshape(stats)]


register("LayerNormalization", infer=_layer_norm_infer, reference=_layer_norm, flops=_flops(8),
         inputs=(2, 3), optional_outputs=True)


def _rms_norm_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    _axis(int(attrs.get("axis", -1)), len(x.shape))
    return [(x.shape, x.dtype)]


def _rms_norm(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axis = _axis(int(attrs.get("axis", -1)), x.ndim)
    wide = x.astype(np.float64)
    rms = np.sqrt((wide**2).mean(axis=tuple(range(axis, x.ndim)), keepdims=True) + float(attrs.get("epsilon", 1e-5)))
    return [(wide / rms * ins[1].astype(np.float64)).astype(x.dtype)]


register("RMSNormalization", infer=_rms_norm_infer, reference=_rms_norm, flops=_flops(4), inputs=(2, 2))


def _same(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(x.shape, x.dtype)]


def _instance_norm(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    wide = x.astype(np.float64)
    axes = tuple(range(2, x.ndim))
    mean = wide.mean(axis=axes, keepdims=True)
    var = ((wide - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (wide - mean) / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    y = y * ins[1].astype(np.float64).reshape(shape) + ins[2].astype(np.float64).reshape(shape)
    return [y.astype(x.dtype)]


register("InstanceNormalization", infer=_same, reference=_instance_norm, flops=_flops(8), inputs=(3, 3))


def _lp_norm_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    if int(attrs.get("p", 2)) not in (1, 2):
        raise UnsupportedOpError(f"LpNormalization attribute p={attrs['p']} is not supported (1, 2)")
    return _same(inputs, attrs)


def _lp_norm(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    wide = x.astype(np.float64)
    axis = int(attrs.get("axis", -1))
    p = int(attrs.get("p", 2))
    norm = np.sum(np.abs(wide), axis=axis, keepdims=True) if p == 1 else np.sqrt(np.sum(wide**2, axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return [np.where(norm == 0, 0, wide / norm).astype(x.dtype)]


register("LpNormalization", infer=_lp_norm_infer, reference=_lp_norm, flops=_flops(3))


def _mvn(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    wide = x.astype(np.float64)
    axes = tuple(int(a) for a in attrs.get("axes", (0, 2, 3)))
    mean = wide.mean(axis=axes, keepdims=True)
    std = np.sqrt(((wide - mean) ** 2).mean(axis=axes, keepdims=True))
    return [((wide - mean) / (std + 1e-9)).astype(x.dtype)]


register("MeanVarianceNormalization", infer=_same, reference=_mvn, flops=_flops(6))
