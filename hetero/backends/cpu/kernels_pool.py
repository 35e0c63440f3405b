"""numba max pooling on channels-last (NHWC) int8 images, for the cpu device's compiled plans.

A window's maximum is taken in two passes per output row: down the kernel rows over whole
image rows (W*C contiguous values: long vector loops), then across the kernel columns of that
one row, pixel by pixel. The per-pixel pass is where the time goes when C is small (a C-run
shorter than a vector register runs scalar), so it is done once per output row instead of
once per kernel row. Padding never wins.
"""

from __future__ import annotations

from numba import njit, prange

__all__ = ["max_pool_nhwc"]


@njit(cache=True, inline="always")
def _vmax(dst, src):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = max(dst[i], src[i])


@njit(cache=True, inline="always")
def _copy(dst, src):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def _fill(dst, value):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = value


@njit(parallel=True, cache=True)
def max_pool_nhwc(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out):  # pragma: no cover - compiled
    """MaxPool of x (N, H, W, C) into out (N, Ho, Wo, C)."""
    nb, ho, wo, ch = out.shape
    h, w = x.shape[1], x.shape[2]
    xr = x.reshape(nb, h, w * ch)
    for t in prange(nb * ho):
        n, oh = t // ho, t % ho
        column = xr[n, 0].copy()  # the kernel rows' maximum, per input column
        first = True
        for i in range(kh):
            ih = oh * sh - pt + i * dh
            if 0 <= ih < h:
                if first:
                    _copy(column, xr[n, ih])
                    first = False
                else:
                    _vmax(column, xr[n, ih])
        orow = out[n, oh]
        if first:  # every kernel row in the padding (ceil mode)
            _fill(orow.reshape(wo * ch), low)
            continue
        for ow in range(wo):
            o = orow[ow]
            _fill(o, low)
            for j in range(kw):
                iw = ow * sw - pl + j * dw
                if 0 <= iw < w:
                    _vmax(o, column[iw * ch : iw * ch + ch])
