"""Depthwise QLinearConv bound for a compiled plan: channels-last, kernels_dwv's or kernels_dw's kernels.

One input channel per group and one output channel per input channel (a channel multiplier
goes to steps_conv.qconv, which leaves it to the NCHW kernel). On a CPU with AVX-512 VNNI, 3x3,
5x5 and 7x7 kernels whose weights minus their zero points fit int8 (symmetric int8 weights
always do) run kernels_dwv's micro-kernel: four taps of sixteen channels per vpdpbusd, read in
place (no padded copy), requantized as the sums leave the registers. One thread, in one process,
on mobilenet_v2's 3x3 shapes including the padded copy the int16 kernels need: 1.1-1.3x them at
stride 1, 1.1-1.7x at stride 2 (noisy 2-vCPU VM; bench/op_gap.py compares ops with onnxruntime).
Otherwise the weights minus their zero points are laid out per tap once and the input zero point
folded into the bias. 5x5 kernels pad the image with its zero point once and sum each output's 25
taps in registers, by rows at stride 1 (``kernels_dw.dw5_rows_part``), else by pixels
(``dw5_px_part``). Other sizes read the image in place with zeroed edge taps
(``kernels_dw.dw_pixels_part``), pixel by pixel. Rows are shared with helper threads. 3x3 stays
with steps_conv (a padded copy, then row or pixel kernels with the nine taps in registers).
Results equal kernels_int8's bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.backends.cpu import kernels_dw as dk
from hetero.backends.cpu import kernels_dwv as dv
from hetero.backends.cpu import kernels_nhwc as nk
from hetero.backends.cpu import native
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu.kernels_float import geometry, is_depthwise
from hetero.backends.cpu.kernels_quant import Requant, per_channel, scalar
from hetero.backends.cpu.steps import NHWC, Run, Step
from hetero.backends.cpu.steps_conv import _pad_bits
from hetero.ir.graph import Op
from hetero.ir.ops.nn import window
from hetero.ir.ops.qlinear import channel_multiplier


def depthwise(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """The op's depthwise step, or None where it is not a plain depthwise conv on 4-D int8 input."""
    x_spec = op.input_specs[0]
    if x_spec is None or len(x_spec.shape) != 4 or np.dtype(x_spec.dtype) not in (np.dtype(np.int8), np.dtype(np.uint8)):
        return None
    args = op.arguments([None])
    _, sx, zx, w, sw, zw, sy, zy = args[:8]
    b = args[8] if len(args) > 8 else None
    n, c, h, wd = x_spec.shape
    m = w.shape[0]
    if not (is_depthwise(op, w.shape) and int(op.attrs.get("group", 1)) > 1 and m == c):
        return None
    win = window(op.attrs, (h, wd), w.shape[2:])
    kh, kw, sh, sw_, dh, dw, pt, pl = geometry(win)
    ho, wo = win.out_hw
    x_dtype = np.dtype(x_spec.dtype)
    rq = Requant.of(op, channel_multiplier(sx, sw, sy), m, zy)
    zx32 = np.int32(scalar(zx))
    taps = np.ascontiguousarray((w[:, 0].astype(np.int32) - per_channel(zw, m, np.int32).reshape(-1, 1, 1)).transpose(1, 2, 0))
    raw_bias = per_channel(b, m, np.int32)
    if dv.ENABLED and (kh, kw) in dv.SIZES and dv.fits(taps):
        return Step(op, (NHWC,), (NHWC,), _vnni(taps, raw_bias, rq, x_dtype, scalar(zx), win, (n, c, h, wd), (n, ho, wo, m)))
    if (kh, kw) == (3, 3):
        return None  # steps_conv's 3x3 kernels (see the module docstring)
    bias = (raw_bias - np.int64(zx32) * taps.sum(axis=(0, 1), dtype=np.int64)).astype(np.int32)  # wraps as int32 sums do
    mult = np.ascontiguousarray(rq.mult)
    out_shape = (n, ho, wo, m)
    tail = rq.tail
    if (kh, kw) == (5, 5):
        run = _five_by_five(taps, bias, mult, tail, x_dtype, scalar(zx), win, (n, c, h, wd), out_shape, rq.dtype)
        return Step(op, (NHWC,), (NHWC,), run)
    zrow = np.full(wd * c, scalar(zx), x_dtype)
    edge_of, edge_taps, edge_bias = dk.edge_weights(taps, raw_bias, int(zx32), wd, wo, sw_, dw, pl)

    def pixels(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, rq.dtype)
        for i in range(n):
            ks.run_items(dk.dw_pixels_part, (x[i], zrow, taps, sh, sw_, dh, dw, pt, pl, edge_of, edge_taps, edge_bias, bias,
                                             mult, *tail, out[i]), ho)
        return [out]

    return Step(op, (NHWC,), (NHWC,), pixels)


def _vnni(taps: np.ndarray, raw_bias: np.ndarray, rq: Requant, x_dtype: np.dtype, zx: int, win,
          x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Run:
    """The run of a depthwise step on kernels_dwv's VNNI micro-kernel (weights minus their zero
    point fit int8): no padded copy; the input zero point (plus 128 for int8 inputs, which are
    flipped to uint8) folded into the bias, wrapping as int32 sums do; C rounded up to 16."""
    n, c, h, wd = x_shape
    _, kw, sh, sw, dh, dw, pt, pl = geometry(win)
    flip = x_dtype == np.dtype(np.int8)
    zu = np.int64(zx) + (128 if flip else 0)
    c16 = -(-c // dv.LANES) * dv.LANES
    bias = np.zeros(c16, np.int32)
    bias[:c] = (raw_bias.astype(np.int64) - zu * taps.sum(axis=(0, 1), dtype=np.int64)).astype(np.int32)
    mult = np.zeros(c16, np.float32)
    mult[:c] = rq.mult
    packed = dv.pack(taps)
    zrow = np.full(wd * c + dv.LANES, zx, x_dtype)
    tail = rq.tail
    ho = out_shape[1]
    bound = None
    jobs = native.jobs() if native.BIND else None
    if jobs is not None:
        holder = np.empty((h, wd, c), x_dtype), np.empty(out_shape[1:], rq.dtype)  # shapes and dtypes for the words
        bound = jobs.bind_part(dv.dwv_part, (holder[0], zrow, packed, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, *tail,
                                             holder[1]), ho, 0, 23)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, rq.dtype)
        if n == 1 and bound is not None and x.flags.c_contiguous and bound.run(x, out):
            return [out]
        for i in range(n):
            ks.run_items(dv.dwv_part, (np.ascontiguousarray(x[i]), zrow, packed, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, *tail, out[i]), ho)
        return [out]

    return run


def _five_by_five(taps: np.ndarray, bias: np.ndarray, mult: np.ndarray, tail: tuple, x_dtype: np.dtype, zx: int, win,
                  x_shape: tuple[int, ...], out_shape: tuple[int, ...], y_dtype: np.dtype) -> Run:
    """The run of a 5x5 depthwise step: each image padded with ``zx``, then at stride 1
    ``dw5_rows_part`` (weights repeated along an output row: long vector loops, measured
    1.1-1.9x the per-pixel kernel at one thread on mnasnet-like's shapes), else ``dw5_px_part``
    over the channels rounded up to 16 (zero weights past C; the flat buffer has 16 bytes of slack
    after the image). ``taps`` (5, 5, C) int32 minus their zero points, ``bias`` with zx folded."""
    n, c, h, wd = x_shape
    _, _, sh, sw, dh, dw, pt, pl = geometry(win)
    ho, wo = out_shape[1], out_shape[2]
    hp, wp = h + pt + win.pads[2], wd + pl + win.pads[3]
    rows = (sh, sw) == (1, 1)
    cp = -(-c // dk.LANES) * dk.LANES
    taps16 = np.zeros((25, cp), np.int16)
    taps16[:, :c] = taps.reshape(25, c)  # |w - zw| <= 255
    bias_p, mult_p = np.zeros(cp, np.int32), np.zeros(cp, mult.dtype)
    bias_p[:c], mult_p[:c] = bias, mult
    if rows:
        taps16, bias_p, mult_p = np.ascontiguousarray(np.tile(taps16[:, :c], (1, wo))), np.tile(bias, wo), np.tile(mult, wo)
    size = hp * wp * c
    pad = _pad_bits(x_dtype, zx)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, y_dtype)
        flat = np.empty(size + dk.LANES, np.uint8)
        flat[size:] = pad
        padded = flat[:size].reshape(hp, wp, c)
        for i in range(n):
            nk.pad_image(x[i].view(np.uint8), pt, pl, pad, padded)
            if rows:
                ks.run_items(dk.dw5_rows_part, (padded.view(x_dtype), taps16, dh, dw, bias_p, mult_p, *tail, out[i]), ho)
            else:
                ks.run_items(dk.dw5_px_part, (flat.view(x_dtype), wp, taps16, sh, sw, dh, dw, bias_p, mult_p, *tail, out[i]),
                             ho)
        return [out]

    return run
