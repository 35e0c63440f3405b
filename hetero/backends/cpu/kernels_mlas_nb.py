"""numba kernels for the float32 ops whose roundings follow onnxruntime's MLAS (Softmax, Erf, Gelu,
Tanh, LayerNormalization): the same operations in the same order as ``hetero.ir.ops.mlas``, so
their outputs equal the reference's bit for bit (each fused multiply-add is LLVM's correctly
rounded ``llvm.fma.f32``; every other step is one IEEE float32 or float64 operation; numba does
not contract or reorder float arithmetic without fastmath). tests/test_mlas.py compares them.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from hetero.ir.ops import mlas

F32 = np.float32


@intrinsic
def fma32(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c in float32, rounded once."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


EXP_LOWER, BIAS, L2R, L2H, L2L = mlas.EXP_LOWER, mlas.ROUNDING_BIAS, mlas.LOG2_RECIPROCAL, mlas.LOG2_HIGH, mlas.LOG2_LOW
P0, P1, P2, P3, P4, P56 = mlas.EXP_POLY
S0, S1, S2, S3, S4, S5 = mlas.ERF_SMALL
B0, B1, B2, B3, B4, B5, B6 = mlas.ERF_BIG
E0, E1, E2, E3, E4, E5, E6 = mlas.ERF_EXP_POLY
ERF_UPPER, ERF_SPLIT, ERF_LOWER, ERF_HIGH, ERF_LOW = (mlas.ERF_UPPER, mlas.ERF_SPLIT, mlas.ERF_EXP_LOWER, mlas.ERF_EXP_HIGH,
                                                      mlas.ERF_EXP_LOW)
TA0, TA1, TA2, TA3, TA4, TA5, TA6 = mlas.TANH_ALPHA
TB0, TB1, TB2, TB3 = mlas.TANH_BETA
TANH_BOUND = mlas.TANH_BOUND
SQRT1_2, GELU_B, GELU_C = mlas.GELU_SQRT1_2, mlas.GELU_B, mlas.GELU_C
ZERO, HALF, ONE = F32(0.0), F32(0.5), F32(1.0)


@njit(cache=True, inline="always")
def _exp_term(x, negative_max):  # pragma: no cover - compiled
    v = max(EXP_LOWER, x + negative_max)
    m = fma32(L2R, v, BIAS) - BIAS
    v = fma32(m, L2H, v)
    v = fma32(m, L2L, v)
    p = fma32(P0, v, P1)
    p = fma32(p, v, P2)
    p = fma32(p, v, P3)
    p = fma32(p, v, P4)
    p = fma32(p, v, P56)
    p = fma32(p, v, P56)
    return F32(np.float64(p) * math.ldexp(1.0, int(m)))  # p * 2^m rounded once, as VSCALEFPS


@njit(cache=True)
def _softmax_row(x, out, r):  # pragma: no cover - compiled
    d = x.shape[1]
    top = x[r, 0]
    for i in range(1, d):
        if x[r, i] > top:
            top = x[r, i]
    negative_max = -top
    lanes = np.zeros(16, np.float32)
    for i in range(d):
        e = _exp_term(x[r, i], negative_max)
        out[r, i] = e
        lanes[i % 16] = lanes[i % 16] + e
    h = np.empty(8, np.float32)
    for i in range(8):
        h[i] = lanes[i] + lanes[i + 8]
    total = ((h[0] + h[1]) + (h[2] + h[3])) + ((h[4] + h[5]) + (h[6] + h[7]))
    scale = ONE / total
    for i in range(d):
        out[r, i] = out[r, i] * scale


@njit(parallel=True, cache=True)
def softmax_rows(x, out):  # pragma: no cover - compiled
    """Softmax of each row of x (rows, d) as MLAS's AVX-512 kernel rounds it."""
    for r in prange(x.shape[0]):
        _softmax_row(x, out, r)


@njit(cache=True, inline="always")
def _erf(x):  # pragma: no cover - compiled
    a = min(abs(x), ERF_UPPER)
    if ERF_SPLIT <= a:
        b = fma32(B0, a, B1)
        b = fma32(b, a, B2)
        b = fma32(b, a, B3)
        b = fma32(b, a, B4)
        b = fma32(b, a, B5)
        b = fma32(b, a, B6)
        b = max(-fma32(b, a, a), ERF_LOWER)
        r = fma32(L2R, b, BIAS) - BIAS
        f = fma32(ERF_HIGH, r, b)
        f = fma32(r, ERF_LOW, f)
        p = fma32(E0, f, E1)
        p = fma32(p, f, E2)
        p = fma32(p, f, E3)
        p = fma32(p, f, E4)
        p = fma32(p, f, E5)
        p = fma32(p, f, E6)
        y = ONE - p * F32(math.ldexp(1.0, int(r)))
    else:
        s = a * a
        q = fma32(S0, s, S1)
        q = fma32(q, s, S2)
        q = fma32(q, s, S3)
        q = fma32(q, s, S4)
        q = fma32(q, s, S5)
        y = fma32(q, a, a)
    return F32(math.copysign(y, x))


@njit(cache=True, inline="always")
def _tanh(x):  # pragma: no cover - compiled
    v = min(max(x, -TANH_BOUND), TANH_BOUND)
    s = v * v
    p = fma32(s, TA0, TA1)
    p = fma32(p, s, TA2)
    p = fma32(p, s, TA3)
    p = fma32(p, s, TA4)
    p = fma32(p, s, TA5)
    p = fma32(p, s, TA6)
    p = p * v
    q = fma32(s, TB0, TB1)
    q = fma32(q, s, TB2)
    q = fma32(q, s, TB3)
    return p / q


ERF, TANH, GELU, GELU_TANH = 0, 1, 2, 3


@njit(parallel=True, cache=True)
def unary(code, x, out):  # pragma: no cover - compiled
    """Erf, Tanh, Gelu or tanh-Gelu of a flat float32 array, as MLAS rounds them."""
    for i in prange(x.size):
        v = x[i]
        if code == ERF:
            out[i] = _erf(v)
        elif code == TANH:
            out[i] = _tanh(v)
        elif code == GELU:
            out[i] = (HALF * v) * (_erf(v * SQRT1_2) + ONE)
        else:
            out[i] = (HALF * v) * (_tanh(v * (GELU_C * v * v + GELU_B)) + ONE)


@njit(cache=True)
def _layer_norm_row(x, scale, bias, has_bias, eps, out, mean_out, inv_out, r):  # pragma: no cover - compiled
    n = x.shape[1]
    if n < 8:  # onnxruntime's scalar Welford loop
        mean = ZERO
        m2 = ZERO
        for i in range(n):
            delta = x[r, i] - mean
            mean = mean + delta / F32(i + 1)
            m2 = m2 + (x[r, i] - mean) * delta
        std = np.sqrt(m2 / F32(n) + eps)
        for i in range(n):
            y = ((x[r, i] - mean) / std) * scale[i]
            out[r, i] = y + bias[i] if has_bias else y
        mean_out[r] = mean
        inv_out[r] = ONE / std
        return
    lane = np.zeros(4, np.float64)
    whole = n // 4 * 4
    for i in range(whole):
        lane[i % 4] += np.float64(x[r, i])
    total = (lane[0] + lane[2]) + (lane[1] + lane[3])
    for i in range(whole, n):
        total += np.float64(x[r, i])
    mean = F32(total / np.float64(n))
    acc = np.zeros(8, np.float32)
    main = n // 8 * 8
    for i in range(main):
        d = x[r, i] - mean
        acc[i % 8] = fma32(d, d, acc[i % 8])
    s0, s1, s2, s3 = acc[4] + acc[0], acc[5] + acc[1], acc[6] + acc[2], acc[7] + acc[3]
    square = (s0 + s2) + (s1 + s3)
    i = main
    if n - main >= 4:
        for k in range(i, i + 4):
            d = x[r, k] - mean
            square = square + d * d
        i += 4
    for k in range(i, n):
        d = x[r, k] - mean
        square = fma32(d, d, square)
    inv = ONE / np.sqrt(square / F32(n) + eps)
    for k in range(n):
        scaled = (x[r, k] - mean) * inv
        out[r, k] = fma32(scaled, scale[k], bias[k]) if has_bias else scaled * scale[k]
    mean_out[r] = mean
    inv_out[r] = inv


@njit(parallel=True, cache=True)
def layer_norm_rows(x, scale, bias, has_bias, eps, out, mean_out, inv_out):  # pragma: no cover - compiled
    """LayerNormalization of each row of x (rows, n) as onnxruntime's CPU kernel rounds it."""
    for r in prange(x.shape[0]):
        _layer_norm_row(x, scale, bias, has_bias, eps, out, mean_out, inv_out, r)


@njit(cache=True)
def eigen_mean_rows(rows, out):  # pragma: no cover - compiled
    """out[d] = the mean of row d of the float32 (count, n) array ``rows``, its sum formed as
    ``mlas.eigen_row_sums`` forms it (onnxruntime's ReduceMean over trailing axes: from the first
    16-byte-aligned element two 4-lane accumulators over alternate packets, added, one more whole
    packet, reduced (l0 + l2) + (l1 + l3), then the unaligned head and the tail in order), then
    divided by n in float32. n >= 1; the lanes are scalars so they stay in registers."""
    count, n = rows.shape
    for d in range(count):
        r = rows[d]
        offset = (d * n) % 4
        start = min((4 - offset) % 4, n)
        whole = (n - start) // 4 * 4
        pairs = (n - start) // 8 * 8
        if whole == 0:
            s = r[0]
            for i in range(1, n):
                s = s + r[i]
            out[d] = s / np.float32(n)
            continue
        a0, a1, a2, a3 = r[start], r[start + 1], r[start + 2], r[start + 3]
        if whole > 4:
            b0, b1, b2, b3 = r[start + 4], r[start + 5], r[start + 6], r[start + 7]
            for i in range(start + 8, start + pairs, 8):
                a0, a1, a2, a3 = a0 + r[i], a1 + r[i + 1], a2 + r[i + 2], a3 + r[i + 3]
                b0, b1, b2, b3 = b0 + r[i + 4], b1 + r[i + 5], b2 + r[i + 6], b3 + r[i + 7]
            a0, a1, a2, a3 = a0 + b0, a1 + b1, a2 + b2, a3 + b3
            if whole > pairs:
                i = start + pairs
                a0, a1, a2, a3 = a0 + r[i], a1 + r[i + 1], a2 + r[i + 2], a3 + r[i + 3]
        s = (a0 + a2) + (a1 + a3)
        for i in range(start):
            s = s + r[i]
        for i in range(start + whole, n):
            s = s + r[i]
        out[d] = s / np.float32(n)
