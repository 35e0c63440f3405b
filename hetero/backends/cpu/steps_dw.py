"""Depthwise QLinearConv bound for a compiled plan: channels-last, no padded copy (kernels_dw).

One input channel per group and one output channel per input channel (a channel multiplier
goes to steps_conv.qconv, which leaves it to the NCHW kernel). The weights minus their zero
points are laid out per tap once, the input zero point folded into the bias, and the kernel
run pixel by pixel (``kernels_shared.dw_pixels_part``, rows shared with helper threads).
3x3 stays with steps_conv (a padded copy, then row or pixel kernels with the nine taps in
registers): a 3x3 kernel without the copy here was measured 0.8-1.05x of those (one thread, CPU
time, mobilenet_v2's shapes), while this module's 5x5 runs 1.05-1.5x faster than the general
kernel with the copy. Results equal kernels_int8's bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.backends.cpu import kernels_dw as dk
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu.kernels_float import geometry, is_depthwise
from hetero.backends.cpu.kernels_quant import Requant, per_channel, scalar
from hetero.backends.cpu.steps import NHWC, Step
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
    if (kh, kw) == (3, 3):
        return None  # steps_conv's 3x3 kernels (see the module docstring)
    ho, wo = win.out_hw
    x_dtype = np.dtype(x_spec.dtype)
    rq = Requant.of(op, channel_multiplier(sx, sw, sy), m, zy)
    zx32 = np.int32(scalar(zx))
    taps = np.ascontiguousarray((w[:, 0].astype(np.int32) - per_channel(zw, m, np.int32).reshape(-1, 1, 1)).transpose(1, 2, 0))
    raw_bias = per_channel(b, m, np.int32)
    bias = (raw_bias - np.int64(zx32) * taps.sum(axis=(0, 1), dtype=np.int64)).astype(np.int32)  # wraps as int32 sums do
    mult = np.ascontiguousarray(rq.mult)
    zrow = np.full(wd * c, scalar(zx), x_dtype)
    edge_of, edge_taps, edge_bias = dk.edge_weights(taps, raw_bias, int(zx32), wd, wo, sw_, dw, pl)
    out_shape = (n, ho, wo, m)
    tail = rq.tail

    def pixels(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, rq.dtype)
        for i in range(n):
            ks.run_items(ks.dw_pixels_part, (x[i], zrow, taps, sh, sw_, dh, dw, pt, pl, edge_of, edge_taps, edge_bias, bias,
                                             mult, *tail, out[i]), ho)
        return [out]

    return Step(op, (NHWC,), (NHWC,), pixels)
