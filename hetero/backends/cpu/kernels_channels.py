"""numba channel moves on channels-last tensors, for the cpu device's compiled plans.

ShuffleNet's shuffle is Reshape (N, C, H, W) -> (N, A, B, H, W), Transpose (0, 2, 1, 3, 4) and
Reshape back. Channels-last, both reshapes keep the bytes (the 5-D tensor is stored as
(N, H, W, A, B)) and the transpose is one small (A, B) -> (B, A) transpose per pixel
(``swap_channel_axes``). A channel concat copies each part into its columns of the output's
pixel rows (``copy_columns``), in the widest words the column offsets allow: a row of 32
channels is four 8-byte moves (numpy's strided copy pays a call per pixel row).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["swap_channel_axes", "copy_columns", "word_view"]

PIXELS_PER_ITEM = 256


@njit(parallel=True, cache=True)
def swap_channel_axes(x, out):  # pragma: no cover - compiled
    """out[p, j, i] = x[p, i, j] for x (P, A, B) and out (P, B, A), 8-bit values."""
    pixels, a, b = x.shape
    items = (pixels + PIXELS_PER_ITEM - 1) // PIXELS_PER_ITEM
    for item in prange(items):
        for p in range(item * PIXELS_PER_ITEM, min(pixels, item * PIXELS_PER_ITEM + PIXELS_PER_ITEM)):
            xp, op = x[p], out[p]
            for i in range(a):
                for j in range(b):
                    op[j, i] = xp[i, j]


@njit(parallel=True, cache=True)
def copy_columns(srcs, begins, dst):  # pragma: no cover - compiled
    """dst[p, begins[k] : begins[k] + W_k] = srcs[k][p] for each part srcs[k] (P, W_k) (a tuple
    of arrays of one word type) and dst (P, Cw): each output pixel row written once."""
    pixels = dst.shape[0]
    items = (pixels + PIXELS_PER_ITEM - 1) // PIXELS_PER_ITEM
    for item in prange(items):
        for p in range(item * PIXELS_PER_ITEM, min(pixels, item * PIXELS_PER_ITEM + PIXELS_PER_ITEM)):
            d = dst[p]
            for k in range(len(srcs)):
                s = srcs[k][p]
                begin = begins[k]
                for t in range(s.size):
                    d[begin + t] = s[t]


def word_view(widths: tuple[int, ...]) -> np.dtype:
    """The widest unsigned word (8, 4, 2 or 1 bytes) dividing every width: rows of 8-bit values
    of these widths viewed as words of it."""
    for size, dtype in ((8, np.uint64), (4, np.uint32), (2, np.uint16)):
        if all(w % size == 0 for w in widths):
            return np.dtype(dtype)
    return np.dtype(np.uint8)
