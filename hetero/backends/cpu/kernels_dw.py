"""numba depthwise QLinearConv kernels on channels-last (NHWC) int8 images, for compiled plans.

The input zero point is folded into the bias (``bias - zx * sum(w)`` per channel, exact in
int32), so each tap is one multiply-add of the raw input. 5x5 kernels (``_dw5_span``) read a
zero-point-padded copy of the image and sum all 25 taps of a channel in registers, int16 weights
against 8-bit inputs (vpmaddwd): at stride 1 over a whole output row (``dw5_rows_part``,
the weights repeated along it), else pixel by pixel (``dw5_px_part``) over the channels rounded up
to 16 (zero weights: no scalar remainder loop; the spare lanes' outputs fall on the next pixel's,
written after them, or in a scratch for a row's last pixel). Other sizes
(``dw_pixels_part``) make no padded copy: a kernel row above or below the image
reads ``zrow``, a row of the zero point (adding ``zx * w``, which the folded bias takes away
again); an output column whose taps leave the image at a side reads the nearest image column
instead, against its own copy of the weights with those taps zeroed and its own folded bias
(``edge_weights``), and each tap row is added into an int32 accumulator pixel by pixel.
Work items are output rows (splitting a row's channels between threads was measured slower:
per-chunk weight views stop LLVM hoisting their loads). Every result equals kernels_int8's:
the same int32 sums, then rules 2-3 in float32. The work loops here are kernels_shared's kind
(``nogil``, items claimed from an atomic counter, run through ``kernels_shared.run_items``); they
inline kernels_int8's ``_requant``: after changing it clear this module's ``*.nbi``/``*.nbc`` too.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hetero.backends.cpu.gemm import _addr, _fetch_add
from hetero.backends.cpu.gemm_fused import _count_done
from hetero.backends.cpu.kernels_int8 import _requant
from hetero.backends.cpu.native import claim

__all__ = ["edge_weights", "LANES", "dw5_rows_part", "dw5_px_part", "dw_pixels_part"]

LANES = 16
"""int32 lanes of a zmm register: 5x5 kernels compute channels in whole multiples of it."""


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
def _finish(acc, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    for t in range(out.size):
        out[t] = _requant(np.int32(acc[t] + bias[t]), mult[t], zy, lo, hi)


@njit(cache=True, inline="always")
def _row5(r, w, k, t):  # pragma: no cover - compiled
    """Channel t of one kernel row: the five taps' inputs ``r`` (a tuple of five runs) times w[k:k+5, t]."""
    return (np.int32(r[0][t]) * np.int32(w[k, t]) + np.int32(r[1][t]) * np.int32(w[k + 1, t])
            + np.int32(r[2][t]) * np.int32(w[k + 2, t]) + np.int32(r[3][t]) * np.int32(w[k + 3, t])
            + np.int32(r[4][t]) * np.int32(w[k + 4, t]))


@njit(cache=True, inline="always")
def _dw5_span(a, b, c, d, e, w, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """One output pixel of a 5x5 depthwise conv: kernel rows a..e (each five runs of the padded
    image, one per tap) times w (25, >= out.size) int16, the 25 products summed in registers,
    then requantized. Raw 8-bit inputs times int16 weights: LLVM multiplies with vpmaddwd."""
    for t in range(out.size):
        acc = _row5(a, w, 0, t) + _row5(b, w, 5, t) + _row5(c, w, 10, t)
        acc += _row5(d, w, 15, t) + _row5(e, w, 20, t)
        out[t] = _requant(np.int32(acc + bias[t]), mult[t], zy, lo, hi)


@njit(cache=True, inline="always")
def _five(x, s, step, n):  # pragma: no cover - compiled
    """The five runs of ``n`` values at s, s + step, ... s + 4*step of the flat array x."""
    return (x[s : s + n], x[s + step : s + step + n], x[s + 2 * step : s + 2 * step + n],
            x[s + 3 * step : s + 3 * step + n], x[s + 4 * step : s + 4 * step + n])


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


# --- work loops (kernels_shared.run_items runs them, shared with helper threads) ---


@njit(nogil=True, cache=True)
def dw5_rows_part(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """5x5 depthwise at stride 1 on a zero-point-padded image (kernels_dw._dw5_span over a whole
    output row: taps (25, Wo*C) int16, bias/mult (Wo*C,), repeated along the row), one row per item."""
    return dw5_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def dw5_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """dw5_rows_part claiming items of job ``tag`` from the counter at ``w0`` (``native.claim``)."""
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
        _dw5_span(_five(xr[oh], 0, d, span), _five(xr[oh + dh], 0, d, span), _five(xr[oh + 2 * dh], 0, d, span),
                  _five(xr[oh + 3 * dh], 0, d, span), _five(xr[oh + 4 * dh], 0, d, span), taps, bias, mult, zy, lo, hi,
                  orr[oh])
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return ran


@njit(nogil=True, cache=True)
def dw5_px_part(xflat, wp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """5x5 depthwise at any stride on a zero-point-padded image (kernels_dw._dw5_span per pixel), one output row per item.

    ``xflat``: the padded (Hp, wp, C) image flat, with at least 16 bytes of slack after it;
    ``taps`` (25, Cp) int16 and ``bias``/``mult`` (Cp,) zero-padded to Cp (C rounded up to 16).
    Each pixel computes Cp channels; the extra ones land on the next pixel's outputs (written
    after them), or, for a row's last pixel, in a scratch copied out."""
    return dw5_px_core(xflat, wp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def dw5_px_core(xflat, wp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """dw5_px_part claiming items of job ``tag`` from the counter at ``w0``."""
    ho, wo, ch = out.shape
    cp = taps.shape[1]
    row = wp * ch
    d = dw * ch
    span = wo * ch
    tmp = np.empty(cp, out.dtype)
    ran = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        ran += 1
        orow = out[oh].reshape(span)
        base = oh * sh * row
        for ow in range(wo):
            s = base + ow * sw * ch
            at = ow * ch
            inside = at + cp <= span
            o = orow[at : at + cp] if inside else tmp
            _dw5_span(_five(xflat, s, d, cp), _five(xflat, s + dh * row, d, cp), _five(xflat, s + 2 * dh * row, d, cp),
                      _five(xflat, s + 3 * dh * row, d, cp), _five(xflat, s + 4 * dh * row, d, cp), taps, bias, mult,
                      zy, lo, hi, o)
            if not inside:
                for t in range(ch):
                    orow[at + t] = tmp[t]
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return ran


@njit(nogil=True, cache=True)
def dw_pixels_part(x, zrow, taps, sh, sw, dh, dw, pt, pl, edge_of, edge_taps, edge_bias, bias, mult, zy, lo, hi, out,
                   counter):  # pragma: no cover - compiled
    """A depthwise kernel of any size read in place (kernels_dw's helpers and edge weights), one output row per item."""
    h, w, ch = x.shape
    ho, wo = out.shape[0], out.shape[1]
    kh, kw = taps.shape[0], taps.shape[1]
    xr = x.reshape(h, w * ch)
    acc = np.empty(ch, np.int32)
    w0 = _addr(counter)
    ran = 0
    oh = _fetch_add(w0, 1)
    while oh < ho:
        ran += 1
        orow = out[oh]
        for ow in range(wo):
            acc[:] = 0
            iw0 = ow * sw - pl
            e = edge_of[ow]
            tp = taps if e < 0 else edge_taps[e]
            bp = bias if e < 0 else edge_bias[e]
            for i in range(kh):
                row = _tap_row(xr, zrow, oh * sh - pt + i * dh, h)
                wi = tp[i]
                for j in range(kw):
                    s0 = _col(iw0 + j * dw, w) * ch
                    _mac(acc, row[s0 : s0 + ch], wi[j])
            _finish(acc, bp, mult, zy, lo, hi, orow[ow])
        _count_done(w0 + 8)
        oh = _fetch_add(w0, 1)
    return ran
