"""Pad (constant, reflect, edge, wrap), ConvTranspose (1-3 spatial dims, groups, dilations)."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.indexing import const

PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pads(inputs: Sequence[object], attrs: Attrs, rank: int) -> list[tuple[int, int]]:
    if len(inputs) > 1 and inputs[1] is not None:
        flat = [int(p) for p in const(inputs[1], "Pad pads").reshape(-1)]
    else:
        flat = [int(p) for p in attrs.get("pads", ())]
    if len(inputs) > 3 and inputs[3] is not None:
        axes = [int(a) % rank for a in const(inputs[3], "Pad axes").reshape(-1)]
    else:
        axes = list(range(rank))
    if len(flat) != 2 * len(axes):
        raise GraphError(f"Pad pads {flat} do not fit {len(axes)} axes")
    pairs = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        pairs[axis] = (flat[i], flat[i + len(axes)])
    return pairs


def _pad_mode(attrs: Attrs) -> str:
    mode = attrs.get("mode", "constant")
    if mode not in PAD_MODES:
        raise UnsupportedOpError(f"Pad attribute mode={mode!r} is not supported ({', '.join(PAD_MODES)})")
    return mode


def _pad_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    mode = _pad_mode(attrs)
    pairs = _pads(inputs, attrs, len(x.shape))
    shape = tuple(d + b + e for d, (b, e) in zip(x.shape, pairs))
    if any(d < 0 for d in shape):
        raise GraphError(f"Pad pads {pairs} crop more than the input {list(x.shape)}")
    if mode != "constant" and any(d == 0 and (b or e) for d, (b, e) in zip(x.shape, pairs)):
        raise GraphError(f"Pad mode {mode} cannot pad an empty axis")
    return [(shape, x.dtype)]


def _pad(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    mode = _pad_mode(attrs)
    pairs = _pads(ins, attrs, x.ndim)
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(pairs))
    x = x[crop]
    grow = [(max(b, 0), max(e, 0)) for b, e in pairs]
    if mode == "constant":
        value = ins[2].reshape(-1)[0] if len(ins) > 2 and ins[2] is not None and ins[2].size else 0
        return [np.pad(x, grow, mode="constant", constant_values=value)]
    return [np.pad(x, grow, mode=PAD_MODES[mode])]


register("Pad", infer=_pad_infer, reference=_pad, flops=lambda i, o, a: 0, inputs=(1, 4))


# --- ConvTranspose --------------------------------------------------------------------------

def _geometry(x: Shape, w: Shape, attrs: Attrs) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """(strides, dilations, pads_begin, pads_end, output spatial shape)."""
    spatial = len(x) - 2
    kernel = [int(k) for k in attrs.get("kernel_shape", w[2:])]
    strides = [int(s) for s in attrs.get("strides", (1,) * spatial)]
    dilations = [int(d) for d in attrs.get("dilations", (1,) * spatial)]
    out_pad = [int(p) for p in attrs.get("output_padding", (0,) * spatial)]
    full = [s * (n - 1) + op + (k - 1) * d + 1 for n, s, op, k, d in zip(x[2:], strides, out_pad, kernel, dilations)]
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise UnsupportedOpError(f"ConvTranspose attribute auto_pad={auto!r} is not supported")
    if "output_shape" in attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = [int(o) for o in attrs["output_shape"]][-spatial:] if "output_shape" in attrs else [n * s for n, s in zip(x[2:], strides)]
        total = [f - t for f, t in zip(full, target)]
        if any(t < 0 for t in total):  # a larger output_shape implies output padding at the end
            begin = [0 if t < 0 else t // 2 for t in total]
        elif auto == "SAME_LOWER":
            begin = [t - t // 2 for t in total]
        else:
            begin = [t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
    elif auto == "VALID":
        begin, end = [0] * spatial, [0] * spatial
    else:
        pads = [int(p) for p in attrs.get("pads", (0,) * (2 * spatial))]
        begin, end = pads[:spatial], pads[spatial:]
    out = [f - b - e for f, b, e in zip(full, begin, end)]
    return strides, dilations, begin, end, out


def _conv_t_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    if len(x.shape) not in (3, 4, 5) or len(w.shape) != len(x.shape):
        raise UnsupportedOpError(f"ConvTranspose of rank {len(x.shape)} is not supported (1-3 spatial dims)")
    group = int(attrs.get("group", 1))
    if x.shape[1] != w.shape[0] or w.shape[0] % group:
        raise GraphError(f"ConvTranspose input channels {x.shape[1]} do not match weights {list(w.shape)}")
    *_, out = _geometry(x.shape, w.shape, attrs)
    return [((x.shape[0], w.shape[1] * group, *out), x.dtype)]


def _conv_t_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    return 2 * int(np.prod(x.shape)) * int(np.prod(w.shape[1:]))


def _conv_transpose(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, w = ins[0].astype(np.float64), ins[1].astype(np.float64)
    b = ins[2] if len(ins) > 2 else None
    group = int(attrs.get("group", 1))
    strides, dilations, begin, end, out = _geometry(x.shape, w.shape, attrs)
    n, c = x.shape[:2]
    cg, mg = c // group, w.shape[1]
    full = [max(s * (size - 1) + (k - 1) * d + 1, bb + o)
            for s, size, k, d, bb, o in zip(strides, x.shape[2:], w.shape[2:], dilations, begin, out)]
    y = np.zeros((n, mg * group, *full))
    for g in range(group):
        xg = x[:, g * cg : (g + 1) * cg]
        for kk in itertools.product(*[range(k) for k in w.shape[2:]]):
            contrib = np.einsum("nc...,cm->nm...", xg, w[g * cg : (g + 1) * cg, :, *kk])
            index = tuple(
                slice(k * d, k * d + s * (size - 1) + 1, s)
                for k, d, s, size in zip(kk, dilations, strides, x.shape[2:])
            )
            y[(slice(None), slice(g * mg, (g + 1) * mg), *index)] += contrib
    y = y[(slice(None), slice(None), *[slice(bb, bb + o) for bb, o in zip(begin, out)])]
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * len(out))
    return [np.ascontiguousarray(y).astype(ins[0].dtype)]


register("ConvTranspose", infer=_conv_t_infer, reference=_conv_transpose, flops=_conv_t_flops, inputs=(2, 3))


# --- CenterCropPad (opset 18) -------------------------------------------------------------------

def _crop_pad_plan(shape: Shape, target: np.ndarray, attrs: Attrs) -> list[tuple[int, int, int]]:
    """Per axis (crop start, pad before, new size); axes not named keep their size."""
    rank = len(shape)
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    target = [int(t) for t in np.asarray(target).reshape(-1)]
    if len(target) != len(axes):
        raise GraphError(f"CenterCropPad shape has {len(target)} values for {len(axes)} axes")
    plan = [(0, 0, d) for d in shape]
    for axis, size in zip(axes, target):
        if size < 0:
            raise GraphError(f"CenterCropPad target size {size} for axis {axis} is negative")
        have = shape[axis]
        plan[axis] = ((have - size) // 2, 0, size) if have >= size else (0, (size - have) // 2, size)
    return plan


def _center_crop_pad_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    plan = _crop_pad_plan(x.shape, const(inputs[1], "CenterCropPad shape"), attrs)
    return [(tuple(size for _, _, size in plan), x.dtype)]


def _center_crop_pad(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    """Centred crop where the input is larger, centred zero padding where it is smaller (start rounded down)."""
    x = ins[0]
    plan = _crop_pad_plan(x.shape, ins[1], attrs)
    out = np.zeros(tuple(size for _, _, size in plan), x.dtype)
    source = tuple(slice(start, start + min(size, have)) for (start, _, size), have in zip(plan, x.shape))
    target = tuple(slice(before, before + min(size, have)) for (_, before, size), have in zip(plan, x.shape))
    out[target] = x[source]
    return [out]


register("CenterCropPad", infer=_center_crop_pad_infer, reference=_center_crop_pad, inputs=(2, 2))
