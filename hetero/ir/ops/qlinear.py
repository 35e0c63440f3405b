"""Integer (QLinear*) ops: what a QDQ graph lowers to, in onnxruntime's exact CPU semantics.

Input orders follow onnxruntime's QLinearConv / QLinearMatMul / com.microsoft QGemm,
QLinearAdd, QLinearAveragePool, QLinearGlobalAveragePool and QLinearConcat. Every scale and
zero point is a constant input (a weight of the op).

The integer rules, which every backend must reproduce bit for bit:

1. Accumulate in int32: acc = sum((x - zx) * (w - zw)) (+ int32 bias). Padding holds zx,
   so it contributes zero.
2. Requantize in float32: multiplier = float32(float32(sx * sw[c]) / sy) per output channel
   c; y = round_half_even(float32(acc) * multiplier) + zy.
3. Saturate to [qmin, qmax]: the output type's range, narrowed by a fused Relu/Clip
   (attributes ``qmin``/``qmax``, in the quantized domain).
4. QLinearAdd, as onnxruntime's x86-64 kernel computes it with fused multiply-adds
   (fma rounds once to float32): ra = float32(sa/sy), rb = float32(sb/sy),
   fixed = float32(zy) - fma(ra, za, float32(rb*zb)); elementwise
   v = fma(a, ra, fma(b, rb, fixed)); y = round_half_even(v). Where one input is constant
   along the innermost varying output axis (a broadcast), its term is folded first:
   b so: v = fma(a, ra, fixed + float32(b*rb)); a so: v = fma(b, rb, fixed + float32(a*ra)).
5. QLinearGlobalAveragePool (and a QLinearAveragePool whose unpadded window is the whole
   image, which onnxruntime computes the same way): acc = sum(x - zx) over the n pixels;
   multiplier = float32(sx / float32(sy * n)); then as rule 2. Any other QLinearAveragePool
   is computed in float as onnxruntime does: each x dequantized to float32(sx * (x - zx)),
   summed in float32 in row-major window order over the pixels inside the image, divided by
   n (the kernel area with count_include_pad, else the pixels summed), and quantized as
   round_half_even(float32(avg / sy) + zy).
6. QLinearConcat: each input is requantized as y = round_half_even(float32((q - zi) * si) / sy) + zy,
   unless its scale and zero point equal the output's (then copied).
7. QLinearMul, in float32 as onnxruntime's kernel computes it: va = float32(sa * (a - za)),
   vb = float32(sb * (b - zb)); y = round_half_even(float32(float32(va * vb) / sy)) + zy,
   saturated. The product is commutative in float32, so a broadcast side changes nothing
   (checked against onnxruntime on all 256 x 256 operand pairs, both types).
8. QLinearSoftmax (onnxruntime's lookup-table kernel, along ``axis``; a reduction of D
   elements): a table of 256 uint32 T[j] = trunc(exp((j - 255 + k / sx) * sx)) computed in
   float64 with k = ln(4294967295 / D) - 3 (k = ln(4294967295 / D) when that is <= 3), so
   that the sum of D entries fits uint32. With u = x (uint8) or x + 128 (int8) and m the
   row's max u: e_i = T[u_i - m + 255], S = sum e_i (exact, uint32);
   y = round_half_even(float32(float32(e_i) * c) / float32(S)) + zy, saturated, where
   c = floor(float32(1 / sy)) (onnxruntime's kernel takes the reciprocal scale's integer part;
   that is why a value just above n + 0.5 can round to n). The input's zero point cancels.
   uint8 matches onnxruntime bit for bit; int8 differs in about 1 of 10^4 elements by one step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.nn import _conv_infer, patches, window
from hetero.ir.ops.pool import average_divisor

F32 = np.float32


def qrange(dtype: str | np.dtype, attrs: Attrs) -> tuple[int, int]:
    """The saturation range of an output: its type's, narrowed by a fused activation."""
    info = np.iinfo(dtype)
    return max(info.min, int(attrs.get("qmin", info.min))), min(info.max, int(attrs.get("qmax", info.max)))


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, dtype: str | np.dtype, attrs: Attrs) -> np.ndarray:
    """Rules 2 and 3: int32 accumulators to the output integer type."""
    low, high = qrange(dtype, attrs)
    y = np.rint(acc.astype(F32) * np.asarray(multiplier, F32)) + F32(zero_point)
    return np.clip(y, low, high).astype(dtype)


def channel_multiplier(x_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray) -> np.ndarray:
    """float32(float32(sx * sw[c]) / sy), one per output channel (or one for per-tensor)."""
    product = F32(np.asarray(x_scale, F32).reshape(())) * np.asarray(w_scale, F32).reshape(-1)
    return (product / F32(np.asarray(y_scale, F32).reshape(()))).astype(F32)


def scalar_of(a: np.ndarray | None, default: int = 0) -> int:
    return default if a is None else int(np.asarray(a).reshape(-1)[0])


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer matmul of int32 operands with |values| <= 255, through float64 BLAS."""
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int32)


def _zero_points(w_zero_point: np.ndarray | None, channels: int) -> np.ndarray:
    if w_zero_point is None:
        return np.zeros(channels, np.int32)
    return np.broadcast_to(np.asarray(w_zero_point, np.int32).reshape(-1), (channels,))


# --- QLinearConv: x, sx, zx, w, sw, zw, sy, zy, [bias] ------------------------------------

def _qconv_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, w, zy = inputs[0], inputs[3], inputs[7]
    assert x is not None and w is not None
    if len(x.shape) != 4:
        raise UnsupportedOpError(f"only 2-D QLinearConv (4-D input) is supported, got input {list(x.shape)}")
    shape = _conv_infer([x, w], attrs)[0][0]
    return [(shape, zy.dtype if zy is not None else x.dtype)]


def _qconv_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    w = inputs[3]
    assert w is not None
    return 2 * int(np.prod(outputs[0])) * int(np.prod(w.shape[1:]))


def qlinear_conv(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """QLinearConv by rules 1-3."""
    x, sx, zx, w, sw, zw, sy, zy = ins[:8]
    bias = ins[8] if len(ins) > 8 else None
    out_channels = w.shape[0]
    x_zp = scalar_of(zx)
    w_zp = _zero_points(zw, out_channels)
    win = window(attrs, x.shape[2:], w.shape[2:])
    x_shift = patches(x.astype(np.int32), win, pad_value=x_zp) - x_zp  # N, C, Ho, Wo, kh, kw
    w_shift = w.astype(np.int32) - w_zp.reshape(-1, 1, 1, 1)
    acc = conv2d_int(x_shift, w_shift, int(attrs.get("group", 1)))
    if bias is not None:
        acc = acc + bias.astype(np.int32).reshape(1, -1, 1, 1)
    multiplier = channel_multiplier(sx, sw, sy).reshape(1, -1, 1, 1)
    dtype = zy.dtype if zy is not None else x.dtype
    return requantize(acc, multiplier, scalar_of(zy), dtype, attrs)


def conv2d_int(cols: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """Exact int32 grouped convolution of window patches (N,C,Ho,Wo,kh,kw) with w (M,C/g,kh,kw)."""
    n, c, ho, wo, kh, kw = cols.shape
    m = w.shape[0]
    cg, mg = c // group, m // group
    out = np.empty((n, m, ho, wo), np.int32)
    for g in range(group):
        block = cols[:, g * cg : (g + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, cg * kh * kw)
        weights = w[g * mg : (g + 1) * mg].reshape(mg, cg * kh * kw).T
        out[:, g * mg : (g + 1) * mg] = int_matmul(block, weights).reshape(n, ho, wo, mg).transpose(0, 3, 1, 2)
    return out


register(
    "QLinearConv",
    infer=_qconv_infer,
    reference=lambda ins, a: [qlinear_conv(ins, a)],
    flops=_qconv_flops,
    inputs=(8, 9),
)


# --- QGemm: a, sa, za, b, sb, zb, [c], sy, zy ; QLinearMatMul: a, sa, za, b, sb, zb, sy, zy ---

def _qgemm_parts(ins: Sequence[object], attrs: Attrs, gemm: bool):
    if gemm:
        a, sa, za, b, sb, zb, c, sy, zy = (list(ins) + [None] * 9)[:9]
    else:
        a, sa, za, b, sb, zb, sy, zy = ins[:8]
        c = None
    return a, sa, za, b, sb, zb, c, sy, zy


def _qmatmul_infer(gemm: bool):
    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        a, _, _, b, _, _, _, _, zy = _qgemm_parts(inputs, attrs, gemm)
        a_shape = a.shape[::-1] if gemm and attrs.get("transA", 0) else a.shape
        b_shape = b.shape[::-1] if gemm and attrs.get("transB", 0) else b.shape
        if a_shape[-1] != b_shape[-2 if len(b_shape) > 1 else 0]:
            raise GraphError(f"inner dimensions differ: {list(a_shape)} and {list(b_shape)}")
        shape = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2])) + (a_shape[-2], b_shape[-1])
        return [(tuple(int(d) for d in shape), zy.dtype if zy is not None else a.dtype)]

    return infer


def _qmatmul_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    a = inputs[0]
    assert a is not None
    k = a.shape[0] if attrs.get("transA", 0) else a.shape[-1]
    return 2 * int(np.prod(outputs[0])) * int(k)


def qlinear_matmul(ins: Sequence[np.ndarray | None], attrs: Attrs, gemm: bool) -> np.ndarray:
    """QGemm / QLinearMatMul by rules 1-3 (per-column weight scales and zero points)."""
    a, sa, za, b, sb, zb, c, sy, zy = _qgemm_parts(ins, attrs, gemm)
    if gemm and attrs.get("transA", 0):
        a = a.T
    if gemm and attrs.get("transB", 0):
        b = b.T
    a_shift = a.astype(np.int32) - scalar_of(za)
    b_zero_points = np.asarray(zb if zb is not None else 0, np.int32).reshape(-1)
    b_shift = b.astype(np.int32) - (b_zero_points if b_zero_points.size > 1 else b_zero_points[0])
    acc = int_matmul(a_shift, b_shift)
    if c is not None:
        acc = acc + c.astype(np.int32)
    alpha = F32(attrs.get("alpha", 1.0))
    multiplier = channel_multiplier(sa, sb, sy) * alpha
    dtype = zy.dtype if zy is not None else a.dtype
    return requantize(acc, multiplier if multiplier.size > 1 else multiplier.reshape(()), scalar_of(zy), dtype, attrs)


register(
    "QGemm",
    infer=_qmatmul_infer(True),
    reference=lambda ins, a: [qlinear_matmul(ins, a, gemm=True)],
    flops=_qmatmul_flops,
    inputs=(9, 9),
)
register(
    "QLinearMatMul",
    infer=_qmatmul_infer(False),
    reference=lambda ins, a: [qlinear_matmul(ins, a, gemm=False)],
    flops=_qmatmul_flops,
    inputs=(8, 8),
)


# --- QLinearAdd: a, sa, za, b, sb, zb, sy, zy ------------------------------------------------

def _qadd_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b, zy = inputs[0], inputs[3], inputs[7]
    assert a is not None and b is not None
    shape = tuple(int(d) for d in np.broadcast_shapes(a.shape, b.shape))
    return [(shape, zy.dtype if zy is not None else a.dtype)]


def fma32(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """float32(x * y + z) rounded once, as a fused multiply-add, for float32 operands."""
    product = np.asarray(x, F32).astype(np.float64) * np.asarray(y, F32).astype(np.float64)  # exact
    addend = np.asarray(z, F32).astype(np.float64)
    total = product + addend
    # total + error == product + addend exactly (Knuth's TwoSum); only a float32 tie needs the error.
    back = total - product
    error = (product - (total - back)) + (addend - back)
    rounded = total.astype(F32)
    offset = total - rounded.astype(np.float64)
    other = np.nextafter(rounded, np.where(offset > 0, F32(np.inf), F32(-np.inf)).astype(F32))
    tie = (offset != 0) & (other.astype(np.float64) - total == offset)
    return np.where(tie & (error != 0) & (np.sign(error) == np.sign(offset)), other, rounded).astype(F32)


def _broadcast_side(a_shape: Shape, b_shape: Shape, out_shape: Shape) -> str:
    """Which input onnxruntime treats as a scalar per innermost span: "a", "b" or "" (neither)."""
    rank = len(out_shape)
    a_full = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b_full = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    for axis in reversed(range(rank)):
        if out_shape[axis] != 1:
            return "a" if a_full[axis] == 1 else "b" if b_full[axis] == 1 else ""
    return "a"


def qlinear_add(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """QLinearAdd by rule 4."""
    a, sa, za, b, sb, zb, sy, zy = ins[:8]
    ratio_a = F32(np.asarray(sa, F32).reshape(())) / F32(np.asarray(sy, F32).reshape(()))
    ratio_b = F32(np.asarray(sb, F32).reshape(())) / F32(np.asarray(sy, F32).reshape(()))
    fixed = F32(scalar_of(zy)) - fma32(ratio_a, F32(scalar_of(za)), F32(ratio_b * F32(scalar_of(zb))))
    fa, fb = a.astype(F32), b.astype(F32)
    side = _broadcast_side(a.shape, b.shape, tuple(np.broadcast_shapes(a.shape, b.shape)))
    if side == "a":
        v = fma32(fb, ratio_b, (fixed + (fa * ratio_a).astype(F32)).astype(F32))
    elif side == "b":
        v = fma32(fa, ratio_a, (fixed + (fb * ratio_b).astype(F32)).astype(F32))
    else:
        v = fma32(fa, ratio_a, fma32(fb, ratio_b, fixed))
    dtype = zy.dtype if zy is not None else a.dtype
    low, high = qrange(dtype, attrs)
    return np.clip(np.rint(v), low, high).astype(dtype)


register("QLinearAdd", infer=_qadd_infer, reference=lambda ins, a: [qlinear_add(ins, a)], inputs=(8, 8))


# --- average pools: x, sx, zx, sy, zy --------------------------------------------------------

def _qpool_infer(global_pool: bool):
    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        x, zy = inputs[0], inputs[4]
        assert x is not None
        out_hw = (1, 1) if global_pool else window(attrs, x.shape[2:]).out_hw
        return [((x.shape[0], x.shape[1], *out_hw), zy.dtype if zy is not None else x.dtype)]

    return infer


def pool_multiplier(x_scale: np.ndarray, y_scale: np.ndarray, count: np.ndarray | int) -> np.ndarray:
    """float32(sx / float32(sy * n)) for each divisor count n."""
    sy_n = (F32(np.asarray(y_scale, F32).reshape(())) * np.asarray(count, F32)).astype(F32)
    return (F32(np.asarray(x_scale, F32).reshape(())) / sy_n).astype(F32)


def qlinear_average_pool(ins: Sequence[np.ndarray | None], attrs: Attrs, global_pool: bool) -> np.ndarray:
    """QLinearAveragePool / QLinearGlobalAveragePool by rule 5."""
    x, sx, zx, sy, zy = ins[:5]
    x_zp = scalar_of(zx)
    dtype = zy.dtype if zy is not None else x.dtype
    shifted = x.astype(np.int32) - x_zp
    win = None if global_pool else window(attrs, x.shape[2:])
    if win is None or (tuple(win.kernel) == tuple(x.shape[2:]) and not any(win.pads)):
        acc = shifted.sum(axis=(2, 3), keepdims=True, dtype=np.int32)
        return requantize(acc, pool_multiplier(sx, sy, x.shape[2] * x.shape[3]), scalar_of(zy), dtype, attrs)
    values = (F32(np.asarray(sx, F32).reshape(())) * shifted.astype(F32)).astype(F32)
    windows = patches(values, win, pad_value=0.0)  # a padded 0 added in order changes no float sum
    total = np.zeros(windows.shape[:4], F32)
    for i in range(windows.shape[4]):
        for j in range(windows.shape[5]):
            total = (total + windows[..., i, j]).astype(F32)
    if attrs.get("count_include_pad", 0):
        count = np.full(win.out_hw, F32(win.kernel[0] * win.kernel[1]))
    else:
        count = average_divisor(win, x.shape[2:], False).astype(F32)
    average = (total / count).astype(F32)
    low, high = qrange(dtype, attrs)
    y = np.rint(((average / F32(np.asarray(sy, F32).reshape(()))).astype(F32) + F32(scalar_of(zy))).astype(F32))
    return np.clip(y, low, high).astype(dtype)


register(
    "QLinearGlobalAveragePool",
    infer=_qpool_infer(True),
    reference=lambda ins, a: [qlinear_average_pool(ins, a, global_pool=True)],
    inputs=(5, 5),
)
register(
    "QLinearAveragePool",
    infer=_qpool_infer(False),
    reference=lambda ins, a: [qlinear_average_pool(ins, a, global_pool=False)],
    inputs=(5, 5),
)


# --- QLinearConcat: sy, zy, (x, sx, zx)... ---------------------------------------------------

def _qconcat_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    from hetero.ir.ops.tensor import _concat_infer

    zy = inputs[1]
    shape = _concat_infer(list(inputs[2::3]), attrs)[0][0]
    assert zy is not None
    return [(shape, zy.dtype)]


def requantize_tensor(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, y_scale: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """Rule 6: one tensor moved to another scale and zero point."""
    same = np.asarray(scale, F32).reshape(()) == np.asarray(y_scale, F32).reshape(()) and scalar_of(zero_point) == scalar_of(y_zero_point)
    if same and q.dtype == y_zero_point.dtype:
        return q
    value = ((q.astype(np.int32) - scalar_of(zero_point)).astype(F32) * F32(np.asarray(scale, F32).reshape(()))).astype(F32)
    y = np.rint(value / F32(np.asarray(y_scale, F32).reshape(()))) + F32(scalar_of(y_zero_point))
    info = np.iinfo(y_zero_point.dtype)
    return np.clip(y, info.min, info.max).astype(y_zero_point.dtype)


def qlinear_concat(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """QLinearConcat by rule 6."""
    sy, zy = ins[0], ins[1]
    parts = [requantize_tensor(ins[i], ins[i + 1], ins[i + 2], sy, zy) for i in range(2, len(ins), 3)]
    return np.concatenate(parts, axis=int(attrs["axis"]))


register(
    "QLinearConcat",
    infer=_qconcat_infer,
    reference=lambda ins, a: [qlinear_concat(ins, a)],
    flops=lambda i, o, a: 0,
    inputs=(5, 1 << 16),
)


# --- QLinearMul: a, sa, za, b, sb, zb, sy, zy -------------------------------------------------

def qlinear_mul(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """QLinearMul by rule 7."""
    a, sa, za, b, sb, zb, sy, zy = ins[:8]
    va = (F32(np.asarray(sa, F32).reshape(())) * (a.astype(np.int32) - scalar_of(za)).astype(F32)).astype(F32)
    vb = (F32(np.asarray(sb, F32).reshape(())) * (b.astype(np.int32) - scalar_of(zb)).astype(F32)).astype(F32)
    v = ((va * vb).astype(F32) / F32(np.asarray(sy, F32).reshape(()))).astype(F32)
    dtype = zy.dtype if zy is not None else a.dtype
    low, high = qrange(dtype, attrs)
    return np.clip(np.rint(v) + F32(scalar_of(zy)), low, high).astype(dtype)


register("QLinearMul", infer=_qadd_infer, reference=lambda ins, a: [qlinear_mul(ins, a)], inputs=(8, 8))
