"""Resize: nearest, linear and cubic modes with every coordinate transformation mode,
computed separably (one interpolation matrix per resized axis) in float64."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.indexing import const

MODES = ("nearest", "linear", "cubic")
COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_crop_and_resize")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")


def _optional(inputs: Sequence[object], i: int, what: str) -> np.ndarray | None:
    if len(inputs) <= i or inputs[i] is None:
        return None
    array = const(inputs[i], f"Resize {what}")
    return array if array.size else None


def _check(attrs: Attrs) -> None:
    for key, allowed, default in (("mode", MODES, "nearest"), ("coordinate_transformation_mode", COORDINATES, "half_pixel"),
                                  ("nearest_mode", NEAREST, "round_prefer_floor"),
                                  ("keep_aspect_ratio_policy", POLICIES, "stretch")):
        if attrs.get(key, default) not in allowed:
            raise UnsupportedOpError(f"Resize attribute {key}={attrs[key]!r} is not supported ({', '.join(allowed)})")
    if int(attrs.get("antialias", 0)):
        raise UnsupportedOpError("Resize attribute antialias=1 is not supported")


def plan(shape: Shape, inputs: Sequence[object], attrs: Attrs) -> tuple[list[int], list[float], np.ndarray | None]:
    """Output shape, the scale per axis and the roi (per axis start, end) or None."""
    _check(attrs)
    rank = len(shape)
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    scales_in, sizes_in = _optional(inputs, 2, "scales"), _optional(inputs, 3, "sizes")
    if (scales_in is None) == (sizes_in is None):
        raise GraphError("Resize needs exactly one of scales and sizes")
    out, scales = list(shape), [1.0] * rank
    if scales_in is not None:
        if len(scales_in) != len(axes):
            raise GraphError(f"Resize scales {list(scales_in)} do not fit axes {axes}")
        for a, s in zip(axes, scales_in.astype(np.float64)):
            if s <= 0:
                raise GraphError(f"Resize scale {s} is not positive")
            scales[a], out[a] = float(s), int(np.floor(shape[a] * s))
    else:
        sizes = [int(s) for s in sizes_in]
        if len(sizes) != len(axes):
            raise GraphError(f"Resize sizes {sizes} do not fit axes {axes}")
        policy = attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy == "stretch":
            for a, s in zip(axes, sizes):
                scales[a], out[a] = s / shape[a], s
        else:
            ratios = [s / shape[a] for a, s in zip(axes, sizes)]
            common = min(ratios) if policy == "not_larger" else max(ratios)
            for a in axes:
                scales[a], out[a] = common, int(np.floor(shape[a] * common + 0.5))
    roi = _optional(inputs, 1, "roi")
    if roi is not None:
        full = np.tile(np.array([0.0, 1.0]), (rank, 1))
        roi = roi.astype(np.float64).reshape(2, -1)
        for i, a in enumerate(axes):
            full[a] = roi[0, i], roi[1, i]
        roi = full
    return out, scales, roi


def _source(x: np.ndarray, scale: float, n_in: int, n_out: float, mode: str, roi: tuple[float, float]) -> np.ndarray:
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = len(x) / n_out  # rounded over exact output length
        return n_in / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if n_out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    start, end = roi
    if n_out > 1:
        return start * (n_in - 1) + x * (end - start) * (n_in - 1) / (n_out - 1)
    return np.full_like(x, 0.5 * (start + end) * (n_in - 1))


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _matrix(n_in: int, n_out: int, scale: float, roi: tuple[float, float], attrs: Attrs) -> tuple[np.ndarray, np.ndarray]:
    """(out x in weights, out-of-range mask for tf_crop_and_resize)."""
    coord = attrs.get("coordinate_transformation_mode", "half_pixel")
    mode = attrs.get("mode", "nearest")
    # onnx's length_resized is scale * length_original, not the rounded output length
    x = _source(np.arange(n_out, dtype=np.float64), scale, n_in, scale * n_in, coord, roi)
    outside = (x < 0) | (x > n_in - 1) if coord == "tf_crop_and_resize" else np.zeros(n_out, bool)
    weights = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        rule = attrs.get("nearest_mode", "round_prefer_floor")
        if rule == "round_prefer_floor":
            index = np.ceil(x - 0.5)
        elif rule == "round_prefer_ceil":
            index = np.floor(x + 0.5)
        elif rule == "floor":
            index = np.floor(x)
        else:
            index = np.ceil(x)
        weights[rows, np.clip(index, 0, n_in - 1).astype(np.int64)] = 1.0
    elif mode == "linear":
        x = np.clip(x, 0, n_in - 1)
        low = np.floor(x)
        frac = x - low
        low = low.astype(np.int64)
        np.add.at(weights, (rows, low), 1 - frac)
        np.add.at(weights, (rows, np.minimum(low + 1, n_in - 1)), frac)
    else:
        a = float(attrs.get("cubic_coeff_a", -0.75))
        low = np.floor(x).astype(np.int64)
        for offset in (-1, 0, 1, 2):
            index = low + offset
            w = _cubic(x - index, a)
            if int(attrs.get("exclude_outside", 0)):
                w = np.where((index < 0) | (index >= n_in), 0.0, w)
            np.add.at(weights, (rows, np.clip(index, 0, n_in - 1)), w)
        if int(attrs.get("exclude_outside", 0)):
            weights /= weights.sum(axis=1, keepdims=True)
    return weights, outside


def _resize_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    out, _, _ = plan(x.shape, inputs, attrs)
    return [(tuple(out), x.dtype)]


def _resize(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    out, scales, roi = plan(x.shape, ins, attrs)
    y = x.astype(np.float64)
    mask = np.zeros(out, bool)
    for axis in range(x.ndim):
        if out[axis] == x.shape[axis] and scales[axis] == 1.0 and roi is None:
            continue
        weights, outside = _matrix(x.shape[axis], out[axis], scales[axis], tuple(roi[axis]) if roi is not None else (0.0, 1.0), attrs)
        y = np.moveaxis(np.tensordot(weights, np.moveaxis(y, axis, 0), axes=1), 0, axis)
        mask |= outside.reshape([-1 if i == axis else 1 for i in range(x.ndim)])
    y = np.where(mask, float(attrs.get("extrapolation_value", 0.0)), y)
    if x.dtype.kind in "iu":
        y = np.clip(np.round(y), np.iinfo(x.dtype).min, np.iinfo(x.dtype).max)
    return [y.astype(x.dtype)]


def _resize_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    taps = {"nearest": 0, "linear": 2, "cubic": 4}.get(attrs.get("mode", "nearest"), 0)
    return taps * len(outputs[0]) * int(np.prod(outputs[0]))


register("Resize", infer=_resize_infer, reference=_resize, flops=_resize_flops, inputs=(1, 4))
