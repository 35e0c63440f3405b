"""Depthwise QLinearConv with AVX-512 VNNI: four taps of sixteen channels per ``vpdpbusd``.

A depthwise conv sums, per channel, kh x kw products of one input byte and one weight. Laid out
channels-last, an input column's taps down up to four kernel rows, sixteen channels each, are
interleaved byte by byte into one 64-byte vector (channel c's taps side by side in lane c;
``_make_columns``, LLVM IR through a numba intrinsic), and an output pixel adds each kernel
column's products to sixteen int32 lanes with one ``vpdpbusd`` per vector (unsigned inputs
times signed weights; ``_make_run``): a 3x3 kernel is three vpdpbusd per sixteen channels where
the int16 kernels (kernels_nhwc._dw3_row) widen and multiply each tap apart. Grouping down the
kernel's rows makes a column's vector the same for every pixel of an output row that reads it,
so its byte shuffles are done once per input column, not once per pixel and kernel column
(measured 1.5-2.5x the per-pixel form at stride 1, 1.1-1.5x at stride 2, one thread, mobilenet_v2's and mnasnet's shapes). The
weights minus their zero point must fit int8 (any symmetric int8 quantization; otherwise the plan
keeps the int16 kernels). int8 activations are flipped to uint8 (XOR 0x80) as they are loaded,
the 128 * sum(w) this adds folded into the bias with the input zero point.

No padded copy of the image: a kernel row above or below it reads a row of the zero point, a
column left or right of it too, and the image's last column, when C is not a multiple of 16 (a
sixteen-byte load there could pass the buffer's end), is copied first. Each block's sixteen int32
sums are requantized in the micro-kernel by kernels_int8's ``_requant`` rules in the same float32
operations (multiply, round half to even, add the zero point, clamp; nothing fused) and stored
as sixteen bytes, a last block past C masked to its channels, so every output equals the other
kernels' bit for bit and nothing is written past a pixel's channels. Work items are output rows,
claimed like kernels_shared's (``dwv_part``, ``dwv_core``; native_jobs compiles ``dwv_core`` too:
after changing this module clear its ``*.nbi``/``*.nbc`` as well).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from hetero.backends.cpu.gemm import HAS_VNNI, _addr
from hetero.backends.cpu.gemm_fused import _count_done
from hetero.backends.cpu.native import claim

__all__ = ["ENABLED", "LANES", "SIZES", "fits", "pack", "dwv_part", "dwv_core"]

ENABLED = HAS_VNNI and os.environ.get("HETERO_CPU_DWV", "1") != "0"
"""Whether plans bind depthwise convs to this module (a CPU with AVX-512 VNNI; HETERO_CPU_DWV=0
keeps the int16 kernels, for comparisons)."""

LANES = 16
"""Channels per micro-kernel call (int32 lanes of a zmm register)."""


def _interleave(builder, taps):
    """Four 16-byte vectors -> one 64-byte vector whose lane c holds byte c of each, in order."""
    i32 = ir.IntType(32)
    pair = ir.Constant(ir.VectorType(i32, 32), [k // 2 + 16 * (k % 2) for k in range(32)])
    v16i16, v16i32 = ir.VectorType(ir.IntType(16), 16), ir.VectorType(i32, 16)
    ab = builder.bitcast(builder.shuffle_vector(taps[0], taps[1], pair), v16i16)
    cd = builder.bitcast(builder.shuffle_vector(taps[2], taps[3], pair), v16i16)
    return builder.bitcast(builder.shuffle_vector(ab, cd, pair), v16i32)


def _requant_store(builder, acc, mult, zy, lo, hi, pout, mask=None):
    """kernels_int8's ``_requant`` on sixteen int32 lanes (the same float32 operations, none
    fused), stored as sixteen bytes at ``pout`` (only the lanes of ``mask`` where given)."""
    i8, i32, f32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
    v16i8, v16i32, v16f32 = ir.VectorType(i8, 16), ir.VectorType(i32, 16), ir.VectorType(f32, 16)
    splat0 = ir.Constant(v16i32, [0] * 16)
    rint = builder.module.declare_intrinsic("llvm.rint.v16f32", fnty=ir.FunctionType(v16f32, [v16f32]))

    def splat(value):
        v = builder.insert_element(ir.Constant(v16f32, ir.Undefined), value, ir.Constant(i32, 0))
        return builder.shuffle_vector(v, ir.Constant(v16f32, ir.Undefined), splat0)

    y = builder.fadd(builder.call(rint, [builder.fmul(builder.sitofp(acc, v16f32), mult)]), splat(zy))
    vlo, vhi = splat(lo), splat(hi)
    y = builder.select(builder.fcmp_ordered("<", y, vlo), vlo, y)
    y = builder.select(builder.fcmp_ordered(">", y, vhi), vhi, y)
    q = builder.trunc(builder.fptosi(y, v16i32), v16i8)
    ptr = builder.inttoptr(pout, v16i8.as_pointer())
    if mask is None:
        builder.store(q, ptr, align=1)
    else:
        mstore = builder.module.declare_intrinsic("llvm.masked.store.v16i8.p0",
                                                  fnty=ir.FunctionType(ir.VoidType(), [v16i8, v16i8.as_pointer(), i32,
                                                                                       ir.VectorType(ir.IntType(1), 16)]))
        builder.call(mstore, [q, ptr, ir.Constant(i32, 1), mask])


def _make_columns(kh: int, flip: bool):
    """An intrinsic ``cols(prows, off, step, count, pv)``: for ``count`` input columns (the first
    at byte ``off`` of each of the kh kernel rows' image rows, the next ``step`` bytes on), the
    interleaved vectors of sixteen channels' taps down the kernel's rows (``groups`` per column,
    four rows each, zero past kh), stored one after another at ``pv`` (64 bytes each). An output
    row's stride-1 pixels share these: each column's shuffles are done once, not once per pixel
    that reads it (three times at 3x3)."""
    i8, i64 = ir.IntType(8), ir.IntType(64)
    v16i8, v16i32 = ir.VectorType(i8, 16), ir.VectorType(ir.IntType(32), 16)
    groups = (kh + 3) // 4
    zero8 = ir.Constant(v16i8, None)
    sign = ir.Constant(v16i8, [-128] * 16)

    def codegen(context, builder, signature, args):
        prows, off, step, count, pv = args
        rows = [builder.add(builder.load(builder.inttoptr(builder.add(prows, ir.Constant(i64, 8 * i)), i64.as_pointer()),
                                         align=8), off) for i in range(kh)]
        entry = builder.block
        loop = builder.append_basic_block("cols.loop")
        done = builder.append_basic_block("cols.done")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        t = builder.phi(i64)
        at = builder.mul(t, step)
        dst = builder.add(pv, builder.mul(t, ir.Constant(i64, 64 * groups)))
        for g in range(groups):
            taps = []
            for i in range(4 * g, 4 * g + 4):
                if i >= kh:
                    taps.append(zero8)
                    continue
                v = builder.load(builder.inttoptr(builder.add(rows[i], at), v16i8.as_pointer()), align=1)
                taps.append(builder.xor(v, sign) if flip else v)
            builder.store(_interleave(builder, taps), builder.inttoptr(builder.add(dst, ir.Constant(i64, 64 * g)),
                                                                       v16i32.as_pointer()), align=1)
        t1 = builder.add(t, ir.Constant(i64, 1))
        t.add_incoming(ir.Constant(i64, 0), entry)
        t.add_incoming(t1, builder.block)
        builder.cbranch(builder.icmp_signed("<", t1, count), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    @intrinsic
    def columns(typingctx, prows, off, step, count, pv):
        return types.void(*([types.intp] * 5)), codegen

    return columns


def _make_run(kh: int, kw: int):
    """An intrinsic ``run(pv, pstep, tstep, count, pw, pbias, pmult, zy, lo, hi, pout, ostep, nvalid)``:
    ``count`` output pixels of one block of sixteen channels from ``_make_columns``' vectors:
    pixel t's kernel column j reads the ``groups`` vectors at ``pv + t*pstep + j*tstep`` (strides
    and dilations in columns' bytes), times the block's weights (``pack``, kept in registers over
    the run), requantized and stored at ``pout + t*ostep``, only the first ``nvalid`` channels (a
    last block past C: no spill onto the next pixel, written before it)."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    v16i32, v16f32 = ir.VectorType(i32, 16), ir.VectorType(ir.FloatType(), 16)
    groups = (kh + 3) // 4
    lanes = ir.Constant(v16i32, list(range(16)))
    splat0 = ir.Constant(v16i32, [0] * 16)

    def codegen(context, builder, signature, args):
        pv, pstep, tstep, count, pw, pbias, pmult, zy, lo, hi, pout, ostep, nvalid = args
        dp = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(v16i32, [v16i32] * 3))
        weights = [builder.load(builder.inttoptr(builder.add(pw, ir.Constant(i64, 64 * k)), v16i32.as_pointer()), align=1)
                   for k in range(kw * groups)]
        bias = builder.load(builder.inttoptr(pbias, v16i32.as_pointer()), align=1)
        mult = builder.load(builder.inttoptr(pmult, v16f32.as_pointer()), align=1)
        nv = builder.insert_element(ir.Constant(v16i32, ir.Undefined), builder.trunc(nvalid, i32), ir.Constant(i32, 0))
        mask = builder.icmp_signed("<", lanes, builder.shuffle_vector(nv, ir.Constant(v16i32, ir.Undefined), splat0))
        entry = builder.block
        loop = builder.append_basic_block("run.loop")
        done = builder.append_basic_block("run.done")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(i64, 0)), loop, done)
        builder.position_at_end(loop)
        t = builder.phi(i64)
        base = builder.add(pv, builder.mul(t, pstep))
        acc = bias
        for j in range(kw):
            col = builder.add(base, builder.mul(tstep, ir.Constant(i64, j)))
            for g in range(groups):
                v = builder.load(builder.inttoptr(builder.add(col, ir.Constant(i64, 64 * g)), v16i32.as_pointer()), align=1)
                acc = builder.call(dp, [acc, v, weights[j * groups + g]])
        _requant_store(builder, acc, mult, zy, lo, hi, builder.add(pout, builder.mul(t, ostep)), mask)
        t1 = builder.add(t, ir.Constant(i64, 1))
        t.add_incoming(ir.Constant(i64, 0), entry)
        t.add_incoming(t1, builder.block)
        builder.cbranch(builder.icmp_signed("<", t1, count), loop, done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    @intrinsic
    def run(typingctx, pv, pstep, tstep, count, pw, pbias, pmult, zy, lo, hi, pout, ostep, nvalid):
        sig = types.void(*([types.intp] * 7), types.float32, types.float32, types.float32, types.intp, types.intp,
                         types.intp)
        return sig, codegen

    return run


_cols_u8_3, _cols_s8_3 = _make_columns(3, False), _make_columns(3, True)
_cols_u8_5, _cols_s8_5 = _make_columns(5, False), _make_columns(5, True)
_cols_u8_7, _cols_s8_7 = _make_columns(7, False), _make_columns(7, True)
_run_3, _run_5, _run_7 = _make_run(3, 3), _make_run(5, 5), _make_run(7, 7)
SIZES = ((3, 3), (5, 5), (7, 7))
"""Kernel sizes with a compiled micro-kernel."""


def fits(taps: np.ndarray) -> bool:
    """Whether weights minus their zero point (any shape) all fit int8: the micro-kernel's operand."""
    return bool(taps.size) and int(taps.min()) >= -128 and int(taps.max()) <= 127


def pack(taps: np.ndarray) -> np.ndarray:
    """(kh, kw, C) int weights minus their zero point -> (C16 / 16, kw, groups, 16, 4) int8:
    per block of sixteen channels, per kernel column and group of four kernel rows, lane c's
    four bytes (zero past kh and past C)."""
    kh, kw, c = taps.shape
    groups = (kh + 3) // 4
    blocks = -(-c // LANES)
    out = np.zeros((blocks * LANES, kw, groups * 4), np.int8)
    out[:c, :, :kh] = taps.transpose(2, 1, 0)
    return np.ascontiguousarray(out.reshape(blocks, LANES, kw, groups, 4).transpose(0, 2, 3, 1, 4))


@njit(nogil=True, cache=True)
def dwv_part(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover
    """Depthwise conv of the HWC image x (H, W, C) into out (Ho, Wo, C), one output row per item;
    returns the items run (see the module docstring)."""
    return dwv_core(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(cache=True, inline="always")
def _columns(kh, flip, prows, off, step, count, pv):  # pragma: no cover - compiled
    if kh == 3:
        if flip:
            _cols_s8_3(prows, off, step, count, pv)
        else:
            _cols_u8_3(prows, off, step, count, pv)
    elif kh == 5:
        if flip:
            _cols_s8_5(prows, off, step, count, pv)
        else:
            _cols_u8_5(prows, off, step, count, pv)
    else:
        if flip:
            _cols_s8_7(prows, off, step, count, pv)
        else:
            _cols_u8_7(prows, off, step, count, pv)


@njit(cache=True, inline="always")
def _run(kw, pv, pstep, tstep, count, pw, pb, pm, zy, lo, hi, pout, ostep, nvalid):  # pragma: no cover - compiled
    if kw == 3:
        _run_3(pv, pstep, tstep, count, pw, pb, pm, zy, lo, hi, pout, ostep, nvalid)
    elif kw == 5:
        _run_5(pv, pstep, tstep, count, pw, pb, pm, zy, lo, hi, pout, ostep, nvalid)
    else:
        _run_7(pv, pstep, tstep, count, pw, pb, pm, zy, lo, hi, pout, ostep, nvalid)


@njit(nogil=True, cache=True)
def dwv_core(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover
    """dwv_part claiming items of job ``tag`` from the counter at ``w0`` (``native.claim``).

    ``wv`` is ``pack``'s array (blocks, kw, groups, 16, 4) of a square kernel (kh = kw);
    ``flip`` True for int8 activations; ``zrow`` a row of the input zero point at least W * C + 16
    bytes long; ``bias`` (C16,) int32 with the zero points folded in and ``mult`` (C16,) float32,
    C rounded up to 16.

    Per output row and block of sixteen channels: the tap vectors of every input column its
    pixels read (``_make_columns``; a column left or right of the image from the zero-point row,
    the image's last column, when C is not a multiple of 16, from a copy with room for a
    sixteen-byte load), then the whole row of pixels from them (``_make_run``)."""
    h, wd, ch = x.shape
    ho, wo = out.shape[0], out.shape[1]
    blocks, kh = wv.shape[0], kw
    c16 = blocks * 16
    rows = np.empty(kh, np.int64)
    zrows = np.empty(kh, np.int64)
    lrows = np.empty(kh, np.int64)
    xa, za, wa, ba, ma = _addr(x), _addr(zrow), _addr(wv), _addr(bias), _addr(mult)
    zfill = zrow[0]
    rem = ch % 16
    lastcol = np.empty((kh, c16 + 16), x.dtype)  # the last column's taps (rem != 0)
    for i in range(kh):
        zrows[i] = za
        lrows[i] = _addr(lastcol) + i * (c16 + 16)
    ra, zra, lra = _addr(rows), _addr(zrows), _addr(lrows)
    rowbytes = wd * ch
    wblock = kw * ((kh + 3) // 4) * 64
    vcol = ((kh + 3) // 4) * 64
    first = -pl  # the first input column read, then ncols of them
    ncols = (wo - 1) * sw + (kw - 1) * dw + 1
    left = min(max(-first, 0), ncols)  # columns left of the image
    real_end = wd - 1 if rem != 0 else wd  # columns read in place: [0, real_end)
    inside = max(min(real_end, first + ncols) - max(first, 0), 0)
    copied = 1 if rem != 0 and first <= wd - 1 < first + ncols else 0
    right = max(first + ncols - max(wd, 0), 0)  # columns right of the image
    vbuf = np.empty(ncols * vcol + 64, np.uint8)
    va = (_addr(vbuf) + 63) & ~63
    n = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        n += 1
        for i in range(kh):
            ih = oh * sh + i * dh - pt
            rows[i] = xa + ih * rowbytes if 0 <= ih < h else za
            if copied:
                if 0 <= ih < h:
                    for c in range(ch):
                        lastcol[i, c] = x[ih, wd - 1, c]
                else:
                    for c in range(ch):
                        lastcol[i, c] = zfill
                for c in range(ch, c16 + 16):
                    lastcol[i, c] = zfill
        oa = _addr(out[oh])
        for cb in range(blocks):
            off = cb * 16
            if left > 0:
                _columns(kh, flip, zra, off, 0, left, va)
            if inside > 0:
                c0 = max(first, 0)
                _columns(kh, flip, ra, c0 * ch + off, ch, inside, va + (c0 - first) * vcol)
            if copied:
                _columns(kh, flip, lra, off, 0, 1, va + (wd - 1 - first) * vcol)
            if right > 0:
                _columns(kh, flip, zra, off, 0, right, va + (ncols - right) * vcol)
            _run(kw, va, sw * vcol, dw * vcol, wo, wa + cb * wblock, ba + cb * 64, ma + cb * 64, zy, lo, hi, oa + off, ch,
                 min(16, ch - off))
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return n
