"""CPU-style int8 products for OpenCL CPU devices (PoCL): QLinearConv, QGemm and QLinearMatMul on
the wide work items of kernels/qcpu.cl, bit for bit with rules 1-3 of hetero/ops/qlinear.py.

Where the device offers AVX-512 VNNI (qvnni.py) and the op suits it, that path runs; otherwise
the activation is copied once per op into float32(x - zx) with its spatial padding written out
(so the product loops have no bounds checks), and constant weights are packed once per op as
float32(w - zw), QB (or QB2) output channels side by side, with a table of the offsets of every
product step (input channel, window row, window column), so the kernels run one flat loop. They
sum at most CHUNK_PRODUCTS products in float32 (exact below 2^24) before moving the partial sum
to int32, and fuse the requantization epilogue. GPUs keep the tiled kernels of qgemm.cl.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import KernelDevice, i32, round_up
from hetero.backends.kernels.qvnni import qconv_vnni, qgemm_vnni
from hetero.ir.graph import Op

QB, QR = 16, 8  # output channels x pixels per work item of qconv_cpu (QB, QR in kernels/qcpu.cl)
QB2, QR2 = 32, 6  # the same for qconv_cpu32 (QB2, QR2)
CHUNK_PRODUCTS = 256  # 256 x 255 x 255 < 2^24: float32 partial sums of int8 products stay exact
VNNI_MIN_CHANNELS = 8  # fewer input channels per group (a stem's 3) waste too much of VNNI's channel quads
WIDE_MIN_CHANNELS = 8  # fewer output channels per group run the thin kernel, vectorised along rows
QV = 16  # output pixels along a row per work item of the thin kernel (QV in kernels/qcpu.cl)
SLACK = 2 * QV  # floats after the prepared activation: the thin kernel's row vectors may read past it
WIDE_LOCAL = 16  # largest work-group size along the pixel blocks of the wide kernel
ROWS_LOCAL = 16  # work-group size of the row-wise activation preparation
F = np.float32


def conv_taps(cg: int, kernel: tuple[int, int], steps: tuple[int, int, int]) -> np.ndarray:
    """Offsets into the padded activation of every product step k = (c, a, b) of a window, for
    channel, row and column steps ``steps`` (plane size, dh x padded width, dw)."""
    c, a, b = np.meshgrid(np.arange(cg), np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij")
    return (c * steps[0] + a * steps[1] + b * steps[2]).reshape(-1).astype(np.int32)


def pack_wide(centered: np.ndarray, group: int, block: int = QB) -> np.ndarray:
    """[M][K] float32 weights (zero point subtracted) as [group][Mb][K][block], channels padded with 0."""
    m, k = centered.shape
    mg = m // group
    mb = -(-mg // block)
    packed = np.zeros((group, mb * block, k), F)
    packed[:, :mg, :] = centered.reshape(group, mg, k)
    return np.ascontiguousarray(packed.reshape(group, mb, block, k).transpose(0, 1, 3, 2))


def centered_rows(weights: np.ndarray, zero_points: np.ndarray) -> np.ndarray:
    """float32(w - zw) for weights [M][K] and per-row zero points [M]."""
    return (weights.astype(np.int32) - zero_points.astype(np.int32)[:, None]).astype(F)


def _centered(dev: KernelDevice, x: Buffer, zx: int, planes: int, hw: tuple[int, int], padded: tuple[int, int],
              pads: tuple[int, int]) -> Buffer:
    """float32(x - zx) with its padding written as 0: ``planes`` planes of padded[0] x padded[1]."""
    xf = dev.empty((planes * padded[0] * padded[1] + SLACK,), np.float32)
    sgn = i32(str(x.dtype) == "int8")
    rows = planes * padded[0]
    local = ROWS_LOCAL if rows >= 4 * ROWS_LOCAL else 1
    dev.launch("qcpu", "pad_sub_f32", (round_up(rows, local),), (local,), x, sgn, i32(zx), xf, i32(hw[0]), i32(hw[1]),
               i32(padded[0]), i32(padded[1]), i32(pads[0]), i32(pads[1]), i32(rows))
    return xf


def _blocks_local(blocks: int) -> int:
    """Work-group size along the pixel blocks: few, large groups (PoCL pays per group), but at
    least a few groups per core."""
    local = WIDE_LOCAL
    while local > 1 and blocks < 4 * local:
        local //= 2
    return local


def padded_channels(values: np.ndarray, group: int, dtype: Any, block: int = QB) -> np.ndarray:
    """Per-channel values [M] as [group][Mb * block] (each group's channels padded with 0)."""
    mg = values.size // group
    mb = -(-mg // block)
    padded = np.zeros((group, mb * block), dtype)
    padded[:, :mg] = values.reshape(group, mg)
    return padded.reshape(-1)


def wide_block(mg: int) -> int:
    """Output channels per work item of the wide kernels: QB2 = 32 where padding the group's
    channels to a multiple of 32 wastes at most an eighth, else QB = 16."""
    return QB2 if mg >= QB2 and (-mg) % QB2 * 8 <= mg else QB


def _launch_wide(dev: KernelDevice, op: Op, xf: Buffer, centered: Callable[[], np.ndarray], mult: np.ndarray,
                 bias: tuple[Buffer, int], tail: tuple[Any, ...], taps: Buffer, geometry: tuple[int, ...],
                 mg: int, group: int, batch: int) -> None:
    """One wide kernel over ``batch`` images x groups; geometry = QCPU_GEOMETRY after taps, Mb
    (index 6) filled in here; bias = (buffer, bias_mode)."""
    block = wide_block(mg)
    mb = -(-mg // block)
    wf = dev.constant(op, "wcpu", lambda: pack_wide(centered(), group, block))
    multp = dev.constant(op, "multp", lambda: padded_channels(mult, group, F, block))
    shape = (*geometry[:7], mb, *geometry[8:])
    pixels = geometry[5]
    blocks = -(-pixels // (QR if block == QB else QR2))
    local = _blocks_local(blocks)
    name = "qconv_cpu" if block == QB else "qconv_cpu32"
    args = (xf, wf, bias[0], i32(bias[1]), multp, *tail, taps, *(i32(v) for v in shape))
    dev.launch("qcpu", name, (round_up(blocks, local), mb, batch), (local, 1, 1), *args)


def qconv_cpu(dev: KernelDevice, op: Op, x: Buffer, geometry: tuple[np.int32, ...], zx: int,
              zero_points: np.ndarray, mult: np.ndarray, bias: np.ndarray | None, tail: tuple[Any, ...]) -> None:
    """QLinearConv on the CPU kernels: per-channel multipliers ``mult`` and bias (host arrays),
    ``tail`` = (zy, lo, hi, y)."""
    c, h, wd, m, ho, wo, kh, kw, sh, sw, dh, dw, pt, pl, group = (int(v) for v in geometry)
    vnni = m // group >= WIDE_MIN_CHANNELS and c // group >= VNNI_MIN_CHANNELS and dev.vnni_ready()
    if vnni and qconv_vnni(dev, op, x, geometry, zx, zero_points, mult, bias, tail):
        return
    n = int(x.shape[0])
    hp = max(pt + h, (ho - 1) * sh + dh * (kh - 1) + 1)
    wp = max(pl + wd, (wo - 1) * sw + dw * (kw - 1) + 1)
    xf = _centered(dev, x, zx, n * c, (h, wd), (hp, wp), (pt, pl))
    cg, mg, p = c // group, m // group, ho * wo
    weights = op.weights[op.inputs[3]]
    taps = dev.constant(op, "taps", lambda: conv_taps(cg, (kh, kw), (hp * wp, dh * wp, dw)))
    shape = (cg * kh * kw, cg * hp * wp, wo, sh * wp, sw, p, mg, 0, group, c * hp * wp, m * p, p, 1, 1, 0,
             CHUNK_PRODUCTS)

    def centered() -> np.ndarray:
        return centered_rows(weights.reshape(m, -1), zero_points)

    if mg >= WIDE_MIN_CHANNELS:
        block = wide_block(mg)
        biasp = dev.dummy if bias is None else dev.constant(op, "biasp", lambda: padded_channels(bias, group, np.int32,
                                                                                                  block))
        _launch_wide(dev, op, xf, centered, mult, (biasp, 0 if bias is None else 1), tail, taps, shape, mg, group,
                     n * group)
        return
    wf = dev.constant(op, "wcpu", centered)
    mult_buffer = dev.constant(op, "mult_cpu", lambda: mult)
    bias_buffer = dev.dummy if bias is None else dev.constant(op, "bias_cpu", lambda: bias)
    args = (xf, wf, bias_buffer, i32(bias is not None), mult_buffer, *tail, taps, *(i32(v) for v in shape))
    local = ROWS_LOCAL if ho >= 2 * ROWS_LOCAL else 1
    dev.launch("qcpu", "qconv_cpu_rows", (round_up(ho, local), -(-wo // QV), n * m), (local, 1, 1), *args)


def qgemm_cpu(dev: KernelDevice, op: Op, a: Buffer, dims: tuple[int, int, int], weights_kn: np.ndarray,
              zero_points: np.ndarray, za: int, mult: np.ndarray, bias: tuple[Any, ...], tail: tuple[Any, ...]) -> None:
    """y[rows][N] of a [rows][K] activation (row-major) times constant weights [K][N] on the CPU
    kernels; per-column multipliers ``mult`` (host), ``bias`` = (c, has_c, scm, scn) on the
    device, ``tail`` = (zy, lo, hi, y)."""
    rows, n_cols, k = dims
    if dev.vnni_ready() and qgemm_vnni(dev, op, a, dims, weights_kn, zero_points, za, mult, bias, tail):
        return
    af = _centered(dev, a, za, 1, (rows, k), (rows, k), (0, 0))
    c, has_c, scm, scn = bias
    taps = dev.constant(op, "taps", lambda: np.arange(k, dtype=np.int32))
    shape = (k, 0, 1, k, 0, rows, n_cols, 0, 1, 0, 0, 1, n_cols, int(scn), int(scm), CHUNK_PRODUCTS)
    _launch_wide(dev, op, af, lambda: centered_rows(weights_kn.T, zero_points), mult, (c, 2 if int(has_c) else 0),
                 tail, taps, shape, n_cols, 1, 1)
