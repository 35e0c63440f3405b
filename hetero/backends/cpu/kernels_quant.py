"""Integer op kernels of the CPU backend: exact QLinear* ops and (de)quantization.

The int8 products go through ``cpu_gemm.qgemm`` (AVX-512 VNNI where present) on im2row
patches padded with the input zero point; depthwise convolutions use a direct channels-last
int32 kernel.
Requantization follows hetero.ir.ops.qlinear's rules 2-6 bit for bit (see cpu_kernels_int8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hetero.backends.cpu import gemm as cpu_gemm
from hetero.backends.cpu import kernels as k
from hetero.backends.cpu import kernels_int8 as q
from hetero.backends.base import Device
from hetero.backends.cpu.kernels_float import Kernel, geometry, is_depthwise, reference
from hetero.ir.graph import Op
from hetero.ir.ops.nn import Window, window
from hetero.ir.ops.pool import average_divisor
from hetero.ir.ops.qlinear import channel_multiplier, pool_multiplier, qrange

F32 = np.float32


def scalar(a: np.ndarray | None, default: int = 0) -> int:
    """The single value of a per-tensor parameter."""
    return default if a is None else int(np.asarray(a).reshape(-1)[0])


def per_channel(a: np.ndarray | None, n: int, dtype: type) -> np.ndarray:
    """A per-tensor or per-channel parameter as a contiguous (n,) array (zeros when absent).

    Always a fresh writable array, so numba sees one array type whatever the weights' flags.
    """
    if a is None:
        return np.zeros(n, dtype)
    return np.array(np.broadcast_to(np.asarray(a).reshape(-1), (n,)), dtype)  # an owned, writable copy


@dataclass(frozen=True)
class Requant:
    """Rules 2-3 constants: per-channel multipliers, output zero point, bounds, type."""

    mult: np.ndarray  # float32 (channels,)
    zy: np.float32
    lo: np.float32
    hi: np.float32
    dtype: np.dtype

    @classmethod
    def of(cls, op: Op, mult: np.ndarray, channels: int, zy: np.ndarray | None) -> "Requant":
        dtype = np.dtype(op.output_specs[0].dtype)
        lo, hi = qrange(dtype, op.attrs)
        return cls(per_channel(mult, channels, F32), F32(scalar(zy)), F32(lo), F32(hi), dtype)

    @property
    def tail(self) -> tuple[Any, ...]:
        return self.zy, self.lo, self.hi


# --- QLinearConv --------------------------------------------------------------------------


@dataclass(frozen=True)
class QConvPlan:
    """A QLinearConv prepared: packed weights per group, or shifted int32 depthwise taps."""

    win: Window
    group: int
    x_zp: int
    packed: tuple[cpu_gemm.PackedB, ...]
    w_zp: tuple[np.ndarray | int, ...]  # per group: per-column zero points, or one int
    taps: np.ndarray | None  # depthwise: (kh, kw, M) int32, w - zw
    bias: np.ndarray  # int32 (M,)
    rq: Requant


def _qconv_plan(op: Op, args: Sequence[Any]) -> QConvPlan:
    x, sx, zx, w, sw, zw, sy, zy = args[:8]
    b = args[8] if len(args) > 8 else None
    m, group = w.shape[0], int(op.attrs.get("group", 1))
    win = window(op.attrs, x.shape[2:], w.shape[2:])
    zw_all = per_channel(zw, m, np.int32)
    taps, packed, zps = None, [], []
    if is_depthwise(op, w.shape):
        taps = np.ascontiguousarray((w[:, 0].astype(np.int32) - zw_all.reshape(-1, 1, 1)).transpose(1, 2, 0))
    else:
        mg = m // group
        for g in range(group):
            taps_last = w[g * mg : (g + 1) * mg].transpose(0, 2, 3, 1).reshape(mg, -1)  # K ordered (i, j, c)
            packed.append(cpu_gemm.pack_weights(np.ascontiguousarray(taps_last.T)))
            zg = zw_all[g * mg : (g + 1) * mg]
            zps.append(int(zg[0]) if np.all(zg == zg[0]) else np.ascontiguousarray(zg))
    rq = Requant.of(op, channel_multiplier(sx, sw, sy), m, zy)
    bias = per_channel(b, m, np.int32)
    return QConvPlan(win, group, scalar(zx), tuple(packed), tuple(zps), taps, bias, rq)


def qlinear_conv(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearConv: im2row + exact int8 GEMM + transposing requantizer; depthwise direct."""
    args = op.arguments(activations)
    plan: QConvPlan = device.prepared(op, lambda: _qconv_plan(op, args))
    x = np.ascontiguousarray(args[0])
    n, c = x.shape[:2]
    out = np.empty(op.output_specs[0].shape, plan.rq.dtype)
    m, (ho, wo) = out.shape[1], plan.win.out_hw
    kh, kw, sh, sw, dh, dw, pt, pl = geometry(plan.win)
    rq = plan.rq
    h, w = x.shape[2:]
    if plan.taps is not None:  # depthwise, channels last: int32 sums vectorised over channels
        xt, yt = np.empty((h, w, m), x.dtype), np.empty((ho, wo, m), rq.dtype)
        for i in range(n):
            k.to_hwc(x[i], m // c, xt)
            q.depthwise_q(xt, np.int32(plan.x_zp), plan.taps, plan.bias, rq.mult, sh, sw, dh, dw, pt, pl, *rq.tail, yt)
            k.to_chw(yt, out[i])
        return [out]
    cg, mg = c // plan.group, m // plan.group
    xt = np.empty((h, w, c), x.dtype)
    pointwise = plan.group == 1 and plan.win.kernel == (1, 1) and plan.win.strides == (1, 1) and not any(plan.win.pads)
    rows = xt.reshape(h * w, c) if pointwise else np.empty((ho * wo, kh * kw * cg), x.dtype)
    pad = x.dtype.type(plan.x_zp)
    for i in range(n):
        k.to_hwc(x[i], 1, xt)
        image = out[i].reshape(m, ho * wo)
        for g in range(plan.group):
            if not pointwise:
                k.im2row(xt, g * cg, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, pad, rows)
            acc = cpu_gemm.qgemm(rows, plan.x_zp, plan.packed[g], plan.w_zp[g])
            q.requant_transposed(acc, g * mg, plan.bias, rq.mult, *rq.tail, image)
    return [out]


# --- QGemm and QLinearMatMul --------------------------------------------------------------


def _matmul_parts(args: list[Any], gemm: bool) -> list[Any]:
    """a, sa, za, b, sb, zb, c, sy, zy of QGemm (c optional) or QLinearMatMul (no c)."""
    if gemm:
        return (args + [None] * 9)[:9]
    return args[:6] + [None] + args[6:8]


def qmatmul(gemm: bool) -> Kernel:
    """QGemm (gemm=True) or QLinearMatMul: exact int8 GEMM (per batch when b is batched), rules 2-3."""

    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, sa, za, b, sb, zb, c, sy, zy = _matmul_parts(op.arguments(activations), gemm)
        if gemm and op.attrs.get("transA", 0):
            a = a.T
        if gemm and op.attrs.get("transB", 0):
            b = b.T
        spec = op.output_specs[0]
        n_cols, batch = spec.shape[-1], spec.shape[:-2]

        def make() -> tuple[Requant, np.ndarray | int, dict[tuple[int, ...], cpu_gemm.PackedB]]:
            mult = channel_multiplier(sa, sb, sy) * F32(op.attrs.get("alpha", 1.0))
            zb_cols = per_channel(zb, n_cols, np.int32)
            zb_arg = int(zb_cols[0]) if np.all(zb_cols == zb_cols[0]) else zb_cols
            return Requant.of(op, mult, n_cols, zy), zb_arg, {}

        rq, zb_arg, packs = device.prepared(op, make)
        const_b = op.inputs[3] in op.weights

        def packed(index: tuple[int, ...], matrix: np.ndarray) -> cpu_gemm.PackedB:
            if const_b and index in packs:
                return packs[index]
            result = cpu_gemm.pack_weights(np.ascontiguousarray(matrix))
            if const_b:
                packs[index] = result
            return result

        bias, full_bias = np.zeros(n_cols, np.int32), None
        if c is not None and c.ndim >= 1 and c.size == n_cols and c.shape[-1] == n_cols:
            bias = np.array(c.reshape(-1), np.int32)
        elif c is not None:
            full_bias = np.broadcast_to(np.asarray(c, np.int32), spec.shape)
        out = np.empty(spec.shape, rq.dtype)
        if b.ndim == 2:  # one weight matrix: every row of every batch in one GEMM
            acc = cpu_gemm.qgemm(np.ascontiguousarray(a).reshape(-1, a.shape[-1]), scalar(za), packed((), b), zb_arg)
            if full_bias is not None:
                acc = acc + full_bias
            q.requant_rows(acc, bias, rq.mult, *rq.tail, out.reshape(-1, n_cols))
            return [out]
        a_all = np.broadcast_to(a, batch + a.shape[-2:])
        b_all = np.broadcast_to(b, batch + b.shape[-2:])
        for index in np.ndindex(*batch):
            acc = cpu_gemm.qgemm(np.ascontiguousarray(a_all[index]), scalar(za), packed(index, b_all[index]), zb_arg)
            q.requant_rows(acc, bias, rq.mult, *rq.tail, out[index])
        return [out]

    return kernel


# --- QLinearAdd, pools, concat ------------------------------------------------------------


def _ratio(scale: np.ndarray, y_scale: np.ndarray) -> np.float32:
    return F32(np.asarray(scale, F32).reshape(())) / F32(np.asarray(y_scale, F32).reshape(()))


def qlinear_add(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearAdd by rule 4 (fused multiply-adds) over a broadcast of the two inputs."""
    a, sa, za, b, sb, zb, sy, zy = op.arguments(activations)[:8]
    spec = op.output_specs[0]

    def make() -> tuple[Any, int, tuple[np.float32, ...], Requant]:
        plan = k.broadcast_plan(tuple(a.shape), tuple(b.shape), spec.shape)
        side = q.SIDE_NONE  # which input is constant along the innermost output span (rule 4)
        if plan is not None:
            side = q.SIDE_A if plan[1][3] == 0 else q.SIDE_B if plan[2][3] == 0 else q.SIDE_NONE
        ra, rb = _ratio(sa, sy), _ratio(sb, sy)
        fixed = q.qadd_fixed(ra, F32(scalar(za)), rb, F32(scalar(zb)), F32(scalar(zy)))
        return plan, side, (ra, rb, F32(fixed)), Requant.of(op, np.ones(1, F32), 1, zy)

    plan, side, constants, rq = device.prepared(op, make)
    if plan is None or 0 in spec.shape:
        return reference(op, activations)
    out = np.empty(spec.shape, rq.dtype)
    a, b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    q.qadd(a, b, *plan, side, *constants, rq.lo, rq.hi, out.reshape(-1))
    return [out]


def _integer_pool(x: np.ndarray, sx: np.ndarray, zx: np.ndarray | None, sy: np.ndarray, rq: Requant,
                  shape: tuple[int, ...]) -> np.ndarray:
    """Rule 5's integer path: the whole (H, W) image of each (n, c) is one window."""
    x = np.ascontiguousarray(x)
    mult = F32(pool_multiplier(sx, sy, x.shape[2] * x.shape[3]))
    out = np.empty(shape, rq.dtype)
    q.qglobal_pool(x.reshape(x.shape[0] * x.shape[1], -1), np.int32(scalar(zx)), mult, *rq.tail, out.reshape(-1))
    return out


def qlinear_global_average_pool(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearGlobalAveragePool by rule 5 (integer sums)."""
    x, sx, zx, sy, zy = op.arguments(activations)[:5]
    rq = device.prepared(op, lambda: Requant.of(op, np.ones(1, F32), 1, zy))
    return [_integer_pool(x, sx, zx, sy, rq, op.output_specs[0].shape)]


def qlinear_average_pool(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearAveragePool by rule 5: integer sums when one window covers the image, else float32."""
    x, sx, zx, sy, zy = op.arguments(activations)[:5]

    def make() -> tuple[Window, bool, np.ndarray, Requant]:
        win = window(op.attrs, x.shape[2:])
        whole = tuple(win.kernel) == tuple(x.shape[2:]) and not any(win.pads)
        if op.attrs.get("count_include_pad", 0):
            count = np.full(win.out_hw, F32(win.kernel[0] * win.kernel[1]))
        else:
            count = average_divisor(win, x.shape[2:], False)
        return win, whole, np.ascontiguousarray(count, F32), Requant.of(op, np.ones(1, F32), 1, zy)

    win, whole, count, rq = device.prepared(op, make)
    if whole:
        return [_integer_pool(x, sx, zx, sy, rq, op.output_specs[0].shape)]
    out = np.empty(op.output_specs[0].shape, rq.dtype)
    q.qaverage_pool(np.ascontiguousarray(x), np.int32(scalar(zx)), *geometry(win), F32(np.asarray(sx).reshape(())),
                    count, F32(np.asarray(sy).reshape(())), *rq.tail, out)
    return [out]


def qlinear_concat(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearConcat by rule 6: each input copied or requantized into its slice of the output."""
    args = op.arguments(activations)
    sy, zy = args[0], args[1]
    spec = op.output_specs[0]
    dtype = np.dtype(spec.dtype)
    axis = int(op.attrs["axis"]) % len(spec.shape)
    outer = int(np.prod(spec.shape[:axis], dtype=np.int64))
    unit = int(np.prod(spec.shape[axis + 1 :], dtype=np.int64))
    out = np.empty(spec.shape, dtype)
    flat = out.reshape(outer, -1)
    info = np.iinfo(dtype)
    y_scale, y_zp = F32(np.asarray(sy, F32).reshape(())), scalar(zy)
    start = 0
    for i in range(2, len(args), 3):
        part, scale, zp = args[i], F32(np.asarray(args[i + 1], F32).reshape(())), scalar(args[i + 2])
        width = part.shape[axis] * unit
        src = np.ascontiguousarray(part).reshape(outer, width)
        dst = flat[:, start : start + width]
        if scale == y_scale and zp == y_zp and part.dtype == dtype:
            dst[...] = src
        else:
            q.requant_tensor(src, np.int32(zp), scale, y_scale, F32(y_zp), F32(info.min), F32(info.max), dst)
        start += width
    return [out]


# --- QuantizeLinear and DequantizeLinear ----------------------------------------------------


def _per_axis(x: np.ndarray, scale: np.ndarray, axis: int) -> tuple[np.ndarray, int]:
    """x viewed as (outer, C, inner) for a per-axis parameter of size C (C = 1 per tensor)."""
    if np.asarray(scale).size == 1:
        return x.reshape(1, 1, -1), 1
    a = axis % x.ndim
    outer = int(np.prod(x.shape[:a], dtype=np.int64))
    return x.reshape(outer, x.shape[a], -1), x.shape[a]


def quantize_linear(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QuantizeLinear: saturate(rint(x / s) + z) in float32."""
    args = op.arguments(activations) + [None]
    x, scale, zp = np.ascontiguousarray(args[0], F32), args[1], args[2]
    view, ch = _per_axis(x, scale, int(op.attrs.get("axis", 1)))
    dtype = np.dtype(op.output_specs[0].dtype)
    info = np.iinfo(dtype)
    out = np.empty(x.shape, dtype)
    q.quantize(view, per_channel(scale, ch, F32), per_channel(zp, ch, F32), F32(info.min), F32(info.max),
               out.reshape(view.shape))
    return [out]


def dequantize_linear(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """DequantizeLinear: float32(q - z) * s."""
    args = op.arguments(activations) + [None]
    x, scale, zp = np.ascontiguousarray(args[0]), args[1], args[2]
    view, ch = _per_axis(x, scale, int(op.attrs.get("axis", 1)))
    out = np.empty(x.shape, F32)
    q.dequantize(view, per_channel(scale, ch, F32), per_channel(zp, ch, np.int32), out.reshape(view.shape))
    return [out]


QUANT_KERNELS: dict[str, Kernel] = {
    "QLinearConv": qlinear_conv,
    "QGemm": qmatmul(gemm=True),
    "QLinearMatMul": qmatmul(gemm=False),
    "QLinearAdd": qlinear_add,
    "QLinearAveragePool": qlinear_average_pool,
    "QLinearGlobalAveragePool": qlinear_global_average_pool,
    "QLinearConcat": qlinear_concat,
    "QuantizeLinear": quantize_linear,
    "DequantizeLinear": dequantize_linear,
}
"""Integer kernels by op type."""
