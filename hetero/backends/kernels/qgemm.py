"""Integer matrix products of the kernel backends: QLinearConv, QGemm and QLinearMatMul, bit for
bit with rules 1-3 of hetero/ops/qlinear.py, and the parameter helpers the other int ops share.

Constant weights are packed once on the host into int32 words of four signed bytes (uint8
shifted by 128) with their row sums; activations are packed on the device, and the product
runs on DOT4 (CUDA __dp4a) or a vendor int8 GEMM, zero points corrected afterwards. Thin
convolutions (depthwise), few-row products and products with a non-constant weight run on
plain int8/uint8 kernels. Every multiplier is computed on the host by the reference's own
numpy functions, so the device only accumulates, multiplies once, rounds and saturates.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import (
    ROW_LOCAL,
    TILE,
    TILE_THREADS,
    KernelDevice,
    broadcast_strides,
    f32,
    i32,
    round_up,
)
from hetero.backends.kernels.ops import batch_offsets, conv_geometry
from hetero.backends.kernels.qcpu import qconv_cpu, qgemm_cpu
from hetero.ir.graph import Op
from hetero.ir.ops.qlinear import channel_multiplier, qrange

Fn = Callable[[KernelDevice, Op, Sequence[Buffer]], list[Buffer]]
Q8 = ("int8", "uint8")
F = np.float32


def const_input(op: Op, index: int) -> Any:
    """The constant input at ``index`` as an ndarray (None when absent)."""
    name = op.inputs[index] if index < len(op.inputs) else ""
    return op.weights[name] if name else None


def scalar(array: np.ndarray | None) -> int:
    """A per-tensor integer parameter (0 when absent)."""
    return 0 if array is None else int(np.asarray(array).reshape(-1)[0])


def scalar_f32(array: np.ndarray | None) -> np.float32:
    """A per-tensor float32 parameter."""
    return F(np.asarray(array, F).reshape(()))


def signed(dtype: Any) -> np.int32:
    """The kernels' signedness flag: 1 for int8, 0 for uint8."""
    return i32(str(dtype) == "int8")


def per_channel(values: np.ndarray | None, count: int, dtype: Any) -> np.ndarray:
    """A per-tensor or per-channel parameter expanded to ``count`` entries."""
    array = np.zeros(1, dtype) if values is None else np.asarray(values).reshape(-1).astype(dtype)
    return np.ascontiguousarray(np.broadcast_to(array, (count,)))


def saturation(op: Op) -> tuple[np.float32, np.float32]:
    """The output's [qmin, qmax] as kernel float arguments."""
    low, high = qrange(op.output_specs[0].dtype, op.attrs)
    return f32(low), f32(high)


def shift_bytes(values: np.ndarray, sgn: bool) -> np.ndarray:
    """int8/uint8 values as the signed bytes of the packed path (uint8 v -> v - 128)."""
    return values.astype(np.int32) - (0 if sgn else 128)


def pack_rows(values: np.ndarray, sgn: bool) -> tuple[np.ndarray, np.ndarray]:
    """A rows x K int8/uint8 matrix as rows x K4 int32 words of shifted bytes, and its row sums."""
    shifted = shift_bytes(values, sgn)
    rows, k = shifted.shape
    k4 = -(-k // 4)
    padded = np.zeros((rows, 4 * k4), np.int8)
    padded[:, :k] = shifted
    return padded.view("<i4").copy(), shifted.sum(axis=1).astype(np.int32)


# --- QLinearConv ------------------------------------------------------------------------------------

def qconv(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    values = dev.operands(op, inputs) + [None]
    x, w = values[0], values[3]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    n, m, ho, wo = spec.shape
    geometry = dev.host_value(op, "geometry", lambda: conv_geometry(op, x.shape, w.shape))
    group = int(geometry[-1])
    mg, k = m // group, int(np.prod(w.shape[1:]))
    scales = (const_input(op, 1), const_input(op, 4), const_input(op, 6))
    mult = dev.constant(op, "mult", lambda: per_channel(channel_multiplier(*scales), m, F))
    bias_name = op.inputs[8] if len(op.inputs) > 8 else ""
    bias = values[8] if bias_name else dev.dummy
    zx, zy, (lo, hi) = scalar(const_input(op, 2)), f32(scalar(const_input(op, 7))), saturation(op)
    out = (bias, i32(bool(bias_name)), mult, zy, lo, hi, y)
    if dev.cpu_style and op.inputs[3] in op.weights and (not bias_name or bias_name in op.weights):
        zero_points = dev.host_value(op, "zw_rows", lambda: per_channel(const_input(op, 5), m, np.int32))
        host_mult = dev.host_value(op, "mult_host", lambda: per_channel(channel_multiplier(*scales), m, F))
        host_bias = op.weights[bias_name].astype(np.int32).reshape(-1) if bias_name else None
        qconv_cpu(dev, op, x, geometry, zx, zero_points, host_mult, host_bias, (zy, lo, hi, y))
        return [y]
    if dev.int8_gemm == "packed" and op.inputs[3] in op.weights and mg >= 8 and k >= 8:
        _qconv_packed(dev, op, x, geometry, (n, m, ho * wo, mg, k), zx, out)
        return [y]
    zw = dev.constant(op, "zw", lambda: per_channel(const_input(op, 5), m, np.int32))
    args = (x, signed(x.dtype), i32(zx), w, signed(w.dtype), zw, *out[:2], mult, zy, lo, hi, y, *geometry)
    dev.launch("qconv", "qconv_direct", (round_up(ho * wo, ROW_LOCAL), m, n), (ROW_LOCAL, 1, 1), *args)
    return [y]


def _qconv_packed(dev: KernelDevice, op: Op, x: Buffer, geometry: tuple[np.int32, ...],
                  dims: tuple[int, int, int, int, int], zx: int, out: tuple[Any, ...]) -> None:
    n, m, p, mg, k = dims
    group = int(geometry[-1])
    k4 = -(-k // 4)
    weights = const_input(op, 3)
    assert weights is not None
    w_sgn = weights.dtype == np.int8
    packed = dev.host_value(op, "wpack", lambda: pack_rows(weights.reshape(m, k), w_sgn))
    wpk = dev.constant(op, "wpk", lambda: packed[0])
    wsum = dev.constant(op, "wsum", lambda: packed[1])
    zw = dev.constant(op, "zw_shifted", lambda: shift_bytes(per_channel(const_input(op, 5), m, np.int32), w_sgn))
    x_sgn = str(x.dtype) == "int8"
    xpk = dev.empty((n * group * p * k4,), np.int32)
    xsum = dev.empty((n * group * p,), np.int32)
    c, h, wd, _, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, _ = geometry
    dev.launch("qgemm", "pack_patches_q8", (ROW_LOCAL * p, n * group), (ROW_LOCAL, 1), x, i32(x_sgn), i32(zx), xpk,
               xsum, i32(k4), c, h, wd, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, i32(group))
    zx_shifted = i32(zx - (0 if x_sgn else 128))
    bias, has_bias, mult, zy, lo, hi, y = out
    raw = dev.int8_gemm_raw(wpk, xpk, m, p, k4) if group == 1 and n == 1 else None
    if raw is not None:
        dev.launch_1d("qgemm", "qconv_epilogue", m * p, raw, wsum, zw, xsum, zx_shifted, i32(m), i32(p), i32(k),
                      bias, has_bias, mult, zy, lo, hi, y, i32(m * p))
        return
    gsize = (round_up(p, TILE) // 4, round_up(mg, TILE) // 4, n * group)
    dev.launch("qgemm", "qconv_packed", gsize, (TILE_THREADS, TILE_THREADS, 1), wpk, wsum, zw, xpk, xsum, zx_shifted,
               i32(mg), i32(p), i32(k4), i32(k), i32(group), bias, has_bias, mult, zy, lo, hi, y)


# --- QGemm and QLinearMatMul ------------------------------------------------------------------------

def _qmatmul_parts(op: Op, gemm: bool) -> dict[str, Any]:
    names = ("a", "sa", "za", "b", "sb", "zb", *(("c",) if gemm else ()), "sy", "zy")
    return {key: index for index, key in enumerate(names)}


def _qmatmul(gemm: bool) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        at = _qmatmul_parts(op, gemm)
        ops = dev.operands(op, inputs) + [None] * 9
        a, b, c = ops[at["a"]], ops[at["b"]], (ops[at["c"]] if gemm else None)
        trans_a = gemm and bool(op.attrs.get("transA", 0))
        trans_b = gemm and bool(op.attrs.get("transB", 0))
        spec = op.output_specs[0]
        y = dev.empty(spec.shape, spec.dtype)
        n_cols = spec.shape[-1]
        k = int(a.shape[0] if trans_a else a.shape[-1])

        def multiplier() -> np.ndarray:
            base = channel_multiplier(const_input(op, at["sa"]), const_input(op, at["sb"]), const_input(op, at["sy"]))
            return per_channel(base * F(op.attrs.get("alpha", 1.0)) if gemm else base, n_cols, F)

        mult = dev.constant(op, "mult", multiplier)
        host_mult = dev.host_value(op, "mult_host", multiplier)
        za, zy, (lo, hi) = scalar(const_input(op, at["za"])), f32(scalar(const_input(op, at["zy"]))), saturation(op)
        rows = int(np.prod(spec.shape[:-1], dtype=np.int64))
        if c is None:
            bias: tuple[Any, ...] = (dev.dummy, i32(0), i32(0), i32(0))
        else:
            scm, scn = broadcast_strides(c.shape, (rows, n_cols))
            bias = (c, i32(1), i32(scm), i32(scn))
        tail = (mult, zy, lo, hi, y)
        b_const = op.inputs[at["b"]] in op.weights and b.ndim == 2
        m = int(a.shape[1] if trans_a else a.shape[-2])
        if dev.cpu_style and b_const and not trans_a:
            weights = op.weights[op.inputs[at["b"]]]
            zero_points = dev.host_value(op, "zb_cols", lambda: per_channel(const_input(op, at["zb"]), n_cols, np.int32))
            qgemm_cpu(dev, op, a, (rows, n_cols, k), weights.T if trans_b else weights, zero_points, za, host_mult, bias,
                      tail[1:])
            return [y]
        if dev.int8_gemm == "packed" and b_const and m > 4:
            _qgemm_packed(dev, op, a, (rows, n_cols, k), trans_a, trans_b, za, at["zb"], bias, tail)
            return [y]
        zb = dev.constant(op, "zb", lambda: per_channel(const_input(op, at["zb"]), n_cols, np.int32))
        a_shape = tuple(a.shape[::-1]) if trans_a else tuple(a.shape)
        b_shape = tuple(b.shape[::-1]) if trans_b else tuple(b.shape)
        table = dev.constant(op, "offsets", lambda: batch_offsets(a_shape, b_shape, m, n_cols, k))
        strides = ((1, m) if trans_a else (k, 1)) + ((1, k) if trans_b else (n_cols, 1))
        batch = table.size // 2
        args = (a, signed(a.dtype), i32(za), b, signed(b.dtype), zb, table, i32(m), i32(n_cols), i32(k),
                *(i32(s) for s in strides), *bias, *tail)
        if m <= 4:
            dev.launch("qgemm", "qmatvec", (round_up(n_cols, 64), m, batch), (64, 1, 1), *args)
        else:
            gsize = (round_up(n_cols, TILE) // 4, round_up(m, TILE) // 4, batch)
            dev.launch("qgemm", "qmatmul_tiled", gsize, (TILE_THREADS, TILE_THREADS, 1), *args)
        return [y]

    return run


def _qgemm_packed(dev: KernelDevice, op: Op, a: Buffer, dims: tuple[int, int, int], trans_a: bool, trans_b: bool,
                  za: int, zb_index: int, bias: tuple[Any, ...], tail: tuple[Any, ...]) -> None:
    rows, n_cols, k = dims
    weights = op.weights[op.inputs[3]]
    w_sgn = weights.dtype == np.int8
    packed = dev.host_value(op, "wpack", lambda: pack_rows(weights if trans_b else weights.T, w_sgn))
    wpk = dev.constant(op, "wpk", lambda: packed[0])
    wsum = dev.constant(op, "wsum", lambda: packed[1])
    zero_points = const_input(op, zb_index)
    zw = dev.constant(op, "zw_shifted", lambda: shift_bytes(per_channel(zero_points, n_cols, np.int32), w_sgn))
    k4 = -(-k // 4)
    a_sgn = str(a.dtype) == "int8"
    apk = dev.empty((rows * k4,), np.int32)
    asum = dev.empty((rows,), np.int32)
    srow, sk = (1, rows) if trans_a else (k, 1)
    dev.launch("qgemm", "pack_rows_q8", (ROW_LOCAL * rows, 1), (ROW_LOCAL, 1), a, i32(a_sgn), apk, asum,
               i32(rows), i32(k), i32(k4), i32(srow), i32(sk), i32(0))
    za_shifted = i32(za - (0 if a_sgn else 128))
    raw = dev.int8_gemm_raw(apk, wpk, rows, n_cols, k4)
    if raw is not None:
        dev.launch_1d("qgemm", "qgemm_epilogue", rows * n_cols, raw, asum, za_shifted, wsum, zw, i32(rows),
                      i32(n_cols), i32(k), *bias, *tail, i32(rows * n_cols))
        return
    gsize = (round_up(n_cols, TILE) // 4, round_up(rows, TILE) // 4, 1)
    dev.launch("qgemm", "qgemm_packed", gsize, (TILE_THREADS, TILE_THREADS, 1), apk, asum, za_shifted, wpk, wsum, zw,
               i32(rows), i32(n_cols), i32(k4), i32(k), *bias, *tail)


def params_constant(op: Op, activations: Sequence[int]) -> bool:
    """Every input but the listed activation positions is a constant (or absent)."""
    return all(not t or t in op.weights for i, t in enumerate(op.inputs) if i not in activations)


def int8_io(op: Op, *positions: int) -> bool:
    """The inputs at ``positions`` and the output are int8 or uint8."""
    specs = op.input_specs
    return all(specs[p] is not None and specs[p].dtype in Q8 for p in positions) and op.output_specs[0].dtype in Q8


def _qmatmul_ok(op: Op, gemm: bool) -> bool:
    at = _qmatmul_parts(op, gemm)
    scales = np.asarray(op.weights.get(op.inputs[at["sb"]], np.zeros(1))).size
    activations = (0, 3, 6) if gemm else (0, 3)
    return int8_io(op, 0, 3) and params_constant(op, activations) and scales in (1, op.output_specs[0].shape[-1])


KERNELS: dict[str, Fn] = {"QLinearConv": qconv, "QGemm": _qmatmul(True), "QLinearMatMul": _qmatmul(False)}
CONDITIONS: dict[str, Callable[[Op], bool]] = {
    "QLinearConv": lambda op: int8_io(op, 0, 3) and params_constant(op, (0, 3, 8)) and len(op.input_specs[0].shape) == 4,
    "QGemm": lambda op: _qmatmul_ok(op, True),
    "QLinearMatMul": lambda op: _qmatmul_ok(op, False),
}
