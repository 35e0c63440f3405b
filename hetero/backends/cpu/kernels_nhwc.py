"""numba kernels on channels-last (NHWC) int8 activations, for the cpu device's compiled plans.

Inside a plan every 4-D integer activation is (N, H, W, C), so a convolution's GEMM reads its
input rows in place (1x1) or from one im2row pass, and writes its output rows in place: the
GEMM's epilogue (``gemm_requant``) requantizes each int32 micro-kernel tile while it is in L1
and stores uint8/int8 straight into the NHWC output (bias, multiplier, zero point, clamp; a
fused ReLU/Clip is the clamp the lowering already folded into the output range). Pools and
conversions vectorise over channels (max pooling: kernels_pool). Every float step is float32
and follows hetero.ir.ops.qlinear's rules exactly as the NCHW kernels in kernels_int8 do.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hetero.backends.cpu.kernels_int8 import _requant, fma32

CHUNK = 16384
"""Elements per parallel work item of the flat kernels."""
# SERIAL_COPIES: im2row, padding, unfolding and deinterleaving run on the calling thread. With
# OpenMP's workers sleeping between kernels (passive), waking one costs ~50-100 us on a 2-vCPU VM,
# more than these copies (at most a few hundred KB where they are used) take; each convolution
# thus has one parallel region, its GEMM or depthwise kernel.


# numba cannot prove that an index counted from a computed start is non-negative, so a loop
# over range(lo, hi) inside prange keeps negative-index wraparound and does not vectorise
# (~15x slower). Each flat kernel therefore hands its chunk to a helper as 1-D slices that
# the helper walks from 0.


@njit(cache=True, inline="always")
def _qadd_span(a, b, ra, rb, fixed, lo, hi, out):  # pragma: no cover - compiled
    for i in range(out.size):
        v = fma32(np.float32(a[i]), ra, fma32(np.float32(b[i]), rb, fixed))
        y = np.rint(v)
        y = lo if y < lo else y
        out[i] = hi if y > hi else y

__all__ = ["im2row_padded", "row_sums", "nchw_to_nhwc", "nhwc_to_nchw"]


@njit(cache=True, inline="always")
def _copy(dst, src):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def _fill(dst, value):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = value


@njit(cache=True)  # serial (SERIAL_COPIES)
def im2row_padded(x, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, pad, rows):  # pragma: no cover - compiled
    """rows[oh * wo + ow, (i, j, c)] = x[ih, iw, c0 + c] of one HWC image, ``pad`` outside it;
    columns past kh*kw*cg (K rounded up to 4) are zero. A window row is one copy when its
    kw taps are contiguous (dw == 1 and every channel taken)."""
    h, w, ch = x.shape
    k = kh * kw * cg
    kp = rows.shape[1]
    runs = dw == 1 and cg == ch
    span = kw * cg
    xr = x.reshape(h, w * ch)
    for oh in prange(ho):
        for ow in range(wo):
            row = rows[oh * wo + ow]
            _fill(row[k:kp], 0)
            iw0 = ow * sw - pl
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                base = i * span
                if ih < 0 or ih >= h:
                    _fill(row[base : base + span], pad)
                elif runs and iw0 >= 0 and iw0 + kw <= w:
                    _copy(row[base : base + span], xr[ih, iw0 * cg : iw0 * cg + span])
                else:
                    for j in range(kw):
                        iw = iw0 + j * dw
                        at = base + j * cg
                        if 0 <= iw < w:
                            _copy(row[at : at + cg], xr[ih, iw * ch + c0 : iw * ch + c0 + cg])
                        else:
                            _fill(row[at : at + cg], pad)


@njit(cache=True)  # serial (SERIAL_COPIES)
def pad_image(x, pt, pl, pad, xp):  # pragma: no cover - compiled
    """xp (Hp, Wp, C) = the HWC image x placed at (pt, pl), ``pad`` around it."""
    h, w, ch = x.shape
    hp, wp = xp.shape[0], xp.shape[1]
    xr = x.reshape(h, w * ch)
    xpr = xp.reshape(hp, wp * ch)
    for r in prange(hp):
        row = xpr[r]
        ih = r - pt
        if ih < 0 or ih >= h:
            _fill(row, pad)
        else:
            _fill(row[: pl * ch], pad)
            _copy(row[pl * ch : (pl + w) * ch], xr[ih])
            _fill(row[(pl + w) * ch :], pad)


@njit(cache=True)  # serial (SERIAL_COPIES)
def unfold_rows(xp, kw, sw, span, xw):  # pragma: no cover - compiled
    """xw[r, ow, :span] = the kw taps of output column ow in row r of the padded HWC image xp
    (kw * C contiguous bytes), zero past ``span`` (K rounded up to 4)."""
    hp, wp, ch = xp.shape
    wo, kseg = xw.shape[1], xw.shape[2]
    xpr = xp.reshape(hp, wp * ch)
    for r in prange(hp):
        src = xpr[r]
        for ow in range(wo):
            dst = xw[r, ow]
            _copy(dst[:span], src[ow * sw * ch : ow * sw * ch + span])
            _fill(dst[span:kseg], 0)


@njit(parallel=True, cache=True)
def row_sums(a, m, k, shift, out):  # pragma: no cover - compiled
    """out[i] = sum(a[i, :k]) + shift * k (int32), for the rows i < m of the GEMM's A."""
    for i in prange(m):
        s = 0
        for t in range(k):
            s += a[i, t]
        out[i] = s + shift * k


@njit(cache=True, inline="always")
def _quantize_one(x, s, z, lo, hi):  # pragma: no cover - compiled
    """QuantizeLinear of one float32: round_half_even(x / s) + z, saturated to [lo, hi]."""
    y = np.rint(x / s) + z
    y = lo if y < lo else y
    return hi if y > hi else y


@njit(cache=True, inline="always")
def _quantize_span(x, s, z, lo, hi, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = _quantize_one(x[i], s, z, lo, hi)


@njit(cache=True, inline="always")
def _scatter(dst, src, step):  # pragma: no cover - compiled
    for i in range(src.size):
        dst[i * step] = src[i]


@njit(cache=True, inline="always")
def _gather(dst, src, step):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = src[i * step]


@njit(cache=True, inline="always")
def _dequantize_span(q, z, s, out):  # pragma: no cover - compiled
    for i in range(out.size):
        out[i] = np.float32(np.int32(q[i]) - z) * s


@njit(parallel=True, cache=True)
def nchw_to_nhwc(x, out):  # pragma: no cover - compiled
    """out (N, H*W, C) = x (N, C, H*W) transposed per image."""
    nb, ch, pixels = x.shape
    block = 64
    nblk = (pixels + block - 1) // block
    for t in prange(nb * nblk):
        n, b = t // nblk, t % nblk
        p0, p1 = b * block, min(pixels, b * block + block)
        dst = out[n].reshape(pixels * ch)[p0 * ch : p1 * ch]
        for c in range(ch):
            _scatter(dst[c:], x[n, c, p0:p1], ch)


@njit(parallel=True, cache=True)
def nhwc_to_nchw(x, out):  # pragma: no cover - compiled
    """out (N, C, H*W) = x (N, H*W, C) transposed per image."""
    nb, pixels, ch = x.shape
    block = 64
    nblk = (pixels + block - 1) // block
    for t in prange(nb * nblk):
        n, b = t // nblk, t % nblk
        p0, p1 = b * block, min(pixels, b * block + block)
        src = x[n].reshape(pixels * ch)[p0 * ch : p1 * ch]
        for c in range(ch):
            _gather(out[n, c, p0:p1], src[c:], ch)


@njit(cache=True, inline="always")
def _mac_span(acc, x, zx, w):  # pragma: no cover - compiled
    for t in range(acc.size):
        acc[t] += (np.int32(x[t]) - zx) * w[t]


@njit(cache=True, inline="always")
def _requant_span(acc, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    for t in range(out.size):
        out[t] = _requant(np.int32(acc[t] + bias[t]), mult[t], zy, lo, hi)


@njit(cache=True, inline="always")
def _dw3_row(a0, a1, a2, b0, b1, b2, c0, c1, c2, w, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """One output row of a 3x3 depthwise conv: the nine taps' input rows (a: kernel row 0, b: 1,
    c: 2; each shifted to its tap) times w (9, span) int16, summed in registers, then requantized.

    The input zero point is not subtracted here: the caller folds -zx * sum(taps) into ``bias``
    (exact: the padded copy's border is zx, so every tap reads zx or a pixel, and int32 sums wrap
    alike). Raw 8-bit inputs times int16 weights let LLVM multiply-add pairs (vpmaddwd) instead
    of widening both to int32 (vpmulld); measured 1.0-1.25x at 1 thread on mobilenet_v2's shapes."""
    for t in range(out.size):
        acc = np.int32(a0[t]) * np.int32(w[0, t]) + np.int32(a1[t]) * np.int32(w[1, t]) + np.int32(a2[t]) * np.int32(w[2, t])
        acc += np.int32(b0[t]) * np.int32(w[3, t]) + np.int32(b1[t]) * np.int32(w[4, t]) + np.int32(b2[t]) * np.int32(w[5, t])
        acc += np.int32(c0[t]) * np.int32(w[6, t]) + np.int32(c1[t]) * np.int32(w[7, t]) + np.int32(c2[t]) * np.int32(w[8, t])
        out[t] = _requant(np.int32(acc + bias[t]), mult[t], zy, lo, hi)


@njit(parallel=True, cache=True)
def depthwise3_nhwc(xp, taps, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """depthwise_nhwc for a 3x3 kernel at stride 1, taps (9, Wo*C) int16 and the zero point in
    ``bias`` (_dw3_row): one pass per output row."""
    hp, wp, ch = xp.shape
    ho, wo = out.shape[0], out.shape[1]
    span = wo * ch
    xr = xp.reshape(hp, wp * ch)
    orr = out.reshape(ho, span)
    d = dw * ch
    for oh in prange(ho):
        ra, rb, rc = xr[oh], xr[oh + dh], xr[oh + 2 * dh]
        _dw3_row(ra[:span], ra[d : d + span], ra[2 * d : 2 * d + span], rb[:span], rb[d : d + span], rb[2 * d : 2 * d + span],
                 rc[:span], rc[d : d + span], rc[2 * d : 2 * d + span], taps, bias, mult, zy, lo, hi, orr[oh])


@njit(parallel=True, cache=True)
def depthwise_nhwc(xp, zx, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """Depthwise QLinearConv of one zero-point-padded HWC image xp (Hp, Wp, C) into out (Ho, Wo, C).

    ``taps`` (kh, kw, Wo*C) int32 holds each tap's weights minus their zero point repeated along
    an output row, ``bias``/``mult`` (Wo*C,) likewise, so that with stride 1 every tap is one
    vectorised multiply-add over a whole output row; other strides go pixel by pixel over C."""
    hp, wp, ch = xp.shape
    ho, wo = out.shape[0], out.shape[1]
    kh, kw = taps.shape[0], taps.shape[1]
    span = wo * ch
    xr = xp.reshape(hp, wp * ch)
    orr = out.reshape(ho, span)
    for oh in prange(ho):
        acc = np.zeros(span, np.int32)
        for i in range(kh):
            xrow = xr[oh * sh + i * dh]
            for j in range(kw):
                tap = taps[i, j]
                if sw == 1:
                    s0 = j * dw * ch
                    _mac_span(acc, xrow[s0 : s0 + span], zx, tap)
                else:
                    for ow in range(wo):
                        s0 = (ow * sw + j * dw) * ch
                        _mac_span(acc[ow * ch : ow * ch + ch], xrow[s0 : s0 + ch], zx, tap[:ch])
        _requant_span(acc, bias, mult, zy, lo, hi, orr[oh])


@njit(cache=True)  # serial (SERIAL_COPIES)
def pad_deinterleave(x, pt, pl, pad, out):  # pragma: no cover - compiled
    """The HWC image x placed at (pt, pl) in a ``pad``-filled image, its even and odd columns
    apart: out[r, 0, p] = padded[r, 2p], out[r, 1, p] = padded[r, 2p + 1] (columns past the
    padded width are ``pad`` too), in one pass, so a stride-2 tap reads one contiguous run.
    Pixels are moved as words (x, out and pad viewed as the widest word dividing C)."""
    h, w, cw = x.shape
    hp, half = out.shape[0], out.shape[2]
    xr = x.reshape(h, w * cw)
    rows = out.reshape(hp, 2, half * cw)
    for r in range(hp):
        ih = r - pt
        if ih < 0 or ih >= h:
            _fill(rows[r].reshape(2 * half * cw), pad)
            continue
        src = xr[ih]
        for side in range(2):
            dst = rows[r, side]
            for q in range(half):
                iw = 2 * q + side - pl
                at = q * cw
                if 0 <= iw < w:
                    at_src = iw * cw
                    for k in range(cw):
                        dst[at + k] = src[at_src + k]
                else:
                    for k in range(cw):
                        dst[at + k] = pad


@njit(parallel=True, cache=True)
def mul_rows(a, b, b_rows, out):  # pragma: no cover - compiled
    """out[n, p, :] = a[n, p, :] * b[n, p if b_rows else 0, :] over (N, P, C) float32: a tensor by
    one of its shape, or by an (N, 1, C) gate broadcast over the pixels; the float32 products
    numpy's broadcasting multiply forms (either operand order: IEEE multiplication commutes)."""
    nb, pixels, c = out.shape
    for t in prange(nb * pixels):
        n, p = t // pixels, t % pixels
        row = p if b_rows else 0
        for i in range(c):
            out[n, p, i] = a[n, p, i] * b[n, row, i]


@njit(cache=True)  # serial (SERIAL_COPIES)
def pad_groups(x, pt, pl, pad, hp, wp, out):  # pragma: no cover - compiled
    """Row g of the byte array ``out`` (G, >= hp*wp*cg) = channel group g of the HWC image x
    (C = G * cg) as its own (hp, wp, cg) image, x placed at (pt, pl) with ``pad`` around it (bytes
    after it left as they are): a grouped conv's groups read in place as dense ones."""
    h, w, ch = x.shape
    groups = out.shape[0]
    cg = ch // groups
    span = wp * cg
    for g in range(groups):
        og = out[g]
        for r in range(hp):
            row = og[r * span : (r + 1) * span]
            ih = r - pt
            if ih < 0 or ih >= h:
                _fill(row, pad)
                continue
            _fill(row[: pl * cg], pad)
            _fill(row[(pl + w) * cg :], pad)
            xr = x[ih]
            for iw in range(w):
                _copy(row[(pl + iw) * cg : (pl + iw + 1) * cg], xr[iw, g * cg : (g + 1) * cg])
