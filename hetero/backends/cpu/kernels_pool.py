"""numba max pooling on channels-last (NHWC) int8 images, for the cpu device's compiled plans.

A window's maximum is taken in two passes per output row: down the kernel rows over whole
image rows (W*C contiguous values: long vector loops), then across the kernel columns of that
one row, pixel by pixel. The per-pixel pass is where the time goes when C is small (a C-run
shorter than a vector register runs scalar), so it is done once per output row instead of
once per kernel row. Padding never wins.
"""

from __future__ import annotations

from numba import njit

__all__: list[str] = []  # the inlined helpers of kernels_shared.max_pool_part


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
