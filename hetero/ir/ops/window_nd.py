"""Windows of any spatial rank (1-D, 3-D Conv and pooling) for the numpy reference.

The 2-D forms keep their own code in nn.py and pool.py (the backends share its ``Window``); these
functions serve the other ranks with the same rules: auto_pad, ceil_mode, dilations, and
onnxruntime's AveragePool divisor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs


@dataclass(frozen=True)
class WindowND:
    """Resolved window geometry over d spatial axes."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out_shape: tuple[int, ...]


def _out_dim(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    span = size + pb + pe - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:  # last window would start in the end padding
        out -= 1
    return out


def window_nd(attrs: Attrs, in_shape: Sequence[int], kernel: Sequence[int] | None = None) -> WindowND:
    """Resolve kernel, strides, dilations, auto_pad and ceil_mode over ``len(in_shape)`` axes."""
    rank = len(in_shape)
    kernel = tuple(int(k) for k in (kernel if kernel is not None else attrs["kernel_shape"]))
    if len(kernel) != rank or rank not in (1, 2, 3):
        raise UnsupportedOpError(f"only 1-D, 2-D and 3-D windows are supported, got kernel {list(kernel)}")
    strides = tuple(int(s) for s in attrs.get("strides", (1,) * rank))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1,) * rank))
    ceil = bool(attrs.get("ceil_mode", 0))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
    elif auto_pad == "VALID":
        begin, end = [0] * rank, [0] * rank
    else:
        pads = [int(p) for p in attrs.get("pads", (0,) * (2 * rank))]
        begin, end = pads[:rank], pads[rank:]
    out = tuple(
        _out_dim(in_shape[i], kernel[i], strides[i], dilations[i], begin[i], end[i], ceil) for i in range(rank)
    )
    if min(out) < 1:
        raise GraphError(f"window {list(kernel)} leaves no output on input {list(in_shape)}")
    return WindowND(kernel, strides, dilations, tuple(begin), tuple(end), out)


def patches_nd(x: np.ndarray, win: WindowND, pad_value: float = 0.0) -> np.ndarray:
    """View of x (N, C, *spatial) as windows (N, C, *out_shape, *kernel), padded as the window says."""
    rank = len(win.kernel)
    pad = [(0, 0), (0, 0)]
    for i in range(rank):
        need = (win.out_shape[i] - 1) * win.strides[i] + win.dilations[i] * (win.kernel[i] - 1) + 1
        pad.append((win.pads_begin[i], max(need - x.shape[2 + i] - win.pads_begin[i], win.pads_end[i], 0)))
    xp = np.pad(x, pad, constant_values=pad_value)
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp,
        shape=(*x.shape[:2], *win.out_shape, *win.kernel),
        strides=(s[0], s[1], *(s[2 + i] * win.strides[i] for i in range(rank)),
                 *(s[2 + i] * win.dilations[i] for i in range(rank))),
        writeable=False,
    )


def _window_axes(rank: int) -> tuple[int, ...]:
    return tuple(range(2 + rank, 2 + 2 * rank))


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: Attrs) -> np.ndarray:
    """Grouped convolution of x (N, C, *spatial) with w (M, C/group, *kernel) in x's dtype."""
    group = int(attrs.get("group", 1))
    rank = x.ndim - 2
    cols = patches_nd(x, window_nd(attrs, x.shape[2:], w.shape[2:]))  # N, C, *out, *k
    m, cg = w.shape[0], x.shape[1] // group
    mg = m // group
    parts = []
    for g in range(group):
        part = cols[:, g * cg:(g + 1) * cg]
        wg = w[g * mg:(g + 1) * mg]
        y = np.tensordot(part, wg, axes=([1, *_window_axes(rank)], [1, *range(2, 2 + rank)]))  # N, *out, Mg
        parts.append(np.moveaxis(y, -1, 1))
    y = np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * rank)
    return np.ascontiguousarray(y, dtype=x.dtype)


def max_pool_nd(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """MaxPool over windows of any rank; padding never wins the max."""
    win = window_nd(attrs, x.shape[2:])
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    return np.ascontiguousarray(patches_nd(x, win, pad_value=low).max(axis=_window_axes(x.ndim - 2)))


def average_pool_nd(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """AveragePool over windows of any rank with onnxruntime's divisor rule (see pool.average_divisor)."""
    rank = x.ndim - 2
    win = window_nd(attrs, x.shape[2:])
    axes = _window_axes(rank)
    sums = patches_nd(x, win).sum(axis=axes, dtype=np.float32)
    if attrs.get("count_include_pad", 0):
        padded = tuple(x.shape[2 + i] + win.pads_begin[i] + win.pads_end[i] for i in range(rank))
        inner = WindowND(win.kernel, win.strides, win.dilations, (0,) * rank, (0,) * rank, win.out_shape)
        divisor = patches_nd(np.ones((1, 1, *padded), np.float32), inner).sum(axis=axes)[0, 0]
    else:
        divisor = patches_nd(np.ones((1, 1, *x.shape[2:]), np.float32), win).sum(axis=axes)[0, 0]
    return (sums / divisor).astype(x.dtype)


def lp_pool_nd(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """LpPool: (sum over the window of |x|^p)^(1/p), padding contributing zeros."""
    p = float(attrs.get("p", 2))
    win = window_nd(attrs, x.shape[2:])
    powered = np.abs(x.astype(np.float64)) ** p
    sums = patches_nd(powered, win).sum(axis=_window_axes(x.ndim - 2))
    return (sums ** (1.0 / p)).astype(x.dtype)


def max_pool_indices(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """MaxPool's second output: the flat index into x of each window's (first) maximum, row-major
    or, with ``storage_order`` 1, column-major over the spatial axes."""
    rank = x.ndim - 2
    win = window_nd(attrs, x.shape[2:])
    low = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    values = patches_nd(x, win, pad_value=low)
    spatial = x.shape[2:]
    if attrs.get("storage_order", 0):
        strides = np.cumprod((1,) + spatial[:-1])  # column-major over the spatial axes
        grid = sum(np.indices(spatial)[i] * int(strides[i]) for i in range(rank))
    else:
        grid = np.arange(int(np.prod(spatial))).reshape(spatial)
    positions = patches_nd(grid[np.newaxis, np.newaxis].astype(np.int64), win, pad_value=-1)[0, 0]  # *out, *k
    flat = values.reshape(values.shape[: 2 + rank] + (-1,))
    best = flat.argmax(axis=-1)  # N, C, *out: position in the window
    where = np.take_along_axis(
        np.broadcast_to(positions.reshape(positions.shape[:rank] + (-1,)), flat.shape), best[..., np.newaxis], axis=-1
    )[..., 0]
    plane = int(np.prod(spatial))
    base = (np.arange(x.shape[0])[:, None] * x.shape[1] + np.arange(x.shape[1])[None, :]) * plane
    return (where + base.reshape(base.shape + (1,) * rank)).astype(np.int64)
