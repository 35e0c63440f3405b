"""numba loops for the transformer ops of the CPU backend (see kernels_transformer.py).

Flat kernels take a collapsed 4-D broadcast (``dims``, per-operand element strides) and work
in tasks of ``CHUNK`` elements so that every size parallelises; row kernels take 2-D arrays
(rows x the reduced or normalised extent), one task per row. Each kernel is one task body run
by two drivers, ``<name>_parallel`` (prange) and ``<name>_serial``; ``<name>`` picks the serial
one for outputs of at most ``SERIAL_MAX`` elements, where starting numba's parallel region costs
more than the work (~12 us on a 2-core VM against ~2 us for a 1k-element Erf). Float math runs in
float64 and is rounded once, as the numpy reference does. ``error_model="numpy"``: division by
zero gives inf/0, never an exception. Every kernel is ``cache=True`` and typed on first use.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHUNK = 16384
SERIAL_MAX = 32768
"""Outputs up to this many elements run on the calling thread."""

# unary codes (float math in float64)
EXP, LOG, SQRT, RECIPROCAL, ABS, SIN, COS, SOFTPLUS, FLOOR, CEIL = range(10)  # Erf and Gelu: kernels_mlas_nb
# comparison and logic codes
EQUAL, LESS, GREATER, LESS_EQUAL, GREATER_EQUAL, AND, OR, XOR = range(8)



@njit(inline="always")
def _offset(r, dims, s):  # pragma: no cover - compiled
    """Offset of row r (over dims[0..2]) of an operand with strides s."""
    i2 = r % dims[2]
    q = r // dims[2]
    return (q // dims[1]) * s[0] + (q % dims[1]) * s[1] + i2 * s[2]


@njit(inline="always")
def _flat_tasks(n):  # pragma: no cover - compiled
    return (n + CHUNK - 1) // CHUNK


@njit(inline="always")
def _bcast_tasks(dims):  # pragma: no cover - compiled
    return dims[0] * dims[1] * dims[2] * _flat_tasks(dims[3])


@njit(inline="always")
def _bcast_span(t, dims):  # pragma: no cover - compiled
    """Row r and element range [lo, hi) of broadcast task t."""
    nch = _flat_tasks(dims[3])
    r = t // nch
    lo = (t - r * nch) * CHUNK
    return r, lo, min(dims[3], lo + CHUNK)


# --- unary --------------------------------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _unary_task(t, code, x, out):  # pragma: no cover - compiled
    lo = t * CHUNK
    hi = min(x.size, lo + CHUNK)
    if code == EXP:
        for i in range(lo, hi):
            out[i] = math.exp(np.float64(x[i]))
    elif code == LOG:
        for i in range(lo, hi):
            out[i] = np.log(np.float64(x[i]))
    elif code == SQRT:
        for i in range(lo, hi):
            out[i] = np.sqrt(np.float64(x[i]))
    elif code == ABS:
        for i in range(lo, hi):
            out[i] = abs(x[i])
    elif code == SIN:
        for i in range(lo, hi):
            out[i] = math.sin(np.float64(x[i]))
    elif code == COS:
        for i in range(lo, hi):
            out[i] = math.cos(np.float64(x[i]))
    elif code == SOFTPLUS:  # log(1 + e^x) without overflow
        for i in range(lo, hi):
            v = np.float64(x[i])
            out[i] = v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))
    elif code == FLOOR:
        for i in range(lo, hi):
            out[i] = math.floor(x[i])
    elif code == CEIL:
        for i in range(lo, hi):
            out[i] = math.ceil(x[i])
    else:
        for i in range(lo, hi):
            out[i] = 1.0 / np.float64(x[i])


@njit(parallel=True, cache=True)
def unary_parallel(code, x, out):  # pragma: no cover - compiled
    """Float math on flat arrays: each element widened to float64, rounded once to out's type."""
    for t in prange(_flat_tasks(x.size)):
        _unary_task(t, code, x, out)


@njit(cache=True)
def unary_serial(code, x, out):  # pragma: no cover - compiled
    for t in range(_flat_tasks(x.size)):
        _unary_task(t, code, x, out)


@njit(cache=True)
def _negate_task(t, x, out):  # pragma: no cover - compiled
    for i in range(t * CHUNK, min(x.size, (t + 1) * CHUNK)):
        out[i] = -x[i]


@njit(parallel=True, cache=True)
def negate_parallel(x, out):  # pragma: no cover - compiled
    for t in prange(_flat_tasks(x.size)):
        _negate_task(t, x, out)


@njit(cache=True)
def negate_serial(x, out):  # pragma: no cover - compiled
    for t in range(_flat_tasks(x.size)):
        _negate_task(t, x, out)


@njit(cache=True)
def _not_task(t, x, out):  # pragma: no cover - compiled
    for i in range(t * CHUNK, min(x.size, (t + 1) * CHUNK)):
        out[i] = not x[i]


@njit(parallel=True, cache=True)
def logical_not_parallel(x, out):  # pragma: no cover - compiled
    for t in prange(_flat_tasks(x.size)):
        _not_task(t, x, out)


@njit(cache=True)
def logical_not_serial(x, out):  # pragma: no cover - compiled
    for t in range(_flat_tasks(x.size)):
        _not_task(t, x, out)


# --- broadcasting binaries and Where ------------------------------------------------------------

@njit(cache=True, error_model="numpy")
def _power_task(t, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    r, lo, hi = _bcast_span(t, dims)
    ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * dims[3]
    for i in range(lo, hi):
        out[oo + i] = math.pow(np.float64(a[ao + i * sa[3]]), np.float64(b[bo + i * sb[3]]))


@njit(parallel=True, cache=True)
def power_parallel(a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """out = a ** b in float64, rounded once, over a collapsed 4-D broadcast of flat float arrays."""
    for t in prange(_bcast_tasks(dims)):
        _power_task(t, a, b, dims, sa, sb, out)


@njit(cache=True)
def power_serial(a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    for t in range(_bcast_tasks(dims)):
        _power_task(t, a, b, dims, sa, sb, out)


@njit(cache=True, error_model="numpy")
def _modulo_task(t, fmod, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    r, lo, hi = _bcast_span(t, dims)
    ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * dims[3]
    if fmod:  # |a| mod |b| with a's sign (numba's np.fmod on integers gets mixed signs wrong)
        for i in range(lo, hi):
            u, v = a[ao + i * sa[3]], b[bo + i * sb[3]]
            m = abs(u) % abs(v)
            out[oo + i] = -m if u < 0 else m
    else:
        for i in range(lo, hi):
            out[oo + i] = np.mod(a[ao + i * sa[3]], b[bo + i * sb[3]])


@njit(parallel=True, cache=True)
def modulo_parallel(fmod, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """numpy's mod (the divisor's sign) or fmod (the dividend's), broadcast as in ``power``."""
    for t in prange(_bcast_tasks(dims)):
        _modulo_task(t, fmod, a, b, dims, sa, sb, out)


@njit(cache=True)
def modulo_serial(fmod, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    for t in range(_bcast_tasks(dims)):
        _modulo_task(t, fmod, a, b, dims, sa, sb, out)


@njit(cache=True)
def _compare_task(t, code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    r, lo, hi = _bcast_span(t, dims)
    ao, bo, oo = _offset(r, dims, sa), _offset(r, dims, sb), r * dims[3]
    s3a, s3b = sa[3], sb[3]
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
def compare_parallel(code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    """out (bool) = a (comparison or logic op) b, broadcast as in ``power``."""
    for t in prange(_bcast_tasks(dims)):
        _compare_task(t, code, a, b, dims, sa, sb, out)


@njit(cache=True)
def compare_serial(code, a, b, dims, sa, sb, out):  # pragma: no cover - compiled
    for t in range(_bcast_tasks(dims)):
        _compare_task(t, code, a, b, dims, sa, sb, out)


@njit(cache=True)
def _where_task(t, cond, x, y, dims, sc, sx, sy, out):  # pragma: no cover - compiled
    r, lo, hi = _bcast_span(t, dims)
    co, xo, yo, oo = _offset(r, dims, sc), _offset(r, dims, sx), _offset(r, dims, sy), r * dims[3]
    for i in range(lo, hi):
        out[oo + i] = x[xo + i * sx[3]] if cond[co + i * sc[3]] else y[yo + i * sy[3]]


@njit(parallel=True, cache=True)
def where_parallel(cond, x, y, dims, sc, sx, sy, out):  # pragma: no cover - compiled
    """out = cond ? x : y over a collapsed 4-D broadcast of three flat arrays."""
    for t in prange(_bcast_tasks(dims)):
        _where_task(t, cond, x, y, dims, sc, sx, sy, out)


@njit(cache=True)
def where_serial(cond, x, y, dims, sc, sx, sy, out):  # pragma: no cover - compiled
    for t in range(_bcast_tasks(dims)):
        _where_task(t, cond, x, y, dims, sc, sx, sy, out)


# --- row kernels: normalisations, LogSoftmax, reductions, Trilu -----------------------------------

@njit(cache=True, error_model="numpy")
def _layer_norm_row(r, x, scale, bias, has_bias, eps, out, mean_out, inv_out):  # pragma: no cover - compiled
    n = x.shape[1]
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


@njit(parallel=True, cache=True)
def layer_norm_parallel(x, scale, bias, has_bias, eps, out, mean_out, inv_out):  # pragma: no cover - compiled
    """Each row of x (rows, n) normalised with float64 statistics, times scale[n] (+ bias[n])."""
    for r in prange(x.shape[0]):
        _layer_norm_row(r, x, scale, bias, has_bias, eps, out, mean_out, inv_out)


@njit(cache=True)
def layer_norm_serial(x, scale, bias, has_bias, eps, out, mean_out, inv_out):  # pragma: no cover - compiled
    for r in range(x.shape[0]):
        _layer_norm_row(r, x, scale, bias, has_bias, eps, out, mean_out, inv_out)


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


@njit(cache=True, error_model="numpy")
def _log_softmax_row(r, x, out):  # pragma: no cover - compiled
    n = x.shape[1]
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
def log_softmax_parallel(x, out):  # pragma: no cover - compiled
    """log(softmax) of each row of a 2-D array, in float64."""
    for r in prange(x.shape[0]):
        _log_softmax_row(r, x, out)


@njit(cache=True)
def log_softmax_serial(x, out):  # pragma: no cover - compiled
    for r in range(x.shape[0]):
        _log_softmax_row(r, x, out)


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


# --- drivers: serial for small outputs ----------------------------------------------------------

def _driver(parallel, serial, size_of):
    def run(*args):
        (serial if size_of(*args) <= SERIAL_MAX else parallel)(*args)

    run.__doc__ = parallel.__doc__
    return run


unary = _driver(unary_parallel, unary_serial, lambda code, x, out: x.size)
negate = _driver(negate_parallel, negate_serial, lambda x, out: x.size)
logical_not = _driver(logical_not_parallel, logical_not_serial, lambda x, out: x.size)
power = _driver(power_parallel, power_serial, lambda *args: args[-1].size)
modulo = _driver(modulo_parallel, modulo_serial, lambda *args: args[-1].size)
compare = _driver(compare_parallel, compare_serial, lambda *args: args[-1].size)
where = _driver(where_parallel, where_serial, lambda *args: args[-1].size)
layer_norm = _driver(layer_norm_parallel, layer_norm_serial, lambda x, *rest: x.size)
log_softmax_rows = _driver(log_softmax_parallel, log_softmax_serial, lambda x, out: x.size)


@njit(parallel=True, cache=True)
def cumsum(x, zero, exclusive, reverse, out):  # pragma: no cover - compiled
    """Running sums along the middle axis of x (outer, dim, inner), accumulated in zero's type
    (float64 for floats); exclusive writes the sum before each element, reverse runs from the end."""
    outer, dim, inner = x.shape
    for t in prange(outer * inner):
        o, r = t // inner, t % inner
        acc = zero
        for s in range(dim):
            k = dim - 1 - s if reverse else s
            if exclusive:
                out[o, k, r] = acc
                acc += x[o, k, r]
            else:
                acc += x[o, k, r]
                out[o, k, r] = acc


@njit(cache=True)
def is_nan(x, out):  # pragma: no cover - compiled
    for i in range(x.size):
        out[i] = x[i] != x[i]
