"""numba integer kernels of the CPU backend, bit-exact with hetero.ir.ops.qlinear's rules.

Every float step is float32 (multipliers, zero points and bounds are passed as float32
scalars or arrays) and rounding is ``np.rint`` (round half to even). numba's default strict
floating point keeps each product and sum rounded separately (LLVM contracts a*b+c into an
FMA only under fast-math flags, which these kernels never set); where rule 4 (QLinearAdd)
asks for a fused multiply-add, ``fma32`` calls ``llvm.fma.f32``, which rounds once. int32
sums wrap like numpy's: ``np.int32(acc + bias)`` truncates the int64 numba computes in.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from hetero.backends.cpu.kernels import CHUNK, _offsets

BLOCK = 64
"""Output pixels per parallel work item of the transposing requantizer."""

# which QLinearAdd input is constant along the innermost output span (rule 4)
SIDE_NONE, SIDE_A, SIDE_B = 0, 1, 2


@intrinsic
def fma32(typingctx, x, y, z):
    """float32 x * y + z rounded once (llvm.fma.f32)."""
    if not all(t == types.float32 for t in (x, y, z)):
        return None
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True)
def qadd_fixed(ra, za, rb, zb, zy):  # pragma: no cover - compiled
    """Rule 4's constant: float32(zy) - fma(ra, za, float32(rb * zb)), all float32."""
    return zy - fma32(ra, za, rb * zb)


@njit(cache=True, inline="always")
def _requant(acc, mult, zy, lo, hi):  # pragma: no cover - compiled
    """Rules 2-3: round_half_even(float32(acc) * mult) + zy, saturated to [lo, hi] (all float32)."""
    y = np.rint(np.float32(acc) * mult) + zy
    y = lo if y < lo else y  # selects rather than min/max: they vectorise
    return hi if y > hi else y


@njit(parallel=True, cache=True)
def requant_transposed(acc, m0, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """out[m0 + m, p] = requant(acc[p, m] + bias[m0 + m]): a (pixels, channels) GEMM result to CHW.

    Each block of pixels is requantized row by row (vectorised over channels) into a small
    channel-major tile, which is then copied out in contiguous runs.
    """
    pixels, mg = acc.shape
    b, s = bias[m0 : m0 + mg], mult[m0 : m0 + mg]
    for blk in prange((pixels + BLOCK - 1) // BLOCK):
        p0 = blk * BLOCK
        p1 = min(pixels, p0 + BLOCK)
        tile = np.empty((mg, BLOCK), out.dtype)
        for p in range(p0, p1):
            row = acc[p]
            for m in range(mg):
                tile[m, p - p0] = _requant(np.int32(row[m] + b[m]), s[m], zy, lo, hi)
        for m in range(mg):
            out[m0 + m, p0:p1] = tile[m, : p1 - p0]


@njit(parallel=True, cache=True)
def requant_rows(acc, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """out[i, j] = requant(acc[i, j] + bias[j]) with per-column multipliers."""
    rows, cols = acc.shape
    for i in prange(rows):
        for j in range(cols):
            out[i, j] = _requant(np.int32(acc[i, j] + bias[j]), mult[j], zy, lo, hi)


@njit(parallel=True, cache=True)
def depthwise_q(xt, zx, wt, bias, mult, sh, sw, dh, dw, pt, pl, zy, lo, hi, yt):  # pragma: no cover
    """Depthwise QLinearConv of one HWC image: xt (H, W, M) ints, wt (kh, kw, M) int32 with the
    weight zero point removed, yt (Ho, Wo, M); int32 sums over channels innermost, then rules 2-3."""
    h, w, ch = xt.shape
    kh, kw = wt.shape[0], wt.shape[1]
    ho, wo = yt.shape[0], yt.shape[1]
    for oh in prange(ho):
        acc = np.empty(ch, np.int32)
        for ow in range(wo):
            acc[:] = 0
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    if iw < 0 or iw >= w:
                        continue
                    xs, ws = xt[ih, iw], wt[i, j]
                    for c in range(ch):
                        acc[c] += (np.int32(xs[c]) - zx) * ws[c]
            ys = yt[oh, ow]
            for c in range(ch):
                ys[c] = _requant(np.int32(acc[c] + bias[c]), mult[c], zy, lo, hi)


@njit(parallel=True, cache=True)
def qadd(a, b, dims, sa, sb, side, ra, rb, fixed, lo, hi, out):  # pragma: no cover - compiled
    """Rule 4 over a collapsed 4-D broadcast of flat int arrays (see cpu_kernels.broadcast_plan)."""
    n = dims[3]
    rows = dims[0] * dims[1] * dims[2]
    nch = (n + CHUNK - 1) // CHUNK
    s3a, s3b = sa[3], sb[3]
    for t in prange(rows * nch):
        r = t // nch
        start = (t - r * nch) * CHUNK
        stop = min(n, start + CHUNK)
        ao, bo = _offsets(r, dims, sa, sb)
        oo = r * n
        if side == SIDE_A:  # a is constant along the span: its term is folded first
            for i in range(start, stop):
                fa, fb = np.float32(a[ao + i * s3a]), np.float32(b[bo + i * s3b])
                v = fma32(fb, rb, fixed + fa * ra)
                out[oo + i] = min(max(np.rint(v), lo), hi)
        elif side == SIDE_B:
            for i in range(start, stop):
                fa, fb = np.float32(a[ao + i * s3a]), np.float32(b[bo + i * s3b])
                v = fma32(fa, ra, fixed + fb * rb)
                out[oo + i] = min(max(np.rint(v), lo), hi)
        else:
            for i in range(start, stop):
                fa, fb = np.float32(a[ao + i * s3a]), np.float32(b[bo + i * s3b])
                v = fma32(fa, ra, fma32(fb, rb, fixed))
                out[oo + i] = min(max(np.rint(v), lo), hi)


@njit(parallel=True, cache=True)
def qaverage_pool(x, zx, kh, kw, sh, sw, dh, dw, pt, pl, sx, count, sy, zy, lo, hi, out):  # pragma: no cover
    """Rule 5's float path: float32 sums of sx * (x - zx) over real pixels in window order,
    divided by count[oh, ow], then rint(avg / sy + zy)."""
    nb, ch, ho, wo = out.shape
    h, w = x.shape[2], x.shape[3]
    for t in prange(nb * ch):
        n, c = t // ch, t % ch
        for oh in range(ho):
            for ow in range(wo):
                total = np.float32(0.0)
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    if 0 <= ih < h:
                        for j in range(kw):
                            iw = ow * sw - pl + j * dw
                            if 0 <= iw < w:
                                total += sx * np.float32(np.int32(x[n, c, ih, iw]) - zx)
                average = total / count[oh, ow]
                out[n, c, oh, ow] = min(max(np.rint(average / sy + zy), lo), hi)


@njit(parallel=True, cache=True)
def qglobal_pool(x, zx, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    """Rule 5 for whole rows: x (rows, pixels) int, out (rows,)."""
    rows, pixels = x.shape
    for r in prange(rows):
        acc = 0
        for i in range(pixels):
            acc += np.int32(x[r, i]) - zx
        out[r] = _requant(np.int32(acc), mult, zy, lo, hi)


@njit(parallel=True, cache=True)
def quantize(x, scale, zp, lo, hi, out):  # pragma: no cover - compiled
    """QuantizeLinear on (outer, C, inner) float32: saturate(rint(x / scale[c]) + zp[c])."""
    outer, ch, inner = x.shape
    nch = (inner + CHUNK - 1) // CHUNK
    for t in prange(outer * ch * nch):
        r = t // nch
        o, c = r // ch, r % ch
        start = (t - r * nch) * CHUNK
        s, z = scale[c], zp[c]
        for i in range(start, min(inner, start + CHUNK)):
            y = np.rint(x[o, c, i] / s) + z
            out[o, c, i] = min(max(y, lo), hi)


@njit(parallel=True, cache=True)
def dequantize(q, scale, zp, out):  # pragma: no cover - compiled
    """DequantizeLinear on (outer, C, inner) ints: float32(q - zp[c]) * scale[c]."""
    outer, ch, inner = q.shape
    nch = (inner + CHUNK - 1) // CHUNK
    for t in prange(outer * ch * nch):
        r = t // nch
        o, c = r // ch, r % ch
        start = (t - r * nch) * CHUNK
        s, z = scale[c], zp[c]
        for i in range(start, min(inner, start + CHUNK)):
            out[o, c, i] = np.float32(np.int32(q[o, c, i]) - z) * s


@njit(parallel=True, cache=True)
def requant_tensor(src, zi, si, sy, zy, lo, hi, dst):  # pragma: no cover - compiled
    """Rule 6 on 2-D (outer, inner) views: rint(float32(float32(q - zi) * si) / sy) + zy."""
    outer, inner = src.shape
    for o in prange(outer):
        for i in range(inner):
            value = np.float32(np.int32(src[o, i]) - zi) * si
            y = np.rint(value / sy) + zy
            dst[o, i] = min(max(y, lo), hi)
