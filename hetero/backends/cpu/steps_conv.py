"""Integer convolutions and GEMMs bound for a compiled plan: weights packed once, epilogue fused.

QLinearConv runs channels-last by one of three paths: depthwise (kernels_nhwc, a vectorised
multiply-add per tap over whole output rows of the padded image, deinterleaved for narrow stride-2
ones, or for wide stride-2 3x3 ones over each pixel's C-runs read in place from it), implicit GEMM
for every other dense convolution on VNNI (gemm_fused.conv_tiles: flat tiles of output pixels,
each tap row read in place from the zero-point-padded image, or from the input itself for 1x1 and
unpadded convolutions) and, for grouped
convolutions, dilated taps, weight zero points that need row sums or a CPU without VNNI,
im2row (none for a pointwise conv) and one flat GEMM. Every GEMM is gemm_fused's, so bias,
requantization and the fused Relu/Clip range are applied as the int32 tile leaves the registers.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.backends.cpu import gemm as cpu_gemm
from hetero.backends.cpu import gemm_fused as fused
from hetero.backends.cpu import kernels_channels as kc
from hetero.backends.cpu import kernels_nhwc as nk
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu import native
from hetero.backends.cpu.kernels_float import geometry, is_depthwise
from hetero.backends.cpu.kernels_quant import F32, Requant, per_channel, scalar
from hetero.backends.cpu.steps import NCHW, NHWC, Step
from hetero.ir.graph import Op
from hetero.ir.ops.nn import window
from hetero.ir.ops.qlinear import channel_multiplier


# --- QLinearConv --------------------------------------------------------------------------


def qconv(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearConv channels-last: depthwise direct, else per group one (implicit for 1x1) GEMM
    with the requantizer fused into its epilogue, written into the group's output columns."""
    x_spec = op.input_specs[0]
    if x_spec is None or len(x_spec.shape) != 4:
        return None
    args = op.arguments([None])
    _, sx, zx, w, sw, zw, sy, zy = args[:8]
    b = args[8] if len(args) > 8 else None
    n, c, h, wd = x_spec.shape
    m, group = w.shape[0], int(op.attrs.get("group", 1))
    win = window(op.attrs, (h, wd), w.shape[2:])
    kh, kw, sh, sw_, dh, dw, pt, pl = geometry(win)
    ho, wo = win.out_hw
    x_dtype = np.dtype(x_spec.dtype)
    rq = Requant.of(op, channel_multiplier(sx, sw, sy), m, zy)
    bias = per_channel(b, m, np.int32)
    zw_all = per_channel(zw, m, np.int32)
    x_zp = scalar(zx)
    out_shape = (n, ho, wo, m)
    if is_depthwise(op, w.shape) and group > 1:  # (one input channel and one group: a dense conv)
        if m != c:
            return None  # a channel multiplier: the NCHW kernel repeats channels
        taps = (w[:, 0].astype(np.int32) - zw_all.reshape(-1, 1, 1)).transpose(1, 2, 0)  # (kh, kw, C)
        mult_row = np.ascontiguousarray(np.tile(rq.mult, wo))  # repeated along an output row
        zx32 = np.int32(x_zp)
        hp, wp = h + pt + win.pads[2], wd + pl + win.pads[3]
        pad = _pad_bits(x_dtype, x_zp)
        three = (kh, kw, sh, sw_) == (3, 3, 1, 1)
        three_s2 = (kh, kw, sh, sw_, dh, dw) == (3, 3, 2, 2, 1, 1)
        half = (wp + 1) // 2
        word = kc.word_view((c,))  # stride-2 rows move pixels as words of this size
        pad_word = np.full(word.itemsize, pad, np.uint8).view(word)[0]
        # 3x3 kernels (kernels_nhwc._dw3_row): int16 taps (w - zw fits) times the raw padded input,
        # with -zx * sum(taps) folded into the bias. Stride 1 goes row by row at every width
        # (1.0-1.25x the per-pixel kernel from C = 128 once the taps are int16); wide stride-2
        # ones pixel by pixel with (9, C) weights held in L1 and taps read in place (measured
        # 1.05-1.45x the deinterleaved rows from C = 64; 0.97-1.04x once the rows' input is padded
        # and deinterleaved in one pass, nk.pad_deinterleave, 1.07-1.10x the two passes at C < 64).
        per_pixel = (kh, kw) == (3, 3) and c >= 64 and sh == 2 and sw_ == 2
        taps16 = taps.reshape(9, c).astype(np.int16) if (kh, kw) == (3, 3) else None
        bias3 = (bias.astype(np.int64) - x_zp * taps.reshape(-1, c).sum(axis=0, dtype=np.int64)).astype(np.int32)
        taps9 = np.ascontiguousarray(np.tile(taps16, (1, wo))) if three or three_s2 else None
        bias9 = np.tile(bias3, wo) if three or three_s2 else None
        taps_px = np.ascontiguousarray(taps16) if per_pixel else None
        mult_px = np.ascontiguousarray(rq.mult)
        general = not (per_pixel or three or three_s2)
        split_rows = three_s2 and not per_pixel  # padded and deinterleaved in one pass, no padded copy
        taps_row = np.ascontiguousarray(np.tile(taps, (1, 1, wo))) if general else None
        bias_row = np.tile(bias, wo) if general else None

        def depthwise(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            x = inputs[0]
            out = np.empty(out_shape, rq.dtype)
            padded = None if split_rows else np.empty((hp, wp, c), x_dtype)
            for i in range(n):
                if padded is not None:
                    nk.pad_image(x[i].view(np.uint8), pt, pl, pad, padded.view(np.uint8))
                if per_pixel:  # 3x3 kernels: one output row per work item, shared with helper threads
                    ks.run_items(ks.dw3_px_part, (padded, taps_px, sh, sw_, dh, dw, bias3, mult_px, *rq.tail, out[i]), ho)
                elif three:
                    ks.run_items(ks.dw3_rows_part, (padded, taps9, dh, dw, bias9, mult_row, *rq.tail, out[i]), ho)
                elif three_s2:
                    split = np.empty((hp, 2, half, c), x_dtype)
                    nk.pad_deinterleave(x[i].view(np.uint8).view(word), pt, pl, pad_word,
                                        split.view(np.uint8).view(word))
                    ks.run_items(ks.dw3s2_rows_part, (split, taps9, bias9, mult_row, *rq.tail, out[i]), ho)
                else:
                    nk.depthwise_nhwc(padded, zx32, taps_row, sh, sw_, dh, dw, bias_row, mult_row, *rq.tail, out[i])
            return [out]

        return Step(op, (NHWC,), (NHWC,), depthwise)
    cg, mg = c // group, m // group
    sa = 128 if x_dtype == np.int8 else 0
    pad = _pad_bits(x_dtype, x_zp)
    vnni = cpu_gemm.HAS_VNNI
    pointwise = group == 1 and (kh, kw, sh, sw_) == (1, 1, 1, 1) and not any(win.pads) and c % 4 == 0
    if vnni and group == 1 and dw == 1:
        step = _implicit_conv(op, w, zw_all, bias, rq, sa, x_zp, (n, c, h, wd), win, out_shape)
        if step is not None:
            return step
    if vnni and group > 1 and dw == 1 and not _dense_pays(group, mg, cg, m, c, kh, kw):
        step = _grouped_tiles(op, w, zw_all, bias, rq, sa, x_zp, (n, c, h, wd), win, out_shape)
        if step is not None:
            return step
    if vnni and group > 1 and dw == 1 and GROUPED_DENSE != "0":
        step = _implicit_conv(op, block_diagonal(w, group, zw_all), zw_all, bias, rq, sa, x_zp, (n, c, h, wd), win, out_shape,
                              dense_groups=True)
        if step is not None:
            return step
    groups = []
    for g in range(group):
        taps_last = w[g * mg : (g + 1) * mg].transpose(0, 2, 3, 1).reshape(mg, -1)  # K ordered (i, j, c)
        groups.append(_packed_group(taps_last, zw_all[g * mg : (g + 1) * mg], bias[g * mg : (g + 1) * mg],
                                    rq.mult[g * mg : (g + 1) * mg], sa, x_zp))
    k = kh * kw * cg
    kp = 4 * groups[0][0].k_groups
    pixels = ho * wo
    mp = -(-pixels // cpu_gemm.MR) * cpu_gemm.MR
    zero_rows = np.zeros(mp, np.int32)
    flip = sa != 0

    def conv(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, rq.dtype)
        rows_out = out.reshape(n, pixels, m)
        rows = None if pointwise else np.empty((mp, kp), x_dtype)
        for i in range(n):
            for g, (packed, beta, comp, need_rows, bias_g, mult_g) in enumerate(groups):
                if pointwise:
                    a = x[i].reshape(pixels, c)
                else:
                    nk.im2row_padded(x[i].view(np.uint8), g * cg, cg, kh, kw, sh, sw_, dh, dw, pt, pl, ho, wo, pad, rows.view(np.uint8))
                    a = rows
                rs = zero_rows
                if need_rows:
                    rs = np.zeros(mp, np.int32)
                    nk.row_sums(a, pixels, k, sa, rs)
                fused.run_gemm_requant(a.view(np.uint8), pixels, flip, packed.data, mg, rs, beta, comp, bias_g, mult_g,
                                       rq.tail, rows_out[i], g * mg, vnni)
        return [out]

    return Step(op, (NHWC,), (NHWC,), conv)


def qgemm(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QGemm / QLinearMatMul of a 2-D activation by constant 2-D weights: one fused GEMM."""
    gemm = op.type == "QGemm"
    a_spec, b_spec = op.input_specs[0], op.input_specs[3]
    if len(a_spec.shape) != 2 or len(b_spec.shape) != 2 or op.inputs[3] not in op.weights or len(op.activation_inputs) != 1:
        return None
    if gemm and op.attrs.get("transA", 0):
        return None
    args = op.arguments([None])
    if gemm:
        _, sa, za, b, sb, zb, c, sy, zy = (args + [None] * 9)[:9]
    else:
        _, sa, za, b, sb, zb, sy, zy = args[:8]
        c = None
    if gemm and op.attrs.get("transB", 0):
        b = b.T
    rows, cols = op.output_specs[0].shape
    if c is not None and (c.size != cols or c.shape[-1] != cols):
        return None
    mult = channel_multiplier(sa, sb, sy) * F32(op.attrs.get("alpha", 1.0)) if gemm else channel_multiplier(sa, sb, sy)
    rq = Requant.of(op, mult, cols, zy)
    zb_cols = per_channel(zb, cols, np.int32)
    zb_arg = int(zb_cols[0]) if np.all(zb_cols == zb_cols[0]) else zb_cols
    packed = cpu_gemm.pack_weights(np.ascontiguousarray(b))
    x_dtype = np.dtype(a_spec.dtype)
    sa_shift = 128 if x_dtype == np.int8 else 0
    beta, comp, need_rows = cpu_gemm._epilogue_terms(sa_shift, scalar(za), packed, zb_arg)
    width = packed.data.shape[0] * cpu_gemm.NR
    bias = fused.pad_panels(per_channel(c, cols, np.int32) if c is not None else np.zeros(cols, np.int32), width)
    mult_p = fused.pad_panels(rq.mult, width)
    k, kp = packed.k, 4 * packed.k_groups
    mp = -(-rows // cpu_gemm.MR) * cpu_gemm.MR
    zero_rows = np.zeros(mp, np.int32)
    vnni = cpu_gemm.HAS_VNNI
    bound = fused.bind_gemm_requant(rows, kp, sa_shift != 0, packed.data, cols, zero_rows, beta, comp, bias, mult_p,
                                    rq.tail) if native.BIND and vnni and kp == k and not need_rows else None

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a = inputs[0]
        if bound is not None and a.flags.c_contiguous:
            out = np.empty((rows, cols), rq.dtype)
            if bound.run(a, out, a):
                return [out]
        a = np.ascontiguousarray(a)
        if kp != k:
            a = np.pad(a, ((0, 0), (0, kp - k)))
        rs = zero_rows
        if need_rows:
            rs = np.zeros(mp, np.int32)
            nk.row_sums(a, rows, k, sa_shift, rs)
        out = np.empty((rows, cols), rq.dtype)
        fused.run_gemm_requant(a.view(np.uint8), rows, sa_shift != 0, packed.data, cols, rs, beta, comp, bias, mult_p,
                               rq.tail, out, 0, vnni)
        return [out]

    return Step(op, (NCHW,), (NCHW,), run)


GROUPED_DENSE = os.environ.get("HETERO_CPU_GROUPED_DENSE", "auto")  # auto, 0 (never: grouped), 1 (always where exact)


def _dense_pays(group: int, mg: int, cg: int, m: int, c: int, kh: int, kw: int) -> bool:
    """Whether a grouped conv runs faster as one dense conv over block-diagonal weights (group
    times the multiply-adds, but one implicit GEMM across all the channels, its tiles 64 columns
    wide) than as every group's implicit GEMM in one job (``_grouped_tiles``: group times the
    tiles, each only as wide as the group's outputs, after a pass that lays each group's channels
    out as an image of its own). Compared per tile as (4-deep k groups + the epilogue's
    TILE_FIXED) times 16-column vectors, a one- or two-vector tile's counted 2x or 1.3x (it loads
    more per multiply-add): measured on 12 shapes (2-80 channels a group, 5x5 to 28x28), the
    faster of the two in 11, the twelfth 3.2 against 4.7 us (RegNet's 400-channel conv of 25
    groups at 7x7: dense 197 us, grouped 25 us)."""
    if GROUPED_DENSE in ("0", "1"):
        return GROUPED_DENSE == "1"
    vectors = -(-mg // 16)
    narrow = 2.0 if vectors == 1 else 1.3 if vectors == 2 else 1.0
    dense = (kh * -(-kw * c // 4) + TILE_FIXED) * -(-m // 16)
    grouped = group * (kh * -(-kw * cg // 4) + TILE_FIXED) * vectors * narrow
    return dense <= grouped


TILE_FIXED = 8  # a tile's epilogue and row loads, in 4-deep k groups of work


def _grouped_tiles(op: Op, w: np.ndarray, zw: np.ndarray, bias: np.ndarray, rq: Requant, sa: int, x_zp: int,
                   x_shape: tuple[int, ...], win, out_shape: tuple[int, ...]) -> Step | None:
    """A grouped convolution (dw == 1) as every group's implicit GEMM in one job
    (gemm_fused.grouped_tiles_part): the input's channel groups laid out once as zero-point-padded
    images of their own (kernels_nhwc.pad_groups), each then read in place as ``_implicit_conv``
    reads a dense one, its outputs written into the group's columns. None where the weight zero
    points need row sums."""
    n, c, h, wd = x_shape
    m, group = w.shape[0], int(op.attrs.get("group", 1))
    cg, mg = c // group, m // group
    kh, kw, sh, sw, dh, _, pt, pl = geometry(win)
    ho, wo = win.out_hw
    hp, wp = h + pt + win.pads[2], wd + pl + win.pads[3]
    kseg = -(-kw * cg // 4) * 4
    neutral = 128 if w.dtype == np.uint8 else 0
    packs = []
    for g in range(group):
        taps = w[g * mg : (g + 1) * mg].transpose(0, 2, 3, 1).reshape(mg, kh, kw * cg)
        if kseg != kw * cg:
            taps = np.concatenate([taps, np.full((mg, kh, kseg - kw * cg), neutral, w.dtype)], axis=2)
        sl = slice(g * mg, (g + 1) * mg)
        packs.append(_packed_group(taps.reshape(mg, kh * kseg), zw[sl], bias[sl], rq.mult[sl], sa, x_zp))
    if any(p[3] for p in packs):
        return None
    bp = np.ascontiguousarray(np.stack([p[0].data for p in packs]))
    comp = np.ascontiguousarray(np.stack([(p[2].astype(np.int64) + p[4]).astype(np.uint32).view(np.int32) for p in packs]))
    mult = np.ascontiguousarray(np.stack([p[5] for p in packs]))
    table = fused.pixel_table(ho, wo, sh * wp * cg, sw * cg)
    image_bytes = hp * wp * cg + kseg - kw * cg  # the slack a last window's rounded-up read reaches
    pad = _pad_bits(np.dtype(op.input_specs[0].dtype), x_zp)
    flip, kgs, pixels, seg = sa != 0, kseg // 4, ho * wo, dh * wp * cg
    bound = fused.bind_grouped_tiles(group, image_bytes, table, pixels, kgs, kh, seg, flip, bp, mg, comp, mult, rq.tail,
                                     m) if native.BIND else None

    def conv(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(out_shape, rq.dtype)
        rows_out = out.reshape(n, pixels, m)
        images = np.empty((group, image_bytes), np.uint8)
        for i in range(n):
            nk.pad_groups(x[i].view(np.uint8), pt, pl, pad, hp, wp, images)
            fused.run_grouped_tiles(bound, images, table, pixels, kgs, kh, seg, flip, bp, mg, comp, mult, rq.tail,
                                    rows_out[i].view(np.uint8))
        return [out]

    return Step(op, (NHWC,), (NHWC,), conv)


def block_diagonal(w: np.ndarray, group: int, zw: np.ndarray) -> np.ndarray:
    """A grouped conv's (M, C/group, kh, kw) weights as dense (M, C, kh, kw) ones: each output
    channel's weights over its own group's inputs, its zero point elsewhere (a weight minus its
    zero point is 0 there, so every accumulator is the grouped conv's)."""
    m, cg = w.shape[:2]
    mg = m // group
    dense = np.empty((m, cg * group) + w.shape[2:], w.dtype)
    dense[...] = zw.astype(w.dtype).reshape(m, 1, 1, 1)
    for g in range(group):
        dense[g * mg : (g + 1) * mg, g * cg : (g + 1) * cg] = w[g * mg : (g + 1) * mg]
    return dense


def _pad_bits(dtype: np.dtype, zero_point: int) -> np.uint8:
    """The zero point's byte: data-movement kernels see every 8-bit tensor as uint8 (one compiled
    variant for int8 and uint8 models)."""
    return np.asarray(zero_point, dtype).reshape(1).view(np.uint8)[0]


def _packed_group(taps: np.ndarray, zw: np.ndarray, bias: np.ndarray, mult: np.ndarray, sa: int, x_zp: int) -> tuple:
    """One group's (M, K) weights packed for the fused GEMM, with its shift terms and padded vectors."""
    packed = cpu_gemm.pack_weights(np.ascontiguousarray(taps.T))
    zw_arg = int(zw[0]) if np.all(zw == zw[0]) else np.ascontiguousarray(zw)
    beta, comp, need_rows = cpu_gemm._epilogue_terms(sa, x_zp, packed, zw_arg)
    width = packed.data.shape[0] * cpu_gemm.NR
    return packed, beta, comp, need_rows, fused.pad_panels(bias, width), fused.pad_panels(mult, width)


def _implicit_conv(op: Op, w: np.ndarray, zw: np.ndarray, bias: np.ndarray, rq: Requant, sa: int, x_zp: int,
                   x_shape: tuple[int, ...], win, out_shape: tuple[int, ...], dense_groups: bool = False) -> Step | None:
    """A dense convolution (dw == 1) as an implicit GEMM over flat tiles of output pixels
    (gemm_fused.conv_tiles): each tap row's kw*C bytes are read in place from the zero-point-padded NHWC
    image, or from the input itself when it has no padding, as ``kseg`` bytes (kw*C rounded up
    to 4; the bytes past the window, the next pixel's or the slack after the image, meet
    weights whose shifted value is 0, so a few-channel stem needs no unfolded copy). None where
    the weight zero points need row sums (the im2row path handles those). ``dense_groups``: the
    weights are a grouped conv's, block-diagonal (a kernel class of its own: group times the work)."""
    n, c, h, wd = x_shape
    m = w.shape[0]
    kh, kw, sh, sw, dh, _, pt, pl = geometry(win)
    ho, wo = win.out_hw
    hp, wp = h + pt + win.pads[2], wd + pl + win.pads[3]
    kseg = -(-kw * c // 4) * 4
    taps = w.transpose(0, 2, 3, 1).reshape(m, kh, kw * c)  # (i, j, c) per tap row
    if kseg != kw * c:
        neutral = 128 if w.dtype == np.uint8 else 0  # a weight whose shifted value (gemm: b_s) is 0
        taps = np.concatenate([taps, np.full((m, kh, kseg - kw * c), neutral, w.dtype)], axis=2)
    packed, beta, comp, need_rows, bias_p, mult_p = _packed_group(taps.reshape(m, kh * kseg), zw, bias, rq.mult, sa, x_zp)
    if need_rows:
        return None
    a_oh, lda, seg = sh * wp * c, sw * c, dh * wp * c
    table = fused.pixel_table(ho, wo, a_oh, lda)
    slack = kseg - kw * c
    in_place = not any(win.pads) and slack == 0  # every read lies inside the input
    x_dtype = np.dtype(op.input_specs[0].dtype)
    pad = _pad_bits(x_dtype, x_zp)
    rs = np.zeros(cpu_gemm.MR, np.int32)
    comp_bias = (comp.astype(np.int64) + bias_p).astype(np.uint32).view(np.int32)  # wrapping, as the kernel adds
    flip, kgs, pixels = sa != 0, kseg // 4, ho * wo
    bound = fused.bind_conv_tiles(table, pixels, kgs, kh, seg, flip, packed.data, m, rs, beta, comp_bias, bias_p,
                                  mult_p, rq.tail) if native.BIND else None

    def conv(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if dense_groups and x.shape[-1] != c:
            raise ValueError(f"{op.name}: block-diagonal weights over {c} channels, input has {x.shape[-1]}")
        out = np.empty(out_shape, rq.dtype)
        if in_place:
            if n == 1 and bound is not None and x.flags.c_contiguous and bound.run(x, out):
                return [out]
            rows_out = out.reshape(n, pixels, m)
            for i in range(n):
                fused.run_conv_tiles(x[i].reshape(-1).view(np.uint8), table, pixels, kgs, kh, seg, flip, packed.data,
                                          m, rs, beta, comp_bias, bias_p, mult_p, rq.tail, rows_out[i])
            return [out]
        image = np.empty(hp * wp * c + slack, np.uint8)
        image[hp * wp * c :] = pad
        padded = image[: hp * wp * c].reshape(hp, wp, c)
        rows_out = out.reshape(n, pixels, m)
        for i in range(n):
            nk.pad_image(x[i].view(np.uint8), pt, pl, pad, padded)
            if not (bound is not None and bound.run(image, rows_out[i])):
                fused.run_conv_tiles(image, table, pixels, kgs, kh, seg, flip, packed.data, m, rs, beta, comp_bias,
                                     bias_p, mult_p, rq.tail, rows_out[i])
        return [out]

    return Step(op, (NHWC,), (NHWC,), conv)
