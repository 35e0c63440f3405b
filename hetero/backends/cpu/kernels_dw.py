"""numba depthwise QLinearConv kernels on channels-last (NHWC) int8 images, for compiled plans.

No padded copy of the image is made. The input zero point is folded into the bias (``bias -
zx * sum(w)`` per channel, exact in int32), so each tap is one multiply-add; a kernel row above
or below the image reads ``zrow``, a row of the zero point (adding ``zx * w``, which the folded
bias takes away again); an output column whose taps leave the image at a side reads the nearest
image column instead, against its own copy of the weights with those taps zeroed and its own
folded bias (``edge_weights``), so edge pixels cost what inner ones do. ``kernels_shared.dw_pixels_part`` runs any
kernel size pixel by pixel, a kernel row at a time (five taps summed in registers for 5x5).
Work items are output rows (splitting a row's channels between threads was measured slower:
per-chunk weight views stop LLVM hoisting their loads). Every result equals kernels_int8's:
the same int32 sums, then rules 2-3 in float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hetero.backends.cpu.kernels_int8 import _requant

__all__ = ["edge_weights"]


@njit(cache=True, inline="always")
def _tap_row(x, zrow, ih, h):  # pragma: no cover - compiled
    return x[ih] if 0 <= ih < h else zrow


@njit(cache=True, inline="always")
def _col(iw, w):  # pragma: no cover - compiled
    """An input column clamped into the image (an edge pixel's zero-weighted taps read there)."""
    return 0 if iw < 0 else (w - 1 if iw >= w else iw)


@njit(cache=True, inline="always")
def _mac(acc, x, w):  # pragma: no cover - compiled
    for t in range(acc.size):
        acc[t] += np.int32(x[t]) * w[t]


@njit(cache=True, inline="always")
def _mac5(acc, x0, x1, x2, x3, x4, w):  # pragma: no cover - compiled
    """acc += one kernel row of five taps (w (5, >= n))."""
    for t in range(acc.size):
        s = np.int32(x0[t]) * w[0, t] + np.int32(x1[t]) * w[1, t] + np.int32(x2[t]) * w[2, t]
        acc[t] += s + np.int32(x3[t]) * w[3, t] + np.int32(x4[t]) * w[4, t]


@njit(cache=True, inline="always")
def _finish(acc, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    for t in range(out.size):
        out[t] = _requant(np.int32(acc[t] + bias[t]), mult[t], zy, lo, hi)


def edge_weights(taps: np.ndarray, bias: np.ndarray, zx: int, w: int, wo: int, stride: int, dilation: int,
                 pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the output columns whose taps leave the image at a side: ``edge_of`` (Wo,) int64, the
    column's edge index or -1; per edge the weights taps (kh, kw, C) with the outside kernel
    columns zeroed, (E, kh, kw, C), and the bias with only the inside taps' zero-point term
    folded, (E, C) (``bias`` is the raw int32 bias)."""
    edge_of = np.full(wo, -1, np.int64)
    edges, biases = [], []
    for ow in range(wo):
        inside = np.array([0 <= ow * stride - pad + j * dilation < w for j in range(taps.shape[1])])
        if inside.all():
            continue
        edge_of[ow] = len(edges)
        kept = taps * inside.reshape(1, -1, 1)
        edges.append(kept)
        biases.append((bias - np.int64(zx) * kept.sum(axis=(0, 1), dtype=np.int64)).astype(np.int32))
    c = taps.shape[2]
    if not edges:
        return edge_of, np.zeros((1,) + taps.shape, np.int32), np.zeros((1, c), np.int32)
    return edge_of, np.ascontiguousarray(np.stack(edges), np.int32), np.ascontiguousarray(np.stack(biases))
