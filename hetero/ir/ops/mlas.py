"""float32 LayerNormalization, Softmax, Erf, Gelu and Tanh computed the way onnxruntime's CPU
execution provider computes them (x86-64), so that a QuantizeLinear after them rounds as
onnxruntime's does, and so that every device that runs them in an int8 graph gives these bits.

Written from the published algorithms (MLAS's sources) and, for LayerNormalization, from the
instruction sequence of onnxruntime 1.32's x86-64 wheel: MLAS's expf in its softmax kernel
(Cody-Waite reduction by ln 2 in two parts, a degree-6 polynomial, the power of two applied by
one scaling) with the AVX-512 kernel's accumulation (16 lanes over the row, then lanes i and
i + 8, pairs, pairs of pairs, the halves) and a multiply by the reciprocal of the sum; MLAS's
erff (Norbert Juffa's split at 0.921875: an odd polynomial below, 1 - exp(-poly) above, |x|
clamped at 3.925); MLAS's rational tanh (clamped to [-9, 9], degree 13 over degree 6); Gelu as
onnxruntime writes it (``x * M_SQRT1_2`` into erf, then ``0.5 * x * (erf + 1)``; the tanh form
``x * (C x x + B)``); LayerNormalization as in :func:`layer_norm`. Every fused multiply-add is
computed exactly (:func:`fma`). Checked bit for bit against onnxruntime 1.32 on an AVX-512 CPU
(tests/test_mlas.py); onnxruntime on a CPU without AVX-512 sums the softmax in 8 lanes.

For ``quantize_dynamic`` models (tests/test_mlas_dynamic.py): MLAS's SGEMM (:func:`sgemm`: fused
multiply-add chains over k in MLAS's K blocks), SkipLayerNormalization (float32 Welford), MLAS's
logistic and QuickGelu, and ReduceMean over trailing axes as Eigen's 4-lane sum in onnxruntime
(:func:`eigen_row_sums`).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

# MLAS's expf constants (float32)
EXP_LOWER = F32(-103.9720840454)
ROUNDING_BIAS = F32(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer
LOG2_RECIPROCAL = F32(1.44269504088896341)
LOG2_HIGH = F32(-6.93145752e-1)
LOG2_LOW = F32(-1.42860677e-6)
EXP_POLY = tuple(F32(float.fromhex(h)) for h in ("0x1.694000p-10", "0x1.125edcp-7", "0x1.555b5ap-5", "0x1.555450p-3",
                                                  "0x1.fffff6p-2", "0x1.000000p+0"))

# MLAS's erff constants
ERF_UPPER = F32(3.925)
ERF_SPLIT = F32(0.921875)
ERF_SMALL = tuple(F32(v) for v in (-5.99104969e-4, 4.99339588e-3, -2.67667342e-2, 1.12818025e-1, -3.76124859e-1,
                                   1.28379151e-1))
ERF_BIG = tuple(F32(v) for v in (1.72948930e-5, -3.83208680e-4, 3.88393435e-3, -2.42545605e-2, 1.06777847e-1,
                                 6.34846687e-1, 1.28717512e-1))
ERF_EXP_LOWER = F32(-88.3762626647949)
ERF_EXP_HIGH = F32(-6.93145752e-1)
ERF_EXP_LOW = F32(-1.42860677e-6)
ERF_EXP_POLY = tuple(F32(v) for v in (1.38319808e-3, 8.37550033e-3, 4.16689515e-2, 1.66664466e-1, 4.99999851e-1, 1.0,
                                      1.0))

# MLAS's tanh constants
TANH_BOUND = F32(9.0)
TANH_ALPHA = tuple(F32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                                    5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                                    4.89352455891786e-03))
TANH_BETA = tuple(F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                   4.89352518554385e-03))

GELU_SQRT1_2 = F32(0.7071067811865476)
GELU_B = F32(0.7978845608028654)  # sqrt(2 / pi)
GELU_C = F32(0.035677408136300125)  # 0.044715 * sqrt(2 / pi)
SOFTMAX_LANES = 16
WELFORD_BELOW = 8  # onnxruntime normalises rows shorter than this with its scalar Welford loop
SGEMM_STRIDE = 128  # MLAS SGEMM's default N and K strides (K: how many k it sums before adding to C)
SGEMM_PACKED_BLOCK_K = 256  # its K stride with B packed

# The attribute hetero.quant.lowering sets on a float op whose float32 output a QuantizeLinear
# rounds (in an int8 graph): a device must give the reference's bits for it, or refuse it.
FEEDS_QUANTIZE = "feeds_quantize"
# float ops every device computes with the same IEEE float32 bits (one rounding per element)
SAME_BITS_EVERYWHERE = frozenset({"Add", "Sub", "Mul", "Neg", "Abs", "Relu", "Max", "Min", "Clip", "Reshape",
                                  "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather", "Split",
                                  "Identity", "Expand", "Tile", "Where", "MaxPool", "Cast"})


def feeds_quantize(op: "object") -> bool:
    """Whether an op carries :data:`FEEDS_QUANTIZE` (its float rounding decides integers)."""
    return bool(getattr(op, "attrs", {}).get(FEEDS_QUANTIZE, 0))


def fma(a: np.ndarray | np.float32, b: np.ndarray | np.float32, c: np.ndarray | np.float32) -> np.ndarray:
    """float32 a * b + c rounded once. The float64 product of two float32 is exact and the float64
    sum is its nearest float64, which rounds to float32 as the exact value does unless it lies
    exactly on a float32 rounding midpoint (or in float32's subnormal range): only those elements
    are recomputed, with the float64 sum rounded to odd (its error by TwoSum)."""
    p = np.multiply(a, b, dtype=np.float64)
    s = np.add(p, c, dtype=np.float64)
    bits = np.atleast_1d(s).view(np.int64)
    suspect = (bits & 0x1FFFFFFF) == 0x10000000
    tiny = np.abs(np.atleast_1d(s)) < 2.0**-125
    suspect |= tiny & (np.atleast_1d(s) != 0)
    if suspect.any():
        s = np.array(s, ndmin=1)
        p = np.broadcast_to(p, s.shape)[suspect]
        c64 = np.broadcast_to(np.asarray(c, np.float64), s.shape)[suspect]
        near = s[suspect]
        with np.errstate(invalid="ignore", over="ignore"):
            back = near - p
            err = (p - (near - back)) + (c64 - back)
            nudge = (err != 0) & ((near.view(np.int64) & 1) == 0) & np.isfinite(near)
            s[suspect] = np.where(nudge, np.nextafter(near, np.where(err > 0, np.inf, -np.inf)), near)
        return s.astype(F32).reshape(np.broadcast_shapes(np.shape(a), np.shape(b), np.shape(c)))
    return s.astype(F32)


def sum_exp_terms(x: np.ndarray, negative_max: np.ndarray) -> np.ndarray:
    """exp(x - max) of MLAS's softmax kernel, elementwise (float32)."""
    v = np.maximum(EXP_LOWER, (x + negative_max).astype(F32))
    biased = fma(LOG2_RECIPROCAL, v, ROUNDING_BIAS)
    m = (biased - ROUNDING_BIAS).astype(F32)
    v = fma(m, LOG2_HIGH, v)
    v = fma(m, LOG2_LOW, v)
    p = np.full_like(v, EXP_POLY[0])
    for coefficient in (*EXP_POLY[1:], EXP_POLY[-1]):
        p = fma(p, v, coefficient)
    return np.ldexp(p, m.astype(np.int32)).astype(F32)


def _lane_sum(e: np.ndarray) -> np.ndarray:
    """Sum of the last axis in the AVX-512 kernel's order: 16 lanes accumulate the row's chunks
    of 16 in turn, then lanes i and i + 8 add, then pairs, then pairs of pairs, then the halves."""
    rows, d = e.shape
    chunks = -(-d // SOFTMAX_LANES)
    padded = np.zeros((rows, chunks * SOFTMAX_LANES), F32)
    padded[:, :d] = e
    lanes = np.add.accumulate(padded.reshape(rows, chunks, SOFTMAX_LANES), axis=1, dtype=F32)[:, -1]
    h = (lanes[:, :8] + lanes[:, 8:]).astype(F32)
    pairs = (h[:, 0::2] + h[:, 1::2]).astype(F32)  # (h0+h1, h2+h3, h4+h5, h6+h7)
    quads = (pairs[:, 0::2] + pairs[:, 1::2]).astype(F32)
    return (quads[:, 0] + quads[:, 1]).astype(F32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """onnxruntime's float32 Softmax on ``axis`` (opset 13: over that axis alone)."""
    moved = np.moveaxis(np.asarray(x, F32), axis, -1)
    rows = moved.reshape(-1, moved.shape[-1]) if moved.size else moved.reshape(0, max(moved.shape[-1], 1))
    if rows.shape[-1] == 0 or rows.shape[0] == 0:
        return np.asarray(x, F32).copy()
    negative_max = -rows.max(axis=1, keepdims=True)
    e = sum_exp_terms(rows, negative_max)
    scale = (F32(1.0) / _lane_sum(e)).astype(F32)
    y = (e * scale[:, None]).astype(F32)
    return np.moveaxis(y.reshape(moved.shape), -1, axis)


def erf(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 erf (the vector kernel: both branches computed, selected by bits)."""
    x = np.asarray(x, F32)
    bits = x.view(np.uint32)
    sign = bits & np.uint32(0x80000000)
    a = np.minimum((bits & np.uint32(0x7FFFFFFF)).view(F32), ERF_UPPER)
    big_lane = ERF_SPLIT <= a
    s = (a * a).astype(F32)
    r = np.full_like(a, ERF_SMALL[0])
    for coefficient in ERF_SMALL[1:]:
        r = fma(r, s, coefficient)
    small = np.where(big_lane, F32(0), fma(r, a, a)).view(np.uint32)
    ab = np.where(big_lane, a, F32(0))
    b = np.full_like(a, ERF_BIG[0])
    for coefficient in ERF_BIG[1:]:
        b = fma(b, ab, coefficient)
    b = np.maximum(-fma(b, ab, ab), ERF_EXP_LOWER)
    r = (fma(LOG2_RECIPROCAL, b, ROUNDING_BIAS) - ROUNDING_BIAS).astype(F32)
    f = fma(ERF_EXP_HIGH, r, b)
    f = fma(r, ERF_EXP_LOW, f)
    p = np.full_like(a, ERF_EXP_POLY[0])
    for coefficient in ERF_EXP_POLY[1:]:
        p = fma(p, f, coefficient)
    power = ((r.astype(np.int32) + 127) << 23).astype(np.uint32).view(F32)
    big = (F32(1.0) - (p * power).astype(F32)).astype(F32).view(np.uint32)
    return (big | small | sign).view(F32)


def tanh(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 tanh: x clamped to [-9, 9], odd degree-13 numerator over even degree-6."""
    v = np.clip(np.asarray(x, F32), -TANH_BOUND, TANH_BOUND)
    s = (v * v).astype(F32)
    p = fma(s, TANH_ALPHA[0], TANH_ALPHA[1])
    for coefficient in TANH_ALPHA[2:]:
        p = fma(p, s, coefficient)
    p = (p * v).astype(F32)
    q = fma(s, TANH_BETA[0], TANH_BETA[1])
    for coefficient in TANH_BETA[2:]:
        q = fma(q, s, coefficient)
    return (p / q).astype(F32)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """onnxruntime's Gelu (opset 20 and com.microsoft): erf of x * M_SQRT1_2, or the tanh form."""
    x = np.asarray(x, F32)
    if approximate == "tanh":
        inner = tanh((x * ((GELU_C * x).astype(F32) * x + GELU_B).astype(F32)).astype(F32))
    else:
        inner = erf((x * GELU_SQRT1_2).astype(F32))
    return ((F32(0.5) * x).astype(F32) * (inner + F32(1.0)).astype(F32)).astype(F32)


def _lane_sums(values: np.ndarray, lanes: int, dtype: type) -> tuple[np.ndarray, int]:
    """Per-lane sums (in ``dtype``) over the row's whole chunks of ``lanes``, and how many
    elements those chunks hold."""
    rows, n = values.shape
    whole = n // lanes * lanes
    if not whole:
        return np.zeros((rows, lanes), dtype), 0
    chunks = values[:, :whole].astype(dtype).reshape(rows, whole // lanes, lanes)
    return np.add.accumulate(chunks, axis=1, dtype=dtype)[:, -1], whole


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int,
               epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's float32 LayerNormalization (its x86-64 AVX2 build): y, mean and 1/std over
    the axes from ``axis``.

    The mean: float64 sums in 4 lanes over chunks of 4, reduced (l0 + l2) + (l1 + l3), the tail
    added in order, divided by n, rounded to float32. The variance: d = x - mean in float32,
    fused d * d + acc in 8 float32 lanes over chunks of 8, reduced halves, pairs, pair sums; a
    remaining chunk of 4 squared then added one by one; the last (< 4) fused one by one; divided
    by n, plus epsilon, sqrt, 1 / it. y = fma(d * inv_std, scale, bias) (without bias:
    d * inv_std * scale).
    """
    x = np.asarray(x, F32)
    lead, n = x.shape[:axis], int(np.prod(x.shape[axis:]))
    stats = (*lead, *([1] * (x.ndim - axis)))
    if n < WELFORD_BELOW:
        y, mean, inv = _layer_norm_welford(x.reshape(-1, n), scale, bias, x.shape[axis:], epsilon)
        return y.reshape(x.shape), mean.reshape(stats), inv.reshape(stats)
    rows = x.reshape(-1, n)
    count = rows.shape[0]
    lanes4, whole = _lane_sums(rows, 4, np.float64)
    total = (lanes4[:, 0] + lanes4[:, 2]) + (lanes4[:, 1] + lanes4[:, 3])
    for i in range(whole, n):
        total = total + rows[:, i].astype(np.float64)
    mean = (total / float(n)).astype(F32)[:, None] if n else np.zeros((count, 1), F32)
    d = (rows - mean).astype(F32)
    acc = np.zeros((count, 8), F32)
    main = n // 8 * 8
    for c in range(0, main, 8):
        acc = fma(d[:, c:c + 8], d[:, c:c + 8], acc)
    s4 = (acc[:, 4:] + acc[:, :4]).astype(F32)
    s2 = (s4[:, :2] + s4[:, 2:]).astype(F32)
    square = (s2[:, 0] + s2[:, 1]).astype(F32)
    i = main
    if n - main >= 4:
        squared = (d[:, i:i + 4] * d[:, i:i + 4]).astype(F32)
        for k in range(4):
            square = (square + squared[:, k]).astype(F32)
        i += 4
    for k in range(i, n):
        square = fma(d[:, k], d[:, k], square)
    variance = ((square / F32(n)).astype(F32) + F32(epsilon)).astype(F32) if n else np.zeros(count, F32)
    inv = (F32(1.0) / np.sqrt(variance).astype(F32)).astype(F32)[:, None]
    gamma = np.broadcast_to(np.asarray(scale, F32), x.shape[axis:]).reshape(1, n)
    scaled = (d * inv).astype(F32)
    if bias is None:
        y = (scaled * gamma).astype(F32)
    else:
        y = fma(scaled, gamma, np.broadcast_to(np.asarray(bias, F32), x.shape[axis:]).reshape(1, n))
    return y.reshape(x.shape), mean.reshape(stats), inv.reshape(stats)


def _layer_norm_welford(rows: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, norm_shape: tuple[int, ...],
                        epsilon: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """onnxruntime's LayerNormalization for rows shorter than 8: Welford's running mean and
    squared deviation in float32 (delta = x - mean; mean += delta / i; m2 += (x - mean) * delta),
    then std = sqrt(m2 / n + eps) and y = (x - mean) / std * scale + bias, each step rounded."""
    count, n = rows.shape
    mean = np.zeros(count, F32)
    m2 = np.zeros(count, F32)
    for i in range(n):
        delta = (rows[:, i] - mean).astype(F32)
        mean = (mean + (delta / F32(i + 1)).astype(F32)).astype(F32)
        m2 = (m2 + ((rows[:, i] - mean).astype(F32) * delta).astype(F32)).astype(F32)
    std = np.sqrt(((m2 / F32(max(n, 1))).astype(F32) + F32(epsilon)).astype(F32)).astype(F32)[:, None]
    gamma = np.broadcast_to(np.asarray(scale, F32), norm_shape).reshape(1, n)
    y = ((((rows - mean[:, None]).astype(F32) / std).astype(F32)) * gamma).astype(F32)
    if bias is not None:
        y = (y + np.broadcast_to(np.asarray(bias, F32), norm_shape).reshape(1, n)).astype(F32)
    return y, mean[:, None], (F32(1.0) / std).astype(F32)


def sgemm_block_k(n: int, k: int, packed_b: bool) -> int:
    """How many k MLAS's SGEMM sums before adding the partial sum to C: 256 with B packed at
    load (a constant B); otherwise 128, doubled while the N stride (128, halved with it) stays
    above 16 and its half still covers ``n``, when n < k."""
    if packed_b:
        return SGEMM_PACKED_BLOCK_K
    stride_n, stride_k = SGEMM_STRIDE, SGEMM_STRIDE
    if n < k:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_k, stride_n = stride_k * 2, stride_n // 2
    return stride_k


def sgemm(a: np.ndarray, b: np.ndarray, alpha: float = 1.0, packed_b: bool = False) -> np.ndarray:
    """onnxruntime's float32 MatMul / FusedMatMul (MLAS's SGEMM kernels on x86-64): every output
    a fused multiply-add chain over k in order, in blocks of :func:`sgemm_block_k`; the first
    block's sum times ``alpha`` (when not 1) is C, each later one is fused in as
    C = sum * alpha + C. ``packed_b``: B is
    a constant (onnxruntime packs it at load). Batched and broadcasting as numpy's matmul.
    Checked against onnxruntime 1.32 for M > 1; a one-row product with B an activation takes
    MLAS's GEMV path, whose order this does not reproduce (tests/test_mlas.py)."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    vector_a, vector_b = a.ndim == 1, b.ndim == 1
    a2 = a[None, :] if vector_a else a
    b2 = b[:, None] if vector_b else b
    k_total = a2.shape[-1]
    shape = (*np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]), a2.shape[-2], b2.shape[-1])
    block = sgemm_block_k(shape[-1], k_total, packed_b)
    c = np.zeros(shape, F32)
    for start in range(0, k_total, block):
        acc = np.zeros(shape, F32)
        for k in range(start, min(start + block, k_total)):
            acc = fma(a2[..., :, k:k + 1], b2[..., k:k + 1, :], acc)
        if start == 0:
            c = acc if alpha == 1.0 else (acc * F32(alpha)).astype(F32)
        else:
            c = fma(acc, F32(alpha), c)
    if vector_a:
        c = c[..., 0, :]
    if vector_b:
        c = c[..., 0]
    return c


def skip_layer_norm(x: np.ndarray, skip: np.ndarray, gamma: np.ndarray, beta: np.ndarray | None,
                    bias: np.ndarray | None, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's SkipLayerNormalization (com.microsoft, float32, CPU): s = x + skip (+ bias)
    in float32, then, whatever the row length, the float32 Welford loop onnxruntime's
    LayerNormalization uses for short rows (:func:`_layer_norm_welford`); returns y and s."""
    s = (np.asarray(x, F32) + np.asarray(skip, F32)).astype(F32)
    if bias is not None:
        s = (s + np.asarray(bias, F32)).astype(F32)
    n = s.shape[-1]
    y, _, _ = _layer_norm_welford(s.reshape(-1, n), gamma, beta, (n,), epsilon)
    return y.reshape(s.shape), s


LOGISTIC_BOUND = F32(18.0)
LOGISTIC_ALPHA = tuple(F32(v) for v in (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                                        8.51377133304701e-03, 2.48287947061529e-01))
LOGISTIC_BETA = tuple(F32(v) for v in (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                                       1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01))


def logistic(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 logistic (its FMA3 kernel): x clamped to [-18, 18], an odd degree-9
    numerator over an even degree-10 denominator in x, both by fused Horner steps in x * x,
    then p / q + 0.5."""
    v = np.clip(np.asarray(x, F32), -LOGISTIC_BOUND, LOGISTIC_BOUND)
    s = (v * v).astype(F32)
    p = fma(s, LOGISTIC_ALPHA[0], LOGISTIC_ALPHA[1])
    for coefficient in LOGISTIC_ALPHA[2:]:
        p = fma(p, s, coefficient)
    p = (p * v).astype(F32)
    q = fma(s, LOGISTIC_BETA[0], LOGISTIC_BETA[1])
    for coefficient in LOGISTIC_BETA[2:]:
        q = fma(q, s, coefficient)
    return ((p / q).astype(F32) + F32(0.5)).astype(F32)


def quick_gelu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """onnxruntime's QuickGelu (com.microsoft): x * logistic(alpha * x), alpha's product skipped at 1
    (bit for bit at alpha 1, SiLU; at 1.702 about 1 element in 10^4 differs by one unit)."""
    x = np.asarray(x, F32)
    inner = x if alpha == 1.0 else (x * F32(alpha)).astype(F32)
    return (x * logistic(inner)).astype(F32)


EIGEN_LANES = 4  # onnxruntime's CPU kernels are built for SSE2: Eigen's float packets hold 4


def eigen_row_sums(rows: np.ndarray) -> np.ndarray:
    """float32 sums of each row as Eigen's vectorised ``sum()`` forms them in onnxruntime's
    reductions (ReduceSum / ReduceMean over trailing axes): the rows lie one after another in a
    16-byte-aligned buffer, so row d's first aligned element is at (-d n) mod 4; from there two
    4-lane accumulators take alternate packets, are added, take one last whole packet, and
    reduce as (l0 + l2) + (l1 + l3); then the unaligned head, then the tail, one by one. A row
    with no whole packet is summed in order."""
    rows = np.asarray(rows, F32)
    count, n = rows.shape
    out = np.zeros(count, F32)
    for offset in range(EIGEN_LANES):
        which = np.arange(count)[(np.arange(count) * n) % EIGEN_LANES == offset]
        if not which.size or not n:
            continue
        r = rows[which]
        start = min((EIGEN_LANES - offset) % EIGEN_LANES, n)
        whole = (n - start) // EIGEN_LANES * EIGEN_LANES
        pairs = (n - start) // (2 * EIGEN_LANES) * (2 * EIGEN_LANES)
        if not whole:
            s = r[:, 0].copy()
            for i in range(1, n):
                s = (s + r[:, i]).astype(F32)
            out[which] = s
            continue
        p0 = r[:, start:start + EIGEN_LANES].copy()
        if whole > EIGEN_LANES:
            p1 = r[:, start + EIGEN_LANES:start + 2 * EIGEN_LANES].copy()
            for i in range(start + 2 * EIGEN_LANES, start + pairs, 2 * EIGEN_LANES):
                p0 = (p0 + r[:, i:i + EIGEN_LANES]).astype(F32)
                p1 = (p1 + r[:, i + EIGEN_LANES:i + 2 * EIGEN_LANES]).astype(F32)
            p0 = (p0 + p1).astype(F32)
            if whole > pairs:
                p0 = (p0 + r[:, start + pairs:start + pairs + EIGEN_LANES]).astype(F32)
        s = ((p0[:, 0] + p0[:, 2]).astype(F32) + (p0[:, 1] + p0[:, 3]).astype(F32)).astype(F32)
        for i in (*range(0, start), *range(start + whole, n)):
            s = (s + r[:, i]).astype(F32)
        out[which] = s
    return out


def reduce_mean_trailing(x: np.ndarray, first_axis: int, keepdims: bool) -> np.ndarray:
    """onnxruntime's float32 ReduceMean over the axes from ``first_axis`` on: each row's
    :func:`eigen_row_sums`, divided by its length."""
    x = np.asarray(x, F32)
    lead = x.shape[:first_axis]
    n = int(np.prod(x.shape[first_axis:]))
    mean = (eigen_row_sums(x.reshape(-1, n)) / F32(n)).astype(F32)
    return mean.reshape(lead + (1,) * (x.ndim - first_axis) if keepdims else lead)
