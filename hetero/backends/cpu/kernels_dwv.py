"""Depthwise QLinearConv with AVX-512 VNNI: four taps of sixteen channels per ``vpdpbusd``.

A depthwise conv sums, per channel, kh x kw products of one input byte and one weight. Laid out
channels-last, a kernel row's kw taps of sixteen channels are kw vectors of sixteen bytes; the
micro-kernel (``_make_dwv``, LLVM IR through a numba intrinsic) interleaves up to four of them
byte by byte into one 64-byte vector (channel c's taps side by side in lane c) and adds their
products to sixteen int32 lanes with one ``vpdpbusd`` (unsigned inputs times signed weights),
so a 3x3 kernel is three vpdpbusd (and their byte shuffles) per sixteen channels where the int16 kernels
(kernels_nhwc._dw3_row) widen and multiply each tap apart. The weights minus their zero point
must fit int8 (any symmetric int8 quantization; otherwise the plan keeps the int16 kernels).
int8 activations are flipped to uint8 (XOR 0x80) as they are loaded, the 128 * sum(w) this adds
folded into the bias with the input zero point.

No padded copy of the image: a kernel row above or below it reads a row of the zero point, and
an output pixel whose taps leave the image at a side (or, when C is not a multiple of 16, read
its last column, where a 16-byte load could pass the buffer's end) gathers its taps into a small
per-thread patch first. Each block's sixteen int32 sums are requantized in the micro-kernel by
kernels_int8's ``_requant`` rules in the same float32 operations (multiply, round half to even,
add the zero point, clamp; nothing fused), so every output equals the other kernels' bit for bit,
and stored as sixteen bytes (a block past C spills onto the next pixel, written after it; a row's
last one goes through a spare buffer). Work items are output rows, claimed like kernels_shared's
(``dwv_part``, ``dwv_core``; native_jobs compiles ``dwv_core`` too: after changing this module
clear its ``*.nbi``/``*.nbc`` as well).
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


def _make_dwv(kh: int, kw: int, flip: bool):
    """An intrinsic ``uk(prows, off, dx, pw, pbias, pmult, zy, lo, hi, pout)``: sixteen channels of
    one output pixel, summed, requantized and stored as sixteen bytes at ``pout``.

    ``prows`` the address of kh int64 byte addresses (one per kernel row), ``off`` the byte
    offset of the pixel's first tap in each, ``dx`` the bytes between horizontal taps, ``pw``
    the block's packed weights (kh x groups 64-byte vectors: lane c holds channel c's four taps),
    ``pbias``/``pmult`` the block's sixteen int32 biases and float32 multipliers. The requantization
    is kernels_int8's ``_requant`` lane by lane (the same float32 operations, none fused)."""
    i8, i16, i32, i64, f32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
    v16i8, v16i16, v16i32, v16f32 = (ir.VectorType(i8, 16), ir.VectorType(i16, 16), ir.VectorType(i32, 16),
                                     ir.VectorType(f32, 16))
    groups = (kw + 3) // 4
    pair = ir.Constant(ir.VectorType(i32, 32), [k // 2 + 16 * (k % 2) for k in range(32)])
    zero8 = ir.Constant(v16i8, None)
    sign = ir.Constant(v16i8, [-128] * 16)
    splat0 = ir.Constant(ir.VectorType(i32, 16), [0] * 16)

    def codegen(context, builder, signature, args):
        prows, off, dx, pw, pbias, pmult, zy, lo, hi, pout = args
        fnty = ir.FunctionType(v16i32, [v16i32, v16i32, v16i32])
        dp = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=fnty)
        rint = builder.module.declare_intrinsic("llvm.rint.v16f32", fnty=ir.FunctionType(v16f32, [v16f32]))

        def splat(value):
            v = builder.insert_element(ir.Constant(v16f32, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, ir.Constant(v16f32, ir.Undefined), splat0)

        acc = builder.load(builder.inttoptr(pbias, v16i32.as_pointer()), align=1)
        for i in range(kh):
            row = builder.load(builder.inttoptr(builder.add(prows, ir.Constant(i64, 8 * i)), i64.as_pointer()), align=8)
            base = builder.add(row, off)
            for g in range(groups):
                taps = []
                for j in range(4 * g, 4 * g + 4):
                    if j >= kw:
                        taps.append(zero8)
                        continue
                    addr = builder.add(base, builder.mul(dx, ir.Constant(i64, j)))
                    v = builder.load(builder.inttoptr(addr, v16i8.as_pointer()), align=1)
                    taps.append(builder.xor(v, sign) if flip else v)
                ab = builder.bitcast(builder.shuffle_vector(taps[0], taps[1], pair), v16i16)
                cd = builder.bitcast(builder.shuffle_vector(taps[2], taps[3], pair), v16i16)
                quad = builder.bitcast(builder.shuffle_vector(ab, cd, pair), v16i32)
                wv = builder.load(builder.inttoptr(builder.add(pw, ir.Constant(i64, 64 * (i * groups + g))),
                                                   v16i32.as_pointer()), align=1)
                acc = builder.call(dp, [acc, quad, wv])
        mult = builder.load(builder.inttoptr(pmult, v16f32.as_pointer()), align=1)
        y = builder.fadd(builder.call(rint, [builder.fmul(builder.sitofp(acc, v16f32), mult)]), splat(zy))
        vlo, vhi = splat(lo), splat(hi)
        y = builder.select(builder.fcmp_ordered("<", y, vlo), vlo, y)
        y = builder.select(builder.fcmp_ordered(">", y, vhi), vhi, y)
        q = builder.trunc(builder.fptosi(y, v16i32), v16i8)
        builder.store(q, builder.inttoptr(pout, v16i8.as_pointer()), align=1)
        return context.get_dummy_value()

    @intrinsic
    def ukernel(typingctx, prows, off, dx, pw, pbias, pmult, zy, lo, hi, pout):
        sig = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.float32, types.float32, types.float32, types.intp)
        return sig, codegen

    return ukernel


_uk_u8_3 = _make_dwv(3, 3, False)
_uk_s8_3 = _make_dwv(3, 3, True)
_uk_u8_5 = _make_dwv(5, 5, False)
_uk_s8_5 = _make_dwv(5, 5, True)
_uk_u8_7 = _make_dwv(7, 7, False)
_uk_s8_7 = _make_dwv(7, 7, True)
SIZES = ((3, 3), (5, 5), (7, 7))
"""Kernel sizes with a compiled micro-kernel."""


def fits(taps: np.ndarray) -> bool:
    """Whether weights minus their zero point (any shape) all fit int8: the micro-kernel's operand."""
    return bool(taps.size) and int(taps.min()) >= -128 and int(taps.max()) <= 127


def pack(taps: np.ndarray) -> np.ndarray:
    """(kh, kw, C) int weights minus their zero point -> (C16 / 16, kh, groups, 16, 4) int8:
    per block of sixteen channels, per kernel row and group of four taps, lane c's four bytes."""
    kh, kw, c = taps.shape
    groups = (kw + 3) // 4
    blocks = -(-c // LANES)
    out = np.zeros((blocks * LANES, kh, groups * 4), np.int8)
    out[:c, :, :kw] = taps.transpose(2, 0, 1)
    return np.ascontiguousarray(out.reshape(blocks, LANES, kh, groups, 4).transpose(0, 2, 3, 1, 4))


@njit(nogil=True, cache=True)
def dwv_part(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, counter):  # pragma: no cover
    """Depthwise conv of the HWC image x (H, W, C) into out (Ho, Wo, C), one output row per item;
    returns the items run (see the module docstring)."""
    return dwv_core(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, _addr(counter), 0)


@njit(cache=True, inline="always")
def _block(kh, kw, flip, prows, off, dx, pw, pb, pm, zy, lo, hi, pout):  # pragma: no cover - compiled
    if kh == 3 and kw == 3:
        if flip:
            _uk_s8_3(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)
        else:
            _uk_u8_3(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)
    elif kh == 5 and kw == 5:
        if flip:
            _uk_s8_5(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)
        else:
            _uk_u8_5(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)
    else:
        if flip:
            _uk_s8_7(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)
        else:
            _uk_u8_7(prows, off, dx, pw, pb, pm, zy, lo, hi, pout)


@njit(cache=True, inline="always")
def _edges(x, patch, zfill, pa, spare, oh, ow0, ow1, wa, ba, ma, zy, lo, hi, orow, kh, kw, flip, sh, sw, dh, dw, pt, pl,
           wblock):  # pragma: no cover - compiled
    """Output pixels ow0..ow1-1 of row oh (``orow``, (Wo, C)) from their taps gathered into
    ``patch`` (zero point outside the image); a block whose sixteen bytes would pass the row's
    end goes to ``spare`` and its channels are copied from there."""
    h, wd, ch = x.shape
    c16 = patch.shape[2] - 16
    blocks = c16 // 16
    flat = orow.reshape(orow.size)
    oa, sa = _addr(orow), _addr(spare)
    for ow in range(ow0, ow1):
        iw0 = ow * sw - pl
        for i in range(kh):
            ih = oh * sh + i * dh - pt
            for j in range(kw):
                iw = iw0 + j * dw
                dst = patch[i, j]
                if 0 <= ih < h and 0 <= iw < wd:
                    src = x[ih, iw]
                    for c in range(ch):
                        dst[c] = src[c]
                    for c in range(ch, c16):
                        dst[c] = zfill
                else:
                    for c in range(c16):
                        dst[c] = zfill
        for cb in range(blocks):
            start = ow * ch + cb * 16
            if start + 16 <= flat.size:
                _block(kh, kw, flip, pa, cb * 16, c16 + 16, wa + cb * wblock, ba + cb * 64, ma + cb * 64, zy, lo, hi,
                       oa + start)
            else:
                _block(kh, kw, flip, pa, cb * 16, c16 + 16, wa + cb * wblock, ba + cb * 64, ma + cb * 64, zy, lo, hi, sa)
                for c in range(min(16, ch - cb * 16)):
                    flat[start + c] = spare[c]


@njit(nogil=True, cache=True)
def dwv_core(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, w0, tag):  # pragma: no cover
    """dwv_part claiming items of job ``tag`` from the counter at ``w0`` (``native.claim``).

    ``wv`` is ``pack``'s array (blocks, kh, groups, 16, 4); ``flip`` True for int8 activations;
    ``zrow`` a row of the input zero point at least W * C + 16 bytes long; ``bias`` (C16,) int32
    with the zero points folded in and ``mult`` (C16,) float32, C rounded up to 16."""
    h, wd, ch = x.shape
    ho, wo = out.shape[0], out.shape[1]
    blocks, kh = wv.shape[0], wv.shape[1]
    c16 = blocks * 16
    patch = np.empty((kh, kw, c16 + 16), x.dtype)
    spare = np.empty(16, out.dtype)
    rows = np.empty(kh, np.int64)
    prow = np.empty(kh, np.int64)
    for i in range(kh):
        prow[i] = _addr(patch) + i * kw * (c16 + 16)
    zfill = zrow[0]
    xa, za, wa, ba, ma = _addr(x), _addr(zrow), _addr(wv), _addr(bias), _addr(mult)
    ra, pa = _addr(rows), _addr(prow)
    rowbytes = wd * ch
    wblock = kh * ((kw + 3) // 4) * 64
    rem = ch % 16
    last = wd - 1 if rem != 0 else wd  # a tap on this column is gathered (see the module doc)
    # output columns whose taps all lie inside the image (and off ``last``) and whose blocks'
    # sixteen-byte stores end inside the output row (a block past C spills onto the next pixel,
    # written after it)
    lo_ow = min((pl + sw - 1) // sw, wo)
    hi_ow = lo_ow
    while hi_ow < wo and hi_ow * ch + c16 <= wo * ch:
        right = hi_ow * sw - pl + (kw - 1) * dw
        if right >= wd or right == last:
            break
        hi_ow += 1
    n = 0
    oh = claim(w0, tag, ho)
    while oh >= 0:
        n += 1
        for i in range(kh):
            ih = oh * sh + i * dh - pt
            rows[i] = xa + ih * rowbytes if 0 <= ih < h else za
        orow = out[oh]
        oa = _addr(orow)
        _edges(x, patch, zfill, pa, spare, oh, 0, lo_ow, wa, ba, ma, zy, lo, hi, orow, kh, kw, flip, sh, sw, dh, dw, pt, pl,
               wblock)
        for ow in range(lo_ow, hi_ow):
            off = (ow * sw - pl) * ch
            po = oa + ow * ch
            for cb in range(blocks):
                _block(kh, kw, flip, ra, off + cb * 16, dw * ch, wa + cb * wblock, ba + cb * 64, ma + cb * 64, zy, lo,
                       hi, po + cb * 16)
        _edges(x, patch, zfill, pa, spare, oh, hi_ow, wo, wa, ba, ma, zy, lo, hi, orow, kh, kw, flip, sh, sw, dh, dw, pt,
               pl, wblock)
        _count_done(w0 + 8)
        oh = claim(w0, tag, ho)
    return n
