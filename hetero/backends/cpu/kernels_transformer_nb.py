"""numba loops for the transformer ops of the CPU backend (see kernels_transformer.py).

Flat kernels take a collapsed 4-D broadcast (``dims``, per-operand element strides) and work
in chunks of ``CHUNK`` elements so that every size parallelises; row kernels take 2-D arrays
(rows x the reduced or normalised extent). Float math runs in float64 and is rounded once to
float32, as the numpy reference does. ``error_model="numpy"``: division by zero gives inf/0,
never an exception. Every kernel is ``cache=True`` and typed on first use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHUNK = 16384

# unary codes (float math in float64)
ERF, GELU, GELU_TANH, EXP, LOG, SQRT, RECIPROCAL = range(7)
# comparison and logic codes
EQUAL, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL, AND, OR, XOR = range(8)

SQRT_HALF = 0.7071067811865476
SQRT_2_OVER_PI = 0.7978845608028654


@njit(parallel=True, cache=True, error_model="numpy")
def unary(code, x, out):  # pragma: no cover - compiled
    """Float math on flat arrays: each element widened to float64, rounded once to out's type."""
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        hi = min(n, lo + CHUNK)
        if code == ERF:
            for i in range(lo, hi):
                out[i] = math.erf(np.float64(x[i]))
        elif code == GELU:
            for i in range(lo, hi):
                v = np.float64(x[i])
                out[i] = 0.5 * v * (1.0 + math.erf(v * SQRT_HALF))
        elif code == GELU_TANH:
            for i in range(lo, hi):
                v = np.float64(x[i])
                out[i] = 0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)))
        elif code == EXP:
            for i in range(lo, hi):
                out[i] = math.exp(np.float64(x[i]))
        elif code == LOG:
            for i in range(lo, hi):
                v = np.float64(x[i])
                out[i] = np.log(v)
        elif code == SQRT:
            for i in range(lo, hi):
                out[i] = np.sqrt(np.float64(x[i]))
        else:
            for i in range(lo, hi):
                out[i] = 1.0 / np.float64(x[i])


@njit(parallel=True, cache=True)
def negate(x, out):  # pragma: no cover - compiled
    for i in prange(x.size):
        out[i] = -x[i]


@njit(inline="always")
def _offset(r, dims, s):  # pragma: no cover - compiled
    """Offset of row r (over dims[0..2]) of an operand with strides s."""
    i2 = r % dims[2]
    q = r // dims[2]
    return (q // dims[1]) * s[0] + (q % dims[1]) * s[1] + i2 * s[2]


@njit(parallel=True, cache=True, error_model="numpy")
def power(a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """out = a ** b in float64, rounded once, over a collapsed 4-D broadcast of flat float arrays."""
    n = dims[3]
    rows = dims[0] * dims[1] * dims[2]
    nch = (n + CHUNK - 1) // CHUNK
    for t in prange(rows * nch):
        r = t // nch
        lo = (t - r * nch) * CHUNK
        hi = min(n, lo + CHUNK)
        ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * n
        for i in range(lo, hi):
            out[oo + i] = math.pow(np.float64(a[ao + i * sa[3]]), np.float64(b[bo + i * sb[3]]))


@njit(parallel=True, cache=True, error_model="numpy")
def modulo(fmod, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """numpy's mod (the divisor's sign) or fmod (the dividend's), broadcast as in ``power``."""
    n = dims[3]
    rows = dims[0] * dims[1] * dims[2]
    nch = (n + CHUNK - 1) // CHUNK
    for t in prange(rows * nch):
        r = t // nch
        lo = (t - r * nch) * CHUNK
        hi = min(n, lo + CHUNK)
        ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * n
        if fmod:  # |a| mod |b| with a's sign (numba's np.fmod on integers gets mixed signs wrong)
            for i in range(lo, hi):
                u, v = a[ao + i * sa[3]], b[bo + i * sb[3]]
                r = abs(u) % abs(v)
                out[oo + i] = -r if u < 0 else r
        else:
            for i in range(lo, hi):
                out[oo + i] = np.mod(a[ao + i * sa[3]], b[bo + i * sb[3]])


@njit(parallel=True, cache=True)
def compare(code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """out (bool) = a (comparison or logic op) b, broadcast as in ``power``."""
    n = dims[3]
    rows = dims[0] * dims[1] * dims[2]
    nch = (n + CHUNK - 1) // CHUNK
    s3a, s3b = sa[3], sb[3]
    for t in prange(rows * nch):
        r = t // nch
        lo = (t - r * nch) * CHUNK
        hi = min(n, lo + CHUNK)
        ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * n
        if code == EQUAL:
            for i in range(lo, hi):
                out[oo + i] = a[ao + i * s3a] == b[bo + i * s3b]
        elif code == LESS:
            for i in range(lo, hi):
                out[oo + i] = a[ao + i * s3a] < b[bo + i * s3b]
        elif code == GREATER:
            for i in range(lo, hi):
                out[oo + i] = a[ao + i * s3a] > b[bo + i * s3b]
        elif code == LESS_EQUAL:
            for i in range(lo, hi):
                out[oo + i] = a[ao + i * s3a] <= b[bo + i * s3b]
        elif code == GREATER_EQUAL:
            for i in range(lo, hi):
                out[oo + i] = a[ao + i * s3a] >= b[bo + i * s3b]
        elif code == AND:
            for i in range(lo, hi):
                out[oo + i] = (a[ao + i * s3a] != 0) and (b[bo + i * s3b] != 0)
        elif code == OR:
            for i in range(lo, hi):
                out[oo + i] = (a[ao + i * s3a] != 0) or (b[bo + i * s3b] != 0)
        else:
            for i in range(lo, hi):
                out[oo + i] = (a[ao + i * s3a] != 0) != (b[bo + i * s3b] != 0)


@njit(parallel=True, cache=True)
def where(cond, x, y, dims, sc, sx, sy, out):  # pragma: no cover - compiled
    """out = cond ? x : y over a collapsed 4-D broadcast of three flat arrays."""
    n = dims[3]
    rows = dims[0] * dims[1] * dims[2]
    nch = (n + CHUNK - 1) // CHUNK
    for t in prange(rows * nch):
        r = t // nch
        lo = (t - r * nch) * CHUNK
        hi = min(n, lo + CHUNK)
        co, xo, yo, oo = _offset(r, dims, sc), _offset(r, dims, sx), _offset(r, dims, sy), r * n
        for i in range(lo, hi):
            out[oo + i] = x[xo + i * sx[3]] if cond[co + i * sc[3]] else y[yo + i * sy[3]]


@njit(parallel=True, cache=True)
def logical_not(x, out):  # pragma: no cover - compiled
    for i in prange(x.size):
        out[i] = not x[i]


@njit(parallel=True, cache=True, error_model="numpy")
def layer_norm(x, scale, bias, has_bias, eps, out, mean_out, inv_out):  # pragma: no cover - compiled
    """Each row of x (rows, n) normalised with float64 statistics, times scale[n] (+ bias[n])."""
    rows, n = x.shape
    for r in prange(rows):
        acc = 0.0
        for i in range(n):
            acc += x[r, i]
        mean = acc / n
        sq = 0.0
        for i in range(n):
            d = x[r, i] - mean
            sq += d * d
        inv = 1.0 / np.sqrt(sq / n + eps)
        mean_out[r] = mean
        inv_out[r] = inv
        if has_bias:
            for i in range(n):
                out[r, i] = (x[r, i] - mean) * inv * scale[i] + bias[i]
        else:
            for i in range(n):
                out[r, i] = (x[r, i] - mean) * inv * scale[i]


@njit(parallel=True, cache=True, error_model="numpy")
def instance_norm(x, scale, bias, eps, out):  # pragma: no cover - compiled
    """x (N, C, inner): each (n, c) plane normalised with float64 statistics, * scale[c] + bias[c]."""
    nb, ch, inner = x.shape
    for t in prange(nb * ch):
        b, c = t // ch, t % ch
        acc = 0.0
        for i in range(inner):
            acc += x[b, c, i]
        mean = acc / inner
        sq = 0.0
        for i in range(inner):
            d = x[b, c, i] - mean
            sq += d * d
        inv = 1.0 / np.sqrt(sq / inner + eps)
        s, o = np.float64(scale[c]), np.float64(bias[c])
        for i in range(inner):
            out[b, c, i] = (x[b, c, i] - mean) * inv * s + o


@njit(parallel=True, cache=True, error_model="numpy")
def log_softmax_rows(x, out):  # pragma: no cover - compiled
    """log(softmax) of each row of a 2-D array, in float64."""
    rows, n = x.shape
    for r in prange(rows):
        top = -np.inf
        for i in range(n):
            top = max(top, np.float64(x[r, i]))
        total = 0.0
        for i in range(n):
            total += math.exp(x[r, i] - top)
        shift = top + math.log(total)
        for i in range(n):
            out[r, i] = x[r, i] - shift


@njit(parallel=True, cache=True)
def row_sum(x, out):  # pragma: no cover - compiled
    """Sum of each row of a 2-D float array, accumulated in float64."""
    rows, n = x.shape
    for r in prange(rows):
        acc = 0.0
        for i in range(n):
            acc += x[r, i]
        out[r] = acc


@njit(parallel=True, cache=True)
def row_max(x, low, out):  # pragma: no cover - compiled
    """Largest element of each row of a 2-D array (``low`` for an empty row)."""
    rows, n = x.shape
    for r in prange(rows):
        best = low
        for i in range(n):
            if x[r, i] > best:
                best = x[r, i]
        out[r] = best


@njit(parallel=True, cache=True)
def trilu(x, k, upper, zero, out):  # pragma: no cover - compiled
    """x (batch, rows, cols): keep j - i >= k (upper) or j - i <= k (lower), ``zero`` elsewhere."""
    nb, rows, cols = x.shape
    for t in prange(nb * rows):
        b, i = t // rows, t % rows
        for j in range(cols):
            keep = (j - i >= k) if upper else (j - i <= k)
            out[b, i, j] = x[b, i, j] if keep else zero
