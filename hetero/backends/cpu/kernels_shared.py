"""Work loops for the plan's small NHWC kernels, shared with helper threads instead of OpenMP.

Depthwise convs, QLinearAdd, pools, the input's QuantizeLinear and the output's DequantizeLinear,
concats and channel shuffles ran as numba OpenMP regions: with passive workers on a busy 2-vCPU
machine each region's closing barrier waits for a worker that wakes after the work is done. Here
each kernel is a ``nogil`` loop that claims work items (output rows, flat chunks, pixel blocks)
from an atomic counter and counts finished ones, run through ``helpers.share``: the calling thread
does every item a helper has not claimed and never waits for a helper to wake. The loop bodies
inline the helpers of kernels_nhwc, kernels_pool, kernels_channels and kernels_int8
(the OpenMP kernels' bodies, which these loops replaced), so each item is computed as before, bit
for bit, whichever thread runs it (depthwise loops for kernels other than 3x3 are in kernels_dw).
Measured (2-vCPU Zen 4 VM shared with other work, one process, alternating, against the OpenMP
kernels before they were removed): these kernels' sum over mobilenet_v2-like shapes 1.14x at 2 threads at load 2.2 (0.92x at load 1.1), 0.99-1.00x at 1
thread; whole models 1.04-1.16x on resnet18 and mobilenet_v2, 0.95-1.08x on the others, at load
0.7-1.5. ``kernels_nhwc.depthwise3_nhwc`` stays as the OpenMP reference tests/test_cpu_shared
compares two helper threads against.

numba's cache caveat: these functions inline code from kernels_nhwc, kernels_pool,
kernels_channels and kernels_int8; after changing those clear this module's ``*.nbi``/``*.nbc``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hetero.backends.cpu import helpers, native
from hetero.backends.cpu.gemm import _addr, _fetch_add
from hetero.backends.cpu.gemm_fused import _count_done
from hetero.backends.cpu.kernels_channels import PIXELS_PER_ITEM
from hetero.backends.cpu.kernels_int8 import _requant
from hetero.backends.cpu.kernels_nhwc import (CHUNK, _dequantize_span, _dw3_row, _qadd_span, _quantize_one,
                                               _quantize_span, _scatter)
from hetero.backends.cpu.kernels_pool import _copy, _fill, _vmax, _vmax_at
from hetero.backends.cpu.native import claim

__all__ = ["run_items", "dw3_rows_part", "dw3s2_rows_part", "dw3_px_part", "qadd_part", "max_pool_part",
           "quantize_part", "swap_part", "global_pool_part",
           "average_pool_part", "requant_rows_part", "dequantize_part", "QUANTIZE_BLOCK", "ROWS_PER_ITEM"]

QUANTIZE_BLOCK = 256
"""Pixels per work item of ``quantize_part``."""
ROWS_PER_ITEM = 256
"""Rows (pixels) per work item of ``requant_rows_part``."""


def run_items(part, args: tuple, items: int) -> None:
    """Run the work loop ``part(*args, counter)`` over ``items`` items on numba's current thread
    count: the calling thread and whichever helper threads wake in time (``helpers.share``)."""
    if items <= 0:
        return
    workers = min(helpers.thread_count(), items)
    if workers > 1:
        jobs = native.jobs()
        if jobs is not None and jobs.run_part(part, args, workers):
            return
    counter = np.zeros(2, np.int64)
    helpers.share(part, args + (counter,), workers, items, counter)


@njit(nogil=True, cache=True)
def dw3_rows_part(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """kernels_nhwc.depthwise3_nhwc (3x3, stride 1) one output row per item; returns the items run."""
    return dw3_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def dw3_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """dw3_rows_part claiming items of job ``tag`` from the counter at ``w0`` (``native.claim``)."""
    hp, wp, ch = xp.shape
    ho, wo = out.shape[0], out.shape[1]
    span = wo * ch
    xr = xp.reshape(hp, wp * ch)
    orr = out.reshape(ho, span)
    d = dw * ch
    ran = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        ran += 1
        ra, rb, rc = xr[oh], xr[oh + dh], xr[oh + 2 * dh]
        _dw3_row(ra[:span], ra[d : d + span], ra[2 * d : 2 * d + span], rb[:span], rb[d : d + span], rb[2 * d : 2 * d + span],
                 rc[:span], rc[d : d + span], rc[2 * d : 2 * d + span], taps, bias, mult, zy, lo, hi, orr[oh])
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return ran


@njit(nogil=True, cache=True)
def dw3s2_rows_part(xd, taps, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """3x3 depthwise, stride 2, on deinterleaved rows (``_dw3_row``), one output row per item."""
    return dw3s2_rows_core(xd, taps, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def dw3s2_rows_core(xd, taps, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """dw3s2_rows_part claiming items of job ``tag`` from the counter at ``w0``."""
    ho, wo, ch = out.shape
    span = wo * ch
    rows = xd.reshape(xd.shape[0], 2, xd.shape[2] * ch)
    orr = out.reshape(ho, span)
    ran = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        ran += 1
        ea, oa = rows[2 * oh, 0], rows[2 * oh, 1]
        eb, ob = rows[2 * oh + 1, 0], rows[2 * oh + 1, 1]
        ec, oc = rows[2 * oh + 2, 0], rows[2 * oh + 2, 1]
        _dw3_row(ea[:span], oa[:span], ea[ch : ch + span], eb[:span], ob[:span], eb[ch : ch + span],
                 ec[:span], oc[:span], ec[ch : ch + span], taps, bias, mult, zy, lo, hi, orr[oh])
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return ran


@njit(nogil=True, cache=True)
def dw3_px_part(xp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """3x3 depthwise pixel by pixel (any stride or dilation), one output row per item."""
    return dw3_px_core(xp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def dw3_px_core(xp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """dw3_px_part claiming items of job ``tag`` from the counter at ``w0``."""
    hp, wp, ch = xp.shape
    ho, wo = out.shape[0], out.shape[1]
    xr = xp.reshape(hp, wp * ch)
    d = dw * ch
    ran = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        ran += 1
        ra, rb, rc = xr[oh * sh], xr[oh * sh + dh], xr[oh * sh + 2 * dh]
        orow = out[oh]
        for ow in range(wo):
            s0 = ow * sw * ch
            s1, s2 = s0 + d, s0 + 2 * d
            _dw3_row(ra[s0 : s0 + ch], ra[s1 : s1 + ch], ra[s2 : s2 + ch], rb[s0 : s0 + ch], rb[s1 : s1 + ch],
                     rb[s2 : s2 + ch], rc[s0 : s0 + ch], rc[s1 : s1 + ch], rc[s2 : s2 + ch], taps, bias, mult,
                     zy, lo, hi, orow[ow])
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return ran


@njit(nogil=True, cache=True)
def qadd_part(a, b, ra, rb, fixed, lo, hi, out, counter):  # pragma: no cover - compiled
    """QLinearAdd over flat arrays (``_qadd_span``), one CHUNK per item."""
    return qadd_core(a, b, ra, rb, fixed, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def qadd_core(a, b, ra, rb, fixed, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """qadd_part claiming items of job ``tag`` from the counter at ``w0``."""
    n = out.size
    chunks = (n + CHUNK - 1) // CHUNK
    ran = 0
    t = claim(w0, tag, chunks)
    while t >= 0:
        ran += 1
        lo_i, hi_i = t * CHUNK, min(n, t * CHUNK + CHUNK)
        _qadd_span(a[lo_i:hi_i], b[lo_i:hi_i], ra, rb, fixed, lo, hi, out[lo_i:hi_i])
        _count_done(w0 + 8)
        t = claim(w0, tag, chunks)
    return ran


@njit(nogil=True, cache=True)
def max_pool_part(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out, counter):  # pragma: no cover - compiled
    """MaxPool, rows first (kernels_pool's helpers), one (image, output row) per item."""
    return max_pool_core(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def max_pool_core(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out, w0, tag):  # pragma: no cover - compiled
    """max_pool_part claiming items of job ``tag`` from the counter at ``w0``."""
    nb, ho, wo, ch = out.shape
    h, w = x.shape[1], x.shape[2]
    xr = x.reshape(nb, h, w * ch)
    column = np.empty(w * ch, x.dtype)  # the kernel rows' maximum, per input column
    ran = 0
    t = claim(w0, tag, nb * ho)
    while t >= 0:
        ran += 1
        n, oh = t // ho, t % ho
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
        else:
            oa, ca = _addr(orow), _addr(column)
            for ow in range(wo):
                o = orow[ow]
                _fill(o, low)
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    if 0 <= iw < w:
                        done = _vmax_at(oa + ow * ch, ca + iw * ch, ch, low)
                        if done < ch:
                            _vmax(o[done:], column[iw * ch + done : iw * ch + ch])
        _count_done(w0 + 8)
        t = claim(w0, tag, nb * ho)
    return ran


@njit(cache=True, inline="always")
def _quantize3(a, b, c, scale, zp, lo, hi, out):  # pragma: no cover - compiled
    """_quantize_span of three channels written interleaved (out[3p + k] from channel k's pixel p)."""
    s0, s1, s2, z0, z1, z2 = scale[0], scale[1], scale[2], zp[0], zp[1], zp[2]
    for p in range(a.size):
        out[3 * p] = _quantize_one(a[p], s0, z0, lo, hi)
        out[3 * p + 1] = _quantize_one(b[p], s1, z1, lo, hi)
        out[3 * p + 2] = _quantize_one(c[p], s2, z2, lo, hi)


@njit(nogil=True, cache=True)
def quantize_part(x, scale, zp, lo, hi, out, counter):  # pragma: no cover - compiled
    """QuantizeLinear of an NCHW float image into NHWC, one (image, block of QUANTIZE_BLOCK pixels) per item."""
    return quantize_core(x, scale, zp, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True, error_model="numpy")  # no zero-division check: the division vectorises
def quantize_core(x, scale, zp, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """quantize_part claiming items of job ``tag`` from the counter at ``w0``."""
    nb, ch, pixels = x.shape
    block = QUANTIZE_BLOCK
    nblk = (pixels + block - 1) // block
    tile = np.empty((ch, block), out.dtype)
    ran = 0
    t = claim(w0, tag, nb * nblk)
    while t >= 0:
        ran += 1
        n, b = t // nblk, t % nblk
        p0, p1 = b * block, min(pixels, b * block + block)
        dst = out[n].reshape(pixels * ch)[p0 * ch : p1 * ch]
        if ch == 1:
            _quantize_span(x[n, 0, p0:p1], scale[0], zp[0], lo, hi, dst)
        elif ch == 3:  # an RGB image: one loop storing interleaved pixels (4x the tile and scatter)
            _quantize3(x[n, 0, p0:p1], x[n, 1, p0:p1], x[n, 2, p0:p1], scale, zp, lo, hi, dst)
        else:
            for c in range(ch):
                _quantize_span(x[n, c, p0:p1], scale[c], zp[c], lo, hi, tile[c, : p1 - p0])
            for c in range(ch):
                _scatter(dst[c:], tile[c, : p1 - p0], ch)
        _count_done(w0 + 8)
        t = claim(w0, tag, nb * nblk)
    return ran


@njit(nogil=True, cache=True)
def swap_part(x, out, counter):  # pragma: no cover - compiled
    """A channel shuffle's transpose of the two channel axes, PIXELS_PER_ITEM pixels per item."""
    pixels, a, b = x.shape
    items = (pixels + PIXELS_PER_ITEM - 1) // PIXELS_PER_ITEM
    w0 = _addr(counter)
    ran = 0
    item = _fetch_add(w0, 1)
    while item < items:
        ran += 1
        for p in range(item * PIXELS_PER_ITEM, min(pixels, item * PIXELS_PER_ITEM + PIXELS_PER_ITEM)):
            xp, op = x[p], out[p]
            for i in range(a):
                for j in range(b):
                    op[j, i] = xp[i, j]
        _count_done(w0 + 8)
        item = _fetch_add(w0, 1)
    return ran


@njit(nogil=True, cache=True)
def global_pool_part(x, zx, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """QLinearGlobalAveragePool on NHWC, one image per item."""
    nb, pixels, ch = x.shape
    w0 = _addr(counter)
    ran = 0
    n = _fetch_add(w0, 1)
    while n < nb:
        ran += 1
        acc = np.zeros(ch, np.int64)
        for p in range(pixels):
            xs = x[n, p]
            for c in range(ch):
                acc[c] += np.int32(xs[c]) - zx
        for c in range(ch):
            out[n, c] = _requant(np.int32(acc[c]), mult, zy, lo, hi)
        _count_done(w0 + 8)
        n = _fetch_add(w0, 1)
    return ran


@njit(nogil=True, cache=True)
def average_pool_part(x, zx, kh, kw, sh, sw, dh, dw, pt, pl, sx, count, sy, zy, lo, hi, out,
                      counter):  # pragma: no cover - compiled
    """QLinearAveragePool on NHWC (float sums in window order), one (image, output row) per item."""
    nb, ho, wo, ch = out.shape
    h, w = x.shape[1], x.shape[2]
    total = np.empty(ch, np.float32)
    w0 = _addr(counter)
    ran = 0
    t = _fetch_add(w0, 1)
    while t < nb * ho:
        ran += 1
        n, oh = t // ho, t % ho
        for ow in range(wo):
            total[:] = 0.0
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if 0 <= ih < h:
                    for j in range(kw):
                        iw = ow * sw - pl + j * dw
                        if 0 <= iw < w:
                            xs = x[n, ih, iw]
                            for c in range(ch):
                                total[c] += sx * np.float32(np.int32(xs[c]) - zx)
            o = out[n, oh, ow]
            for c in range(ch):
                average = total[c] / count[oh, ow]
                o[c] = min(max(np.rint(average / sy + zy), lo), hi)
        _count_done(w0 + 8)
        t = _fetch_add(w0, 1)
    return ran


@njit(nogil=True, cache=True)
def requant_rows_part(src, zi, si, sy, zy, lo, hi, dst, counter):  # pragma: no cover - compiled
    """kernels_int8.requant_tensor (a concat part with its own scale), ROWS_PER_ITEM rows per item."""
    outer, inner = src.shape
    items = (outer + ROWS_PER_ITEM - 1) // ROWS_PER_ITEM
    w0 = _addr(counter)
    ran = 0
    item = _fetch_add(w0, 1)
    while item < items:
        ran += 1
        for o in range(item * ROWS_PER_ITEM, min(outer, item * ROWS_PER_ITEM + ROWS_PER_ITEM)):
            for i in range(inner):
                value = np.float32(np.int32(src[o, i]) - zi) * si
                y = np.rint(value / sy) + zy
                dst[o, i] = min(max(y, lo), hi)
        _count_done(w0 + 8)
        item = _fetch_add(w0, 1)
    return ran


@njit(nogil=True, cache=True)
def dequantize_part(q, zp, scale, out, counter):  # pragma: no cover - compiled
    """DequantizeLinear over a flat array (``_dequantize_span``), one CHUNK per item."""
    n = out.size
    chunks = (n + CHUNK - 1) // CHUNK
    w0 = _addr(counter)
    ran = 0
    t = _fetch_add(w0, 1)
    while t < chunks:
        ran += 1
        lo_i, hi_i = t * CHUNK, min(n, t * CHUNK + CHUNK)
        _dequantize_span(q[lo_i:hi_i], zp, scale, out[lo_i:hi_i])
        _count_done(w0 + 8)
        t = _fetch_add(w0, 1)
    return ran
