"""int8 convolutions and GEMMs on AVX-512 VNNI (kernels/qvnni.cl) for PoCL on x86 CPUs that
have it, bit for bit with rules 1-3 of hetero/ops/qlinear.py.

Activations become unsigned bytes u (int8 + 128), four channels to a 32-bit word, spatially
padded with the shifted zero point zu; weights become ws = w - zw, which must fit a signed byte
(true for symmetric int8 weights and for uint8 weights around 128; other ops take the float32
kernels of kernels/qcpu.cl). The accumulator sum u ws - zu sum ws is exact in int32; the host
folds -zu sum ws (per output channel) into the bias.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import KernelDevice, i32, round_up
from hetero.ir.graph import Op

VQB, VQR = 16, 8  # output channels x pixels per work item (VQB, VQR in kernels/qvnni.cl)
PACK_LOCAL = 16  # work-group size of the activation packing, where there are enough rows
F = np.float32


def centered_bytes(weights: np.ndarray, zero_points: np.ndarray) -> np.ndarray | None:
    """w - zw per output channel (weights [M][...]) as int8, or None when a value leaves [-128, 127]."""
    shifted = weights.astype(np.int32) - zero_points.astype(np.int32).reshape((-1,) + (1,) * (weights.ndim - 1))
    if shifted.min(initial=0) < -128 or shifted.max(initial=0) > 127:
        return None
    return shifted.astype(np.int8)


def pack_weights(ws: np.ndarray, group: int) -> np.ndarray:
    """ws [M][Cg][kh][kw] int8 as int32 words [group][Mb][T][VQB], T = C4 x kh x kw steps (c4, a, b),
    word byte q = channel 4 c4 + q; channels past Cg and past each group's Mg are 0."""
    m, cg, kh, kw = ws.shape
    mg, c4 = m // group, -(-cg // 4)
    mb = -(-mg // VQB)
    padded = np.zeros((group, mb * VQB, c4 * 4, kh, kw), np.int8)
    padded[:, :mg, :cg] = ws.reshape(group, mg, cg, kh, kw)
    lanes = padded.reshape(group, mb, VQB, c4, 4, kh, kw).transpose(0, 1, 3, 5, 6, 2, 4)
    return np.ascontiguousarray(lanes).view("<i4").reshape(group, mb, c4 * kh * kw, VQB)


def corrected_bias(ws: np.ndarray, bias: np.ndarray | None, zu: int, group: int) -> np.ndarray:
    """bias - zu x sum ws per output channel, padded to [group][Mb * VQB] (int32)."""
    m = ws.shape[0]
    values = (0 if bias is None else bias.astype(np.int64)) - zu * ws.reshape(m, -1).astype(np.int64).sum(axis=1)
    return padded(np.asarray(values, np.int64).astype(np.int32), group, np.int32)


def padded(values: np.ndarray, group: int, dtype: Any) -> np.ndarray:
    """Per-channel values [M] as [group][Mb * VQB], each group's channels padded with 0."""
    mg = values.size // group
    mb = -(-mg // VQB)
    out = np.zeros((group, mb * VQB), dtype)
    out[:, :mg] = values.reshape(group, mg)
    return out.reshape(-1)


def pack_activation(dev: KernelDevice, x: Buffer, zu: int, layout: tuple[int, ...]) -> Buffer:
    """xq words of kernels/qvnni.cl; layout = (images, group, Cg, H, W, Hp, Wp, pt, pl, ximg, xc, xy, xx)."""
    images, group, cg, h, w, hp, wp, pt, pl, ximg, xc, xy, xx = layout
    c4 = -(-cg // 4)
    rows = images * group * c4 * hp
    xq = dev.empty((rows * wp,), np.uint32)
    local = PACK_LOCAL if rows >= 4 * PACK_LOCAL else 1
    dev.launch("qvnni", "pack_quads_u8", (round_up(rows, local),), (local,), x, i32(str(x.dtype) == "int8"), i32(zu),
               xq, *(i32(v) for v in (cg, group, c4, h, w, hp, wp, pt, pl, ximg, xc, xy, xx, rows)))
    return xq


def launch_product(dev: KernelDevice, op: Op, xq: Buffer, ws: np.ndarray, bias: np.ndarray | None, zu: int,
                   mult: np.ndarray, matrix: tuple[Any, int, int, int], tail: tuple[Any, ...], taps: Buffer,
                   shape: tuple[int, ...]) -> None:
    """qconv_vnni over xq: shape = (T, zplane, Wo, ry, rx, P, group, images, yimg, ym, yp);
    matrix = (buffer, on, bm, bp): a GEMM's bias matrix when on."""
    t, zplane, wo, ry, rx, p, group, images, yimg, ym, yp = shape
    m = ws.shape[0]
    mg = m // group
    mb = -(-mg // VQB)
    wq = dev.constant(op, "wvnni", lambda: pack_weights(ws, group))
    biasp = dev.constant(op, "bvnni", lambda: corrected_bias(ws, bias, zu, group))
    multp = dev.constant(op, "mvnni", lambda: padded(mult, group, F))
    blocks = -(-p // VQR)
    local = 16
    while local > 1 and blocks < 4 * local:
        local //= 2
    buffer, on, bm, bp = matrix
    args = (xq, wq, biasp, buffer, i32(2 if on else 1), multp, *tail, taps, *(i32(v) for v in (
        t, zplane, wo, ry, rx, p, mg, mb, group, yimg, ym, yp, bm, bp)))
    dev.launch("qvnni", "qconv_vnni", (round_up(blocks, local), mb, images * group), (local, 1, 1), *args)


def conv_taps(c4: int, kernel: tuple[int, int], steps: tuple[int, int, int]) -> np.ndarray:
    """Word offsets of every product step (c4, a, b) for steps (plane, dh x Wp, dw)."""
    c, a, b = np.meshgrid(np.arange(c4), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij")
    return (c * steps[0] + a * steps[1] + b * steps[2]).reshape(-1).astype(np.int32)


def qconv_vnni(dev: KernelDevice, op: Op, x: Buffer, geometry: tuple[np.int32, ...], zx: int, zero_points: np.ndarray,
               mult: np.ndarray, bias: np.ndarray | None, tail: tuple[Any, ...]) -> bool:
    """QLinearConv on VNNI; False (nothing launched) when the weights do not fit signed bytes."""
    weights = op.weights[op.inputs[3]]
    ws = dev.host_value(op, "ws_vnni", lambda: centered_bytes(weights, zero_points))
    if ws is None:
        return False
    c, h, w, m, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, group = (int(v) for v in geometry)
    n, cg = int(x.shape[0]), c // group
    hp = max(pt + h, (ho - 1) * sh + dh * (kh - 1) + 1)
    wp = max(pl + w, (wo - 1) * sw + dw * (kw - 1) + 1)
    zu = zx + (128 if str(x.dtype) == "int8" else 0)
    xq = pack_activation(dev, x, zu, (n, group, cg, h, w, hp, wp, pt, pl, c * h * w, h * w, w, 1))
    c4 = -(-cg // 4)
    taps = dev.constant(op, "vnni_taps", lambda: conv_taps(c4, (kh, kw), (hp * wp, dh * wp, dw)))
    shape = (c4 * kh * kw, c4 * hp * wp, wo, sh * wp, sw, ho * wo, group, n, m * ho * wo, ho * wo, 1)
    launch_product(dev, op, xq, ws, bias, zu, mult, (dev.dummy, 0, 0, 0), tail, taps, shape)
    return True


def qgemm_vnni(dev: KernelDevice, op: Op, a: Buffer, dims: tuple[int, int, int], weights_kn: np.ndarray,
               zero_points: np.ndarray, za: int, mult: np.ndarray, bias: tuple[Any, ...], tail: tuple[Any, ...]) -> bool:
    """y[rows][N] = a[rows][K] x weights [K][N] on VNNI; False when the weights do not fit signed bytes."""
    rows, n_cols, k = dims
    ws = dev.host_value(op, "ws_vnni", lambda: centered_bytes(weights_kn.T.reshape(n_cols, k, 1, 1), zero_points))
    if ws is None:
        return False
    zu = za + (128 if str(a.dtype) == "int8" else 0)
    k4 = -(-k // 4)
    xq = dev.empty((rows * k4,), np.uint32)
    local = PACK_LOCAL if rows >= 4 * PACK_LOCAL else 1
    dev.launch("qvnni", "pack_rows_u8", (round_up(rows, local),), (local,), a, i32(str(a.dtype) == "int8"), xq, i32(k),
               i32(k4), i32(rows))
    taps = dev.constant(op, "vnni_taps", lambda: np.arange(k4, dtype=np.int32))
    c, has_c, scm, scn = bias
    shape = (k4, 0, 1, k4, 0, rows, 1, 1, 0, 1, n_cols)
    launch_product(dev, op, xq, ws, None, zu, mult, (c, int(has_c), int(scn), int(scm)), tail, taps, shape)
    return True
