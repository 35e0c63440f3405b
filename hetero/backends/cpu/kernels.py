"""numba kernels of the CPU backend shared by the float and integer paths.

Window kernels take NCHW arrays (pools), one CHW image (im2col) or one channels-last HWC
image (im2row for the int8 GEMM, depthwise convolution) with the resolved geometry as plain
ints; elementwise kernels work on flat arrays in chunks of ``CHUNK`` elements so that every
size parallelises. Every kernel is ``cache=True`` and typed on first use, so int8 and uint8
variants compile only when a model needs them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hetero.backends.cpu.kernels_mlas_nb import fma32
from hetero.ir.ops import mlas

LOGISTIC_BOUND = mlas.LOGISTIC_BOUND
LA0, LA1, LA2, LA3, LA4 = mlas.LOGISTIC_ALPHA
LB0, LB1, LB2, LB3, LB4, LB5 = mlas.LOGISTIC_BETA

CHUNK = 16384
"""Elements per parallel work item of the flat kernels."""
SERIAL_MAX = 32768
"""binary_f32, unary_f32 and softmax_rows run on the calling thread up to this many elements:
starting numba's parallel region costs more than the work there (~12 us on a 2-core VM)."""

# binary op codes
ADD, SUB, MUL, DIV = 0, 1, 2, 3
# unary op codes
RELU, CLIP, SIGMOID, HARD_SIGMOID, HARD_SWISH, TANH = 0, 1, 2, 3, 4, 5


def broadcast_plan(a_shape: tuple[int, ...], b_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """Collapse a numpy broadcast of two C-contiguous operands to at most 4 dims.

    Returns (dims, a_strides, b_strides) as int64 arrays of 4 element strides (0 where an
    operand is broadcast), or None when the broadcast needs more than 4 dims.
    """
    rank = len(out_shape)

    def strides(shape: tuple[int, ...]) -> list[int]:
        full = (1,) * (rank - len(shape)) + tuple(shape)
        out, step = [0] * rank, 1
        for i in range(rank - 1, -1, -1):
            out[i] = step if full[i] != 1 else 0
            step *= full[i]
        return out

    dims: list[int] = []
    sa: list[int] = []
    sb: list[int] = []
    for d, x, y in zip(out_shape, strides(a_shape), strides(b_shape)):
        if d == 1:
            continue
        if dims and sa[-1] == x * d and sb[-1] == y * d:
            dims[-1] *= d
            sa[-1], sb[-1] = x, y
        else:
            dims.append(d)
            sa.append(x)
            sb.append(y)
    if len(dims) > 4:
        return None
    pad = 4 - len(dims)
    as_array = lambda v, fill: np.array([fill] * pad + v, np.int64)  # noqa: E731
    return as_array(dims, 1), as_array(sa, 0), as_array(sb, 0)


@njit(cache=True, inline="always")
def _offsets(r, dims, sa, sb):  # pragma: no cover - compiled
    """Element offsets in a and b of row r of the collapsed 4-D broadcast."""
    i2 = r % dims[2]
    q = r // dims[2]
    i1 = q % dims[1]
    i0 = q // dims[1]
    return i0 * sa[0] + i1 * sa[1] + i2 * sa[2], i0 * sb[0] + i1 * sb[1] + i2 * sb[2]


@njit(cache=True)
def _binary_f32_task(t, code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    n = dims[3]
    nch = (n + CHUNK - 1) // CHUNK
    r = t // nch
    lo = (t - r * nch) * CHUNK
    hi = min(n, lo + CHUNK)
    s3a, s3b = sa[3], sb[3]
    ao, bo = _offsets(r, dims, sa, sb)
    oo = r * n
    if code == ADD:
        for i in range(lo, hi):
            out[oo + i] = a[ao + i * s3a] + b[bo + i * s3b]
    elif code == SUB:
        for i in range(lo, hi):
            out[oo + i] = a[ao + i * s3a] - b[bo + i * s3b]
    elif code == MUL:
        for i in range(lo, hi):
            out[oo + i] = a[ao + i * s3a] * b[bo + i * s3b]
    else:
        for i in range(lo, hi):
            out[oo + i] = a[ao + i * s3a] / b[bo + i * s3b]


@njit(parallel=True, cache=True)
def binary_f32_parallel(code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """out = a (op) b over a collapsed 4-D broadcast of flat float32 arrays."""
    for t in prange(dims[0] * dims[1] * dims[2] * ((dims[3] + CHUNK - 1) // CHUNK)):
        _binary_f32_task(t, code, a, b, dims, sa, sb, out)


@njit(cache=True)
def binary_f32_serial(code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    for t in range(dims[0] * dims[1] * dims[2] * ((dims[3] + CHUNK - 1) // CHUNK)):
        _binary_f32_task(t, code, a, b, dims, sa, sb, out)


def binary_f32(code, a, b, dims, sa, sb, out) -> None:
    """out = a (op) b over a collapsed 4-D broadcast of flat float32 arrays (serial when small)."""
    (binary_f32_serial if out.size <= SERIAL_MAX else binary_f32_parallel)(code, a, b, dims, sa, sb, out)


@njit(cache=True, inline="always", error_model="numpy")  # numpy's: no zero-division check, so p / q vectorises
def _logistic_one(v):  # pragma: no cover - compiled
    """Sigmoid of one float32 as MLAS's logistic (hetero.ir.ops.mlas.logistic, the reference's
    Sigmoid: onnxruntime's bits): v clamped to +-18 by selects (NaN passes), odd/even polynomials
    in v * v by fused multiply-adds, p / q + 0.5."""
    v = LOGISTIC_BOUND if v > LOGISTIC_BOUND else v
    v = -LOGISTIC_BOUND if v < -LOGISTIC_BOUND else v
    s = v * v
    p = fma32(fma32(fma32(fma32(s, LA0, LA1), s, LA2), s, LA3), s, LA4) * v
    q = fma32(fma32(fma32(fma32(fma32(s, LB0, LB1), s, LB2), s, LB3), s, LB4), s, LB5)
    return p / q + np.float32(0.5)


@njit(cache=True, error_model="numpy")
def _logistic(x, out):  # pragma: no cover - compiled
    """Sigmoid over flat float32 arrays, one thread."""
    for i in range(x.size):
        out[i] = _logistic_one(x[i])


@njit(cache=True, error_model="numpy")
def _unary_f32_task(c, code, x, out, p0, p1):  # pragma: no cover - compiled
    """Chunk c of an activation. The loops run over slices from 0 (an index from a variable start
    may be negative to numba, whose wraparound check kept these loops from vectorising: 5-14x)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    lo = c * CHUNK
    hi = min(x.size, lo + CHUNK)
    xs, os = x[lo:hi], out[lo:hi]
    n = xs.size
    if code == RELU:
        for i in range(n):
            os[i] = zero if xs[i] < zero else xs[i]
    elif code == CLIP:  # selects, not min/max, so that the loop vectorises
        for i in range(n):
            v = xs[i]
            v = p0 if v < p0 else v
            os[i] = p1 if v > p1 else v
    elif code == SIGMOID:  # (unary_f32 runs Sigmoid through _logistic / logistic_parallel instead)
        for i in range(n):
            os[i] = _logistic_one(xs[i])
    elif code == HARD_SIGMOID:
        for i in range(n):
            os[i] = min(max(p0 * xs[i] + p1, zero), one)
    elif code == HARD_SWISH:
        sixth, half = np.float32(1.0 / 6.0), np.float32(0.5)
        for i in range(n):
            os[i] = xs[i] * min(max(xs[i] * sixth + half, zero), one)
    else:
        for i in range(n):
            os[i] = np.tanh(xs[i])


@njit(parallel=True, cache=True, error_model="numpy")
def unary_f32_parallel(code, x, out, p0, p1):  # pragma: no cover - compiled
    """Activations on flat float32 arrays; p0/p1 are Clip's bounds or HardSigmoid's alpha/beta."""
    for c in prange((x.size + CHUNK - 1) // CHUNK):
        _unary_f32_task(c, code, x, out, p0, p1)


@njit(cache=True, error_model="numpy")
def unary_f32_serial(code, x, out, p0, p1):  # pragma: no cover - compiled
    for c in range((x.size + CHUNK - 1) // CHUNK):
        _unary_f32_task(c, code, x, out, p0, p1)


@njit(parallel=True, cache=True, error_model="numpy")
def logistic_parallel(x, out):  # pragma: no cover - compiled
    """_logistic with the element loop as the prange (vectorised per thread; through the chunked
    activation loop, whose slices numba types as strided, it was not)."""
    for i in prange(x.size):
        out[i] = _logistic_one(x[i])


def unary_f32(code, x, out, p0, p1) -> None:
    """Activations on flat float32 arrays (serial when small)."""
    if code == SIGMOID:
        (_logistic if x.size <= SERIAL_MAX else logistic_parallel)(x, out)
        return
    (unary_f32_serial if x.size <= SERIAL_MAX else unary_f32_parallel)(code, x, out, p0, p1)


@njit(parallel=True, cache=True)
def channel_affine(x, scale, shift, out):  # pragma: no cover - compiled
    """out[n, c, :] = x[n, c, :] * scale[c] + shift[c] on (N, C, inner) float32 arrays."""
    nb, ch, inner = x.shape
    for t in prange(nb * ch):
        n, c = t // ch, t % ch
        s, b = scale[c], shift[c]
        for i in range(inner):
            out[n, c, i] = x[n, c, i] * s + b


@njit(parallel=True, cache=True)
def row_mean(x, out):  # pragma: no cover - compiled
    """Mean of each row of a 2-D float32 array, accumulated in float64."""
    rows, n = x.shape
    for r in prange(rows):
        acc = 0.0
        for i in range(n):
            acc += x[r, i]
        out[r] = acc / n


@njit(cache=True)
def _softmax_row(r, x, out):  # pragma: no cover - compiled
    n = x.shape[1]
    top = x[r, 0]
    for i in range(1, n):
        top = max(top, x[r, i])
    total = np.float32(0.0)
    for i in range(n):
        e = np.exp(x[r, i] - top)
        out[r, i] = e
        total += e
    for i in range(n):
        out[r, i] = out[r, i] / total


@njit(parallel=True, cache=True)
def softmax_rows_parallel(x, out):  # pragma: no cover - compiled
    """Softmax of each row of a 2-D float32 array."""
    for r in prange(x.shape[0]):
        _softmax_row(r, x, out)


@njit(cache=True)
def softmax_rows_serial(x, out):  # pragma: no cover - compiled
    for r in range(x.shape[0]):
        _softmax_row(r, x, out)


def softmax_rows(x, out) -> None:
    """Softmax of each row of a 2-D float32 array (serial when small)."""
    (softmax_rows_serial if x.size <= SERIAL_MAX else softmax_rows_parallel)(x, out)


@njit(parallel=True, cache=True)
def im2col(x, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, pad, cols):  # pragma: no cover - compiled
    """cols[(c, i, j), oh * wo + ow] = the input element under tap (i, j) of channel c0 + c of x (C, H, W)."""
    h, w = x.shape[1], x.shape[2]
    for r in prange(cg * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for oh in range(ho):
            ih = oh * sh - pt + i * dh
            base = oh * wo
            if ih < 0 or ih >= h:
                for ow in range(wo):
                    cols[r, base + ow] = pad
                continue
            for ow in range(wo):
                iw = ow * sw - pl + j * dw
                cols[r, base + ow] = x[c0 + c, ih, iw] if 0 <= iw < w else pad


@njit(parallel=True, cache=True)
def to_hwc(x, mult, out):  # pragma: no cover - compiled
    """out[h, w, m] = x[m // mult, h, w]: one CHW image to HWC, each channel repeated mult times."""
    h, w, ch = out.shape
    for i in prange(h):
        for m in range(ch):
            c = m // mult
            for j in range(w):
                out[i, j, m] = x[c, i, j]


@njit(parallel=True, cache=True)
def to_chw(y, out):  # pragma: no cover - compiled
    """out[c, h, w] = y[h, w, c]: one HWC image back to CHW."""
    h, w, ch = y.shape
    for i in prange(h):  # row by row: one HWC row stays in L1 while its channels are written out
        for c in range(ch):
            for j in range(w):
                out[c, i, j] = y[i, j, c]


@njit(parallel=True, cache=True)
def gemm_rows(a, b, out, parts):  # pragma: no cover - compiled
    """out = a @ b (float32) as ``parts`` single-threaded BLAS calls on row blocks of a, in parallel."""
    m = a.shape[0]
    for p in prange(parts):
        r0, r1 = p * m // parts, (p + 1) * m // parts
        if r1 > r0:
            np.dot(a[r0:r1], b, out[r0:r1])


@njit(parallel=True, cache=True)
def im2row_runs(xrow, cg, kh, kw, sh, sw, dh, pt, pl, ho, wo, pad, rows):  # pragma: no cover - compiled
    """im2row when a window row (kw taps x cg channels) is contiguous in the HWC image rows ``xrow``
    (H, W*C): one copy per window row instead of one per tap."""
    h, w = xrow.shape[0], xrow.shape[1] // cg
    span = kw * cg
    for oh in prange(ho):
        for ow in range(wo):
            p = oh * wo + ow
            iw0 = ow * sw - pl
            k = 0
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h:
                    rows[p, k : k + span] = pad
                elif iw0 >= 0 and iw0 + kw <= w:
                    rows[p, k : k + span] = xrow[ih, iw0 * cg : iw0 * cg + span]
                else:
                    for j in range(kw):
                        iw = iw0 + j
                        for c in range(cg):
                            rows[p, k + j * cg + c] = xrow[ih, iw * cg + c] if 0 <= iw < w else pad
                k += span


@njit(parallel=True, cache=True)
def im2row(xt, c0, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, pad, rows):  # pragma: no cover - compiled
    """rows[oh * wo + ow, (i, j, c)] = xt[ih, iw, c0 + c] (an HWC image), ``pad`` outside it.

    The A operand of an int8 GEMM whose weights are ordered (i, j, c) along K.
    """
    h, w = xt.shape[0], xt.shape[1]
    if dw == 1 and c0 == 0 and cg == xt.shape[2]:  # a window row is one contiguous run of the image row
        im2row_runs(xt.reshape(h, w * cg), cg, kh, kw, sh, sw, dh, pt, pl, ho, wo, pad, rows)
        return
    for oh in prange(ho):
        for ow in range(wo):
            p = oh * wo + ow
            k = 0
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                for j in range(kw):
                    iw = ow * sw - pl + j * dw
                    inside = 0 <= ih < h and 0 <= iw < w
                    if cg < 16:  # a few channels (an RGB stem): element copies beat slice set-up
                        for c in range(cg):
                            rows[p, k + c] = xt[ih, iw, c0 + c] if inside else pad
                    elif inside:  # slices copy as memcpy; an index loop does not vectorise
                        rows[p, k : k + cg] = xt[ih, iw, c0 : c0 + cg]
                    else:
                        rows[p, k : k + cg] = pad
                    k += cg


@njit(parallel=True, cache=True)
def depthwise_f32(xt, wt, bias, sh, sw, dh, dw, pt, pl, yt):  # pragma: no cover - compiled
    """Depthwise float32 convolution of one HWC image: xt (H, W, M), wt (kh, kw, M), yt (Ho, Wo, M).

    Channels are innermost, so every tap is one vectorised multiply-add over M.
    """
    h, w, ch = xt.shape
    kh, kw = wt.shape[0], wt.shape[1]
    ho, wo = yt.shape[0], yt.shape[1]
    for oh in prange(ho):
        for ow in range(wo):
            ys = yt[oh, ow]
            ys[:] = bias
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
                        ys[c] += xs[c] * ws[c]


@njit(parallel=True, cache=True)
def max_pool(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out):  # pragma: no cover - compiled
    """MaxPool of x (N, C, H, W) into out (N, C, Ho, Wo); padding never wins (``low`` starts each max)."""
    nb, ch, ho, wo = out.shape
    h, w = x.shape[2], x.shape[3]
    for t in prange(nb * ch):
        n, c = t // ch, t % ch
        for oh in range(ho):
            for ow in range(wo):
                best = low
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    if 0 <= ih < h:
                        for j in range(kw):
                            iw = ow * sw - pl + j * dw
                            if 0 <= iw < w and x[n, c, ih, iw] > best:
                                best = x[n, c, ih, iw]
                out[n, c, oh, ow] = best


@njit(parallel=True, cache=True)
def average_pool_f32(x, kh, kw, sh, sw, dh, dw, pt, pl, divisor, out):  # pragma: no cover - compiled
    """AveragePool of float32 x: window sums over real elements divided by divisor[oh, ow]."""
    nb, ch, ho, wo = out.shape
    h, w = x.shape[2], x.shape[3]
    for t in prange(nb * ch):
        n, c = t // ch, t % ch
        for oh in range(ho):
            for ow in range(wo):
                acc = np.float32(0.0)
                for i in range(kh):
                    ih = oh * sh - pt + i * dh
                    if 0 <= ih < h:
                        for j in range(kw):
                            iw = ow * sw - pl + j * dw
                            if 0 <= iw < w:
                                acc += x[n, c, ih, iw]
                out[n, c, oh, ow] = acc / divisor[oh, ow]
