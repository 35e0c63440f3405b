"""The jobs native helper threads run (``native``): the fused GEMM's and the implicit-GEMM
convolution's work loops, the depthwise convolutions', QLinearAdd's, the pools', QuantizeLinear's
and the fused float tails' (``kernels_tail``), posted as a kind and
a block of words (arrays are rebuilt from their addresses and shapes with ``numba.carray``).

The calling thread writes a job's words (array addresses, sizes, the requantizer's float32
constants as float64 bits), publishes it, runs the same address-based work loop
(``gemm_fused.conv_tiles_core``, ``gemm_requant_core``) and waits for the items helpers claimed,
all in one compiled call: posting costs no Python and no GIL hand-off. Kinds not posted here
(other depthwise convs, pools, concats, ...) share work through ``helpers``' Python threads.

numba's cache caveat: these functions compile gemm_fused's work loops into this module's cache;
after changing those clear this module's ``*.nbi``/``*.nbc``.
"""

from __future__ import annotations

import os

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from hetero.backends.cpu import kernels_dw as dk
from hetero.backends.cpu import kernels_dwv as dv
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu import kernels_tail as kt
from hetero.backends.cpu import helpers, native
from hetero.backends.cpu.gemm import MB, MR, _addr
from hetero.backends.cpu.gemm_fused import conv_tiles_core, gemm_requant_core, grouped_tiles_core
from hetero.backends.cpu.helpers import _load_acquire, _pause
from hetero.backends.cpu.kernels_nhwc import CHUNK
from hetero.backends.cpu.kernels_dw import dw5_px_core, dw5_rows_core
from hetero.backends.cpu.kernels_dwv import dwv_core
from hetero.backends.cpu.kernels_shared import (QUANTIZE_BLOCK, dw3_px_core, dw3_rows_core, dw3s2_rows_core,
                                                max_pool_core, qadd_core, quantize_core)
from hetero.backends.cpu.native import (ARGS, CLAIM, ENDS, FROM_BACK, FUTEX, FUTEX_WAIT_PRIVATE, GEN, HELPED, KIND, NARGS, REST,
                                        SLEEPERS, SPIN, STOP, SYS_FUTEX, TS, WORKERS, _atomic_add, _call6, _cycles, _fence, _load_seq,
                                        begin_post, end_post, wait_done)

KIND_CONV, KIND_GEMM, KIND_GROUPED = 1, 2, 3
# depthwise 3x3 and QLinearAdd, uint8 activations; + 1 for int8 ones
KIND_DW3_ROWS, KIND_DW3S2_ROWS, KIND_DW3_PX, KIND_QADD, KIND_QUANTIZE = 4, 6, 8, 10, 12
KIND_DW5_ROWS, KIND_DW5_PX, KIND_MAX_POOL, KIND_DWV = 14, 16, 18, 20
KIND_LOOKUP, KIND_GATED, KIND_CONCAT = 22, 24, 26  # kernels_tail: bytes; 8-bit activations; bytes


@intrinsic
def _voidptr(typingctx, addr):
    """An address as a void pointer (for ``numba.carray``)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.voidptr))

    return types.voidptr(types.intp), codegen


@njit(inline="always")
def _bytes(dtype, addr, shape):  # pragma: no cover - compiled
    return carray(_voidptr(addr), shape, dtype)


@njit(nogil=True, cache=True)
def _run_small(kind, w, fl, w0, tag, s8):  # pragma: no cover - compiled
    """The depthwise and QLinearAdd jobs with activations of type ``s8`` (np.int8 or np.uint8)."""
    if kind == KIND_DW3_ROWS:
        return dw3_rows_core(_bytes(s8, w[0], (w[1], w[2], w[3])), carray(_voidptr(w[4]), (9, w[5]), np.int16),
                             w[6], w[7], carray(_voidptr(w[8]), w[5], np.int32), carray(_voidptr(w[9]), w[5], np.float32),
                             np.float32(fl[10]), np.float32(fl[11]), np.float32(fl[12]),
                             _bytes(s8, w[13], (w[14], w[15], w[3])), w0, tag)
    if kind == KIND_DW3S2_ROWS:
        return dw3s2_rows_core(_bytes(s8, w[0], (w[1], 2, w[2], w[3])), carray(_voidptr(w[4]), (9, w[5]), np.int16),
                               carray(_voidptr(w[8]), w[5], np.int32), carray(_voidptr(w[9]), w[5], np.float32),
                               np.float32(fl[10]), np.float32(fl[11]), np.float32(fl[12]),
                               _bytes(s8, w[13], (w[14], w[15], w[3])), w0, tag)
    if kind == KIND_DW3_PX:
        return dw3_px_core(_bytes(s8, w[0], (w[1], w[2], w[3])), carray(_voidptr(w[4]), (9, w[3]), np.int16),
                           w[16], w[17], w[6], w[7], carray(_voidptr(w[8]), w[3], np.int32),
                           carray(_voidptr(w[9]), w[3], np.float32), np.float32(fl[10]), np.float32(fl[11]),
                           np.float32(fl[12]), _bytes(s8, w[13], (w[14], w[15], w[3])), w0, tag)
    if kind == KIND_DW5_ROWS:
        return dw5_rows_core(_bytes(s8, w[0], (w[1], w[2], w[3])), carray(_voidptr(w[4]), (25, w[5]), np.int16),
                             w[6], w[7], carray(_voidptr(w[8]), w[5], np.int32), carray(_voidptr(w[9]), w[5], np.float32),
                             np.float32(fl[10]), np.float32(fl[11]), np.float32(fl[12]),
                             _bytes(s8, w[13], (w[14], w[15], w[3])), w0, tag)
    if kind == KIND_DW5_PX:
        return dw5_px_core(_bytes(s8, w[0], w[1]), w[2], carray(_voidptr(w[4]), (25, w[5]), np.int16), w[16], w[17],
                           w[6], w[7], carray(_voidptr(w[8]), w[5], np.int32), carray(_voidptr(w[9]), w[5], np.float32),
                           np.float32(fl[10]), np.float32(fl[11]), np.float32(fl[12]),
                           _bytes(s8, w[13], (w[14], w[15], w[3])), w0, tag)
    if kind == KIND_DWV:
        return dwv_core(_bytes(s8, w[0], (w[1], w[2], w[3])), _bytes(s8, w[4], w[5]),
                        carray(_voidptr(w[6]), (w[7], w[8], w[9], 16, 4), np.int8), w[10], w[11] != 0, w[12], w[13],
                        w[14], w[15], w[16], w[17], carray(_voidptr(w[18]), w[7] * 16, np.int32),
                        carray(_voidptr(w[19]), w[7] * 16, np.float32), np.float32(fl[20]), np.float32(fl[21]),
                        np.float32(fl[22]), _bytes(s8, w[23], (w[24], w[25], w[3])), w0, tag)
    if kind == KIND_MAX_POOL:
        return max_pool_core(_bytes(s8, w[0], (w[1], w[2], w[3], w[4])), w[11], w[12], w[13], w[14], w[15], w[16],
                             w[17], w[18], s8(w[10]), _bytes(s8, w[5], (w[1], w[6], w[7], w[4])), w0, tag)
    if kind == KIND_QUANTIZE:
        return quantize_core(carray(_voidptr(w[0]), (w[1], w[2], w[3]), np.float32),
                             carray(_voidptr(w[4]), w[2], np.float32), carray(_voidptr(w[5]), w[2], np.float32),
                             np.float32(fl[6]), np.float32(fl[7]), _bytes(s8, w[8], (w[1], w[3], w[2])), w0, tag)
    if kind == KIND_LOOKUP:
        return kt.lookup_core(_bytes(np.uint8, w[0], w[1]), _bytes(np.uint8, w[2], 256), _bytes(np.uint8, w[3], w[1]), w0, tag)
    if kind == KIND_CONCAT:
        return kt.concat_core(carray(_voidptr(w[0]), w[1], np.int64), carray(_voidptr(w[2]), w[1], np.int64),
                              carray(_voidptr(w[3]), w[1], np.int64), _bytes(np.uint8, w[4], (w[1], 256)),
                              _bytes(np.uint8, w[5], (w[6], w[7])), w0, tag)
    if kind == KIND_GATED:
        return kt.gated_core(_bytes(s8, w[0], (w[1], w[2], w[3])), np.int32(w[4]), np.float32(fl[5]),
                             carray(_voidptr(w[6]), (w[1], w[7]), np.float32),
                             carray(_voidptr(w[14]), (w[1], w[7]), np.float32), w[8] != 0, np.float32(fl[9]),
                             np.float32(fl[10]), np.float32(fl[11]), np.float32(fl[12]),
                             _bytes(s8, w[13], (w[1], w[2], w[3])), w0, tag)
    if kind == KIND_QADD:
        return qadd_core(_bytes(s8, w[0], w[1]), _bytes(s8, w[2], w[1]), np.float32(fl[3]), np.float32(fl[4]),
                         np.float32(fl[5]), np.float32(fl[6]), np.float32(fl[7]), _bytes(s8, w[8], w[1]), w0, tag)
    return 0


@njit(nogil=True, cache=True)
def run_block(kind, words, w0, tag):  # pragma: no cover - compiled
    """Run job ``tag``'s work loop from its words; the items this thread ran."""
    fl = words.view(np.float64)
    if kind == KIND_CONV:
        return conv_tiles_core(words[0], words[1], words[2], words[3], words[4], words[5], words[6] != 0, words[7],
                               words[8], words[9], words[10], words[11], words[12], words[13], words[14], words[15],
                               np.float32(fl[16]), np.float32(fl[17]), np.float32(fl[18]), words[19], words[20], w0,
                               tag, words[21], words[22])
    if kind == KIND_GEMM:
        return gemm_requant_core(words[0], words[1], words[2], words[3], words[4], words[5] != 0, words[6], words[7],
                                 words[8], words[9], words[10], words[11], words[12], words[13], words[14],
                                 np.float32(fl[15]), np.float32(fl[16]), np.float32(fl[17]), words[18], words[19],
                                 words[20], w0, tag, words[21])
    if kind == KIND_GROUPED:
        return grouped_tiles_core(words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7] != 0,
                                  words[8], words[9], words[10], words[11], words[12], words[13], words[14], words[15],
                                  np.float32(fl[16]), np.float32(fl[17]), np.float32(fl[18]), words[19], words[20], w0,
                                  tag, words[21], words[22])
    if kind >= KIND_DW3_ROWS:
        if kind & 1:
            return _run_small(kind & ~1, words, fl, w0, tag, np.int8)
        return _run_small(kind & ~1, words, fl, w0, tag, np.uint8)
    return 0


@njit(nogil=True, cache=True)
def helper_main(ctl, index, sysfn):  # pragma: no cover - compiled
    """A native helper's whole life: run posted jobs, spin ``ctl[SPIN]`` cycles after each, then
    sleep on the futex word until woken (``native``'s protocol)."""
    base = ctl.ctypes.data
    words = np.empty(NARGS, np.int64)
    seen = _load_seq(base + GEN * 8)
    rested = _load_seq(base + REST * 8)
    last = _cycles()
    while True:
        g = _load_acquire(base + GEN * 8)
        if g != seen:
            if g & 1:  # a block being written
                _pause()
                continue
            kind = ctl[KIND]
            workers = ctl[WORKERS]
            for i in range(NARGS):
                words[i] = ctl[ARGS + i]
            _fence()
            if _load_seq(base + GEN * 8) == g:  # the block was not rewritten while copied
                seen = g
                if index < workers - 1:
                    ran = run_block(kind, words, base + CLAIM * 8, ((g >> 1) & 0x7FFFFFFF) | (FROM_BACK if ctl[ENDS] != 0 else 0))
                    if ran > 0:
                        _atomic_add(base + HELPED * 8, ran)
                last = _cycles()
            continue
        if _load_acquire(base + STOP * 8) != 0:
            return 0
        asked = _load_acquire(base + REST * 8)
        if asked == rested and _cycles() - last < ctl[SPIN]:
            _pause()
            continue
        rested = asked
        word = _load_seq(base + FUTEX * 8)
        _atomic_add(base + SLEEPERS * 8, 1)
        if _load_seq(base + GEN * 8) == seen and _load_seq(base + STOP * 8) == 0:
            _call6(sysfn, SYS_FUTEX, base + FUTEX * 8, FUTEX_WAIT_PRIVATE, word & 0xFFFFFFFF, base + TS * 8, 0)
        _atomic_add(base + SLEEPERS * 8, -1)
        last = _cycles()


@njit(nogil=True, cache=True)
def conv_words(a, img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out, mb,
               ng):  # pragma: no cover - compiled
    """A KIND_CONV job's words in ``a``: conv_tiles_part's arguments as addresses and sizes (the
    image's address at word CONV_IMAGE, the output's at CONV_OUT)."""
    fl = a.view(np.float64)
    a[0], a[1], a[2], a[3], a[4], a[5], a[6] = _addr(img), _addr(table), pixels, kgs, nseg, seg, 1 if flip else 0
    a[7], a[8], a[9], a[10] = _addr(bp), bp.shape[0], bp.shape[1], n
    a[11], a[12], a[13], a[14], a[15] = _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult)
    fl[16], fl[17], fl[18] = zy, lo, hi
    a[19], a[20], a[21], a[22] = _addr(out), out.shape[1], mb, ng


CONV_IMAGE, CONV_OUT = 0, 19


@njit(nogil=True, cache=True)
def grouped_words(w, img, table, pixels, kgs, nseg, seg, flip, bp, n, comp, mult, zy, lo, hi, out,
                  mb):  # pragma: no cover - compiled
    """A KIND_GROUPED job's words in ``w`` (gemm_fused.grouped_tiles_part's arguments; the group
    images at word GROUPED_IMAGES, the output at GROUPED_OUT)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3], w[4], w[5], w[6] = _addr(img), img.shape[1], _addr(table), pixels, kgs, nseg, seg
    w[7], w[8], w[9], w[10], w[11] = 1 if flip else 0, _addr(bp), bp.shape[1] * bp.shape[2] * bp.shape[3], bp.shape[1], bp.shape[2]
    w[12], w[13], w[14], w[15] = n, _addr(comp), _addr(mult), comp.shape[1] * 4
    fl[16], fl[17], fl[18] = zy, lo, hi
    w[19], w[20], w[21], w[22] = _addr(out), out.shape[1], img.shape[0], mb


GROUPED_IMAGES, GROUPED_OUT = 0, 19


@njit(nogil=True, cache=True)
def run_bound(ctl, workers, sysfn, kind, words, nwork, x, x_word, x2, x2_word, out, out_word):  # pragma: no cover
    """Run a job whose words were written when its plan was built (``Bound``), with the
    addresses of ``x``, ``x2`` and ``out`` put at words ``x_word``, ``x2_word`` and ``out_word``:
    posted to ``workers - 1`` native helpers through ``ctl`` and run here, or with one worker run
    here alone on a private counter (``ctl`` not touched)."""
    job = words.copy()
    job[x_word] = _addr(x)
    job[x2_word] = _addr(x2)
    job[out_word] = _addr(out)
    if workers > 1:
        tag = begin_post(ctl)
        a = ctl[ARGS:]
        for i in range(job.size):
            a[i] = job[i]
        end_post(ctl, kind, workers, sysfn)
        run_block(kind, job, _addr(ctl) + CLAIM * 8, tag)
        wait_done(ctl, nwork)
        return nwork
    counter = np.zeros(2, np.int64)
    ran = run_block(kind, job, _addr(counter), 0)
    return ran + 0 * counter[1]  # (counter read after the call: numba would free it after taking its address)


@njit(nogil=True, cache=True)
def conv_tiles_shared(ctl, workers, sysfn, img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias,
                      mult, zy, lo, hi, out, mb, ng):  # pragma: no cover - compiled
    """gemm_fused.conv_tiles_part on ``workers`` threads: this one and ``workers - 1`` native helpers."""
    tag = begin_post(ctl)
    conv_words(ctl[ARGS:], img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out,
               mb, ng)
    end_post(ctl, KIND_CONV, workers, sysfn)
    base = _addr(ctl)
    conv_tiles_core(_addr(img), _addr(table), pixels, kgs, nseg, seg, flip, _addr(bp), bp.shape[0], bp.shape[1], n,
                    _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult), zy, lo, hi, _addr(out),
                    out.shape[1], base + CLAIM * 8, tag, mb, ng)
    npan = bp.shape[0]
    nwork = ((((pixels + MR - 1) // MR) + mb - 1) // mb) * ((npan + ng - 1) // ng)
    wait_done(ctl, nwork)


@njit(nogil=True, cache=True)
def gemm_words(w, a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out, col0,
               ng):  # pragma: no cover - compiled
    """A KIND_GEMM job's words in ``w`` (a at word GEMM_A, its edge rows at GEMM_EDGE, out at GEMM_OUT)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3], w[4], w[5] = _addr(a), _addr(edge), a.shape[0], a.shape[1], m, 1 if flip else 0
    w[6], w[7], w[8], w[9] = _addr(bp), bp.shape[0], bp.shape[1], n
    w[10], w[11], w[12], w[13], w[14] = _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult)
    fl[15], fl[16], fl[17] = zy, lo, hi
    w[18], w[19], w[20], w[21] = _addr(out), out.shape[1], col0, ng


GEMM_A, GEMM_EDGE, GEMM_OUT = 0, 1, 18


@njit(nogil=True, cache=True)
def gemm_requant_shared(ctl, workers, sysfn, a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out,
                        col0, ng):  # pragma: no cover - compiled
    """gemm_fused.gemm_requant_part on ``workers`` threads: this one and ``workers - 1`` native helpers."""
    tag = begin_post(ctl)
    gemm_words(ctl[ARGS:], a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out, col0, ng)
    end_post(ctl, KIND_GEMM, workers, sysfn)
    base = _addr(ctl)
    gemm_requant_core(_addr(a), _addr(edge), a.shape[0], a.shape[1], m, flip, _addr(bp), bp.shape[0], bp.shape[1], n,
                      _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult), zy, lo, hi, _addr(out),
                      out.shape[1], col0, base + CLAIM * 8, tag, ng)
    npan = bp.shape[0]
    nwork = ((((m + MR - 1) // MR) + MB - 1) // MB) * ((npan + ng - 1) // ng)
    wait_done(ctl, nwork)


@njit(nogil=True, cache=True)
def _dw_words(ctl, xp, taps, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover - compiled
    w = ctl[ARGS:]
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3] = _addr(xp), xp.shape[0], xp.shape[-2], xp.shape[-1]
    w[4], w[5], w[6], w[7] = _addr(taps), taps.shape[1], dh, dw
    w[8], w[9] = _addr(bias), _addr(mult)
    fl[10], fl[11], fl[12] = zy, lo, hi
    w[13], w[14], w[15] = _addr(out), out.shape[0], out.shape[1]


@njit(nogil=True, cache=True)
def dw3_rows_shared(ctl, workers, sysfn, kind, xp, taps, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover
    """kernels_shared.dw3_rows_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    _dw_words(ctl, xp, taps, dh, dw, bias, mult, zy, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    dw3_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def dw3s2_rows_shared(ctl, workers, sysfn, kind, xd, taps, bias, mult, zy, lo, hi, out):  # pragma: no cover
    """kernels_shared.dw3s2_rows_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    _dw_words(ctl, xd, taps, 1, 1, bias, mult, zy, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    dw3s2_rows_core(xd, taps, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def dw3_px_shared(ctl, workers, sysfn, kind, xp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover
    """kernels_shared.dw3_px_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    _dw_words(ctl, xp, taps, dh, dw, bias, mult, zy, lo, hi, out)
    ctl[ARGS + 16], ctl[ARGS + 17] = sh, sw
    end_post(ctl, kind, workers, sysfn)
    dw3_px_core(xp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def qadd_words(w, a, b, ra, rb, fixed, lo, hi, out):  # pragma: no cover - compiled
    """A QLinearAdd job's words in ``w`` (a at word 0, b at 2, out at 8)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2] = _addr(a), out.size, _addr(b)
    fl[3], fl[4], fl[5], fl[6], fl[7] = ra, rb, fixed, lo, hi
    w[8] = _addr(out)


@njit(nogil=True, cache=True)
def qadd_shared(ctl, workers, sysfn, kind, a, b, ra, rb, fixed, lo, hi, out):  # pragma: no cover - compiled
    """kernels_shared.qadd_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    qadd_words(ctl[ARGS:], a, b, ra, rb, fixed, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    qadd_core(a, b, ra, rb, fixed, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, (out.size + CHUNK - 1) // CHUNK)


@njit(nogil=True, cache=True)
def dw5_rows_shared(ctl, workers, sysfn, kind, xp, taps, dh, dw, bias, mult, zy, lo, hi, out):  # pragma: no cover
    """kernels_dw.dw5_rows_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    _dw_words(ctl, xp, taps, dh, dw, bias, mult, zy, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    dw5_rows_core(xp, taps, dh, dw, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def dw5_px_shared(ctl, workers, sysfn, kind, xflat, wp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi,
                  out):  # pragma: no cover - compiled
    """kernels_dw.dw5_px_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    w = ctl[ARGS:]
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3] = _addr(xflat), xflat.shape[0], wp, out.shape[2]
    w[4], w[5], w[6], w[7] = _addr(taps), taps.shape[1], dh, dw
    w[8], w[9] = _addr(bias), _addr(mult)
    fl[10], fl[11], fl[12] = zy, lo, hi
    w[13], w[14], w[15], w[16], w[17] = _addr(out), out.shape[0], out.shape[1], sh, sw
    end_post(ctl, kind, workers, sysfn)
    dw5_px_core(xflat, wp, taps, sh, sw, dh, dw, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def dwv_words(w, x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out):  # pragma: no cover
    """A KIND_DWV job's words in ``w`` (x at word 0, out at 23)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3], w[4], w[5] = _addr(x), x.shape[0], x.shape[1], x.shape[2], _addr(zrow), zrow.size
    w[6], w[7], w[8], w[9], w[10], w[11] = _addr(wv), wv.shape[0], wv.shape[1], wv.shape[2], kw, 1 if flip else 0
    w[12], w[13], w[14], w[15], w[16], w[17] = sh, sw, dh, dw, pt, pl
    w[18], w[19] = _addr(bias), _addr(mult)
    fl[20], fl[21], fl[22] = zy, lo, hi
    w[23], w[24], w[25] = _addr(out), out.shape[0], out.shape[1]


@njit(nogil=True, cache=True)
def dwv_shared(ctl, workers, sysfn, kind, x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi,
               out):  # pragma: no cover - compiled
    """kernels_dwv.dwv_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    dwv_words(ctl[ARGS:], x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    dwv_core(x, zrow, wv, kw, flip, sh, sw, dh, dw, pt, pl, bias, mult, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0])


@njit(nogil=True, cache=True)
def max_pool_words(w, x, kh, kw, sh, sw, dh, dw, pt, pl, low, out):  # pragma: no cover - compiled
    """A max-pool job's words in ``w`` (x at word 0, out at 5)."""
    w[0], w[1], w[2], w[3], w[4] = _addr(x), x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    w[5], w[6], w[7] = _addr(out), out.shape[1], out.shape[2]
    w[10] = low
    w[11], w[12], w[13], w[14], w[15], w[16], w[17], w[18] = kh, kw, sh, sw, dh, dw, pt, pl


@njit(nogil=True, cache=True)
def max_pool_shared(ctl, workers, sysfn, kind, x, kh, kw, sh, sw, dh, dw, pt, pl, low, out):  # pragma: no cover
    """kernels_shared.max_pool_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    max_pool_words(ctl[ARGS:], x, kh, kw, sh, sw, dh, dw, pt, pl, low, out)
    end_post(ctl, kind, workers, sysfn)
    max_pool_core(x, kh, kw, sh, sw, dh, dw, pt, pl, low, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, out.shape[0] * out.shape[1])


@njit(nogil=True, cache=True)
def quantize_words(w, x, scale, zp, lo, hi, out):  # pragma: no cover - compiled
    """A QuantizeLinear job's words in ``w`` (x at word 0, out at 8)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3] = _addr(x), x.shape[0], x.shape[1], x.shape[2]
    w[4], w[5] = _addr(scale), _addr(zp)
    fl[6], fl[7] = lo, hi
    w[8] = _addr(out)


@njit(nogil=True, cache=True)
def quantize_shared(ctl, workers, sysfn, kind, x, scale, zp, lo, hi, out):  # pragma: no cover - compiled
    """kernels_shared.quantize_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    quantize_words(ctl[ARGS:], x, scale, zp, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    quantize_core(x, scale, zp, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, x.shape[0] * ((x.shape[2] + QUANTIZE_BLOCK - 1) // QUANTIZE_BLOCK))


@njit(nogil=True, cache=True)
def lookup_words(w, x, table, out):  # pragma: no cover - compiled
    """A table lookup's words in ``w`` (x at word 0, out at 3)."""
    w[0], w[1], w[2], w[3] = _addr(x), out.size, _addr(table), _addr(out)


@njit(nogil=True, cache=True)
def lookup_shared(ctl, workers, sysfn, kind, x, table, out):  # pragma: no cover - compiled
    """kernels_tail.lookup_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    lookup_words(ctl[ARGS:], x, table, out)
    end_post(ctl, kind, workers, sysfn)
    kt.lookup_core(x, table, out, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, (out.size + kt.LOOKUP_CHUNK - 1) // kt.LOOKUP_CHUNK)


@njit(nogil=True, cache=True)
def concat_shared(ctl, workers, sysfn, kind, ptrs, widths, begins, tables, dst):  # pragma: no cover - compiled
    """kernels_tail.concat_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    w = ctl[ARGS:]
    w[0], w[1], w[2], w[3], w[4] = _addr(ptrs), ptrs.size, _addr(widths), _addr(begins), _addr(tables)
    w[5], w[6], w[7] = _addr(dst), dst.shape[0], dst.shape[1]
    end_post(ctl, kind, workers, sysfn)
    kt.concat_core(ptrs, widths, begins, tables, dst, _addr(ctl) + CLAIM * 8, tag)
    wait_done(ctl, (dst.shape[0] + kt.CONCAT_PIXELS - 1) // kt.CONCAT_PIXELS)


@njit(nogil=True, cache=True)
def gated_words(w, x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out):  # pragma: no cover - compiled
    """A gated job's words in ``w`` (x at word 0, the gate at 6, out at 13, the shift at 14)."""
    fl = w.view(np.float64)
    w[0], w[1], w[2], w[3], w[4] = _addr(x), x.shape[0], x.shape[1], x.shape[2], zx
    fl[5] = sx
    w[6], w[7], w[8] = _addr(gate), gate.shape[1], 1 if channels_last else 0
    fl[9], fl[10], fl[11], fl[12] = sy, zy, lo, hi
    w[13], w[14] = _addr(out), _addr(shift)


@njit(nogil=True, cache=True)
def gated_shared(ctl, workers, sysfn, kind, x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out):  # pragma: no cover
    """kernels_tail.gated_part on ``workers`` threads (native helpers)."""
    tag = begin_post(ctl)
    gated_words(ctl[ARGS:], x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out)
    end_post(ctl, kind, workers, sysfn)
    kt.gated_core(x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out, _addr(ctl) + CLAIM * 8, tag)
    per = max(1, kt.GATED_ELEMENTS // max(x.shape[2], 1))
    wait_done(ctl, x.shape[0] * ((x.shape[1] + per - 1) // per))


def _signed(arrays) -> int | None:
    """1 if every array holds int8, 0 if every one uint8, None otherwise (not posted natively)."""
    kinds = {a.dtype for a in arrays}
    if kinds == {np.dtype(np.uint8)}:
        return 0
    if kinds == {np.dtype(np.int8)}:
        return 1
    return None


def _by_activations(shared, kind: int, *positions: int):
    """A part's selector: ``shared`` and ``kind`` (+ 1 for int8) where the activations at
    ``positions`` of its args are all uint8 or all int8, else None."""

    def select(args):
        s8 = _signed(tuple(args[p] for p in positions))
        return None if s8 is None else (shared, kind + s8)

    return select


def _max_pool(args):
    s8 = _signed((args[0], args[-1]))
    if s8 is None or not (args[0].flags.c_contiguous and args[-1].flags.c_contiguous):
        return None
    return max_pool_shared, KIND_MAX_POOL + s8


def _quantize(args):
    s8 = _signed((args[-1],))
    if s8 is None or args[0].dtype != np.float32 or not all(a.flags.c_contiguous for a in (args[0], args[1], args[2], args[-1])):
        return None
    return quantize_shared, KIND_QUANTIZE + s8


def _lookup(args):
    x, table, out = args
    if not (x.dtype == table.dtype == out.dtype == np.uint8 and x.flags.c_contiguous and out.flags.c_contiguous
            and table.flags.c_contiguous and table.size == 256):
        return None
    return lookup_shared, KIND_LOOKUP


def _concat(args):
    ptrs, widths, begins, tables, dst = args
    if not (dst.dtype == tables.dtype == np.uint8 and dst.flags.c_contiguous and tables.flags.c_contiguous
            and all(a.dtype == np.int64 and a.flags.c_contiguous for a in (ptrs, widths, begins))):
        return None
    return concat_shared, KIND_CONCAT


def _gated(args):
    x, gate, out = args[0], args[3], args[-1]
    s8 = _signed((x, out))
    if s8 is None or not (x.flags.c_contiguous and out.flags.c_contiguous and gate.flags.c_contiguous and gate.dtype == np.float32):
        return None
    return gated_shared, KIND_GATED + s8


NATIVE_PARTS = {ks.dw3_rows_part: _by_activations(dw3_rows_shared, KIND_DW3_ROWS, 0, -1),
                ks.dw3s2_rows_part: _by_activations(dw3s2_rows_shared, KIND_DW3S2_ROWS, 0, -1),
                ks.dw3_px_part: _by_activations(dw3_px_shared, KIND_DW3_PX, 0, -1),
                ks.qadd_part: _by_activations(qadd_shared, KIND_QADD, 0, 1, -1),
                dk.dw5_rows_part: _by_activations(dw5_rows_shared, KIND_DW5_ROWS, 0, -1),
                dk.dw5_px_part: _by_activations(dw5_px_shared, KIND_DW5_PX, 0, -1),
                dv.dwv_part: _by_activations(dwv_shared, KIND_DWV, 0, -1),
                ks.quantize_part: _quantize, ks.max_pool_part: _max_pool,
                kt.lookup_part: _lookup, kt.gated_part: _gated, kt.concat_part: _concat}
"""kernels_shared work loops posted to native helpers: part -> (args -> (shared function, kind) or None)."""
_WORDS = {dwv_shared: dwv_words, qadd_shared: qadd_words, max_pool_shared: max_pool_words,
          quantize_shared: quantize_words, lookup_shared: lookup_words, gated_shared: gated_words}
"""Shared functions whose words ``bind_part`` can write ahead of a run: shared -> its words writer."""


def run_part(part, args: tuple, workers: int) -> bool:
    """Run the kernels_shared work loop ``part(*args, counter)`` on ``workers`` threads through
    native helpers; False (nothing run) where it has no native job or the pool is busy or off."""
    how = NATIVE_PARTS.get(part)
    if how is None:
        return False
    chosen = how(args)
    if chosen is None:
        return False
    return run_shared(chosen[0], workers, (chosen[1], *args))


def run_shared(shared, workers: int, args: tuple) -> bool:
    """``shared(ctl, workers, sysfn, *args)`` with the pool's lock held; False where the pool is
    off or another thread holds it (the caller then runs the job through ``helpers``)."""
    pool_ = pool()
    if pool_ is None or not pool_.lock.acquire(blocking=False):
        return False
    try:
        pool_.ensure(workers - 1)
        shared(pool_.ctl, workers, pool_.sysfn, *args)
    finally:
        pool_.lock.release()
    return True


_NO_CTL = np.zeros(native.SIZE, np.int64)  # run_bound's ctl with one worker (never read)


class Bound:
    """A step's job of ``kind`` whose words are written when its plan is built, once per thread
    count (``make(workers)`` -> (words, items, workers used)): a run patches in its inputs' and
    output's addresses (words ``x_word``, ``x2_word``, ``out_word``) and costs one compiled call
    of a dozen arguments, where the kernel's own entry unboxes two dozen (resnet18's and
    mobilenet_v2's convolutions spent 3-6 us a call outside their work loops that way)."""

    __slots__ = ("kind", "x_word", "x2_word", "out_word", "make", "_by_workers")

    def __init__(self, kind: int, x_word: int, out_word: int, make, x2_word: int | None = None) -> None:
        self.kind, self.x_word, self.out_word, self.make = kind, x_word, out_word, make
        self.x2_word = x_word if x2_word is None else x2_word
        self._by_workers: dict[int, tuple] = {}

    def run(self, x: np.ndarray, out: np.ndarray, x2: np.ndarray | None = None) -> bool:
        """Run the job on C-contiguous ``x`` (and ``x2``) into ``out`` on numba's current thread
        count; False (nothing run) where it needs helpers and the pool is off or busy (the
        caller then runs the kernel's own entry)."""
        workers = helpers.thread_count()
        entry = self._by_workers.get(workers)
        if entry is None:
            entry = self._by_workers[workers] = self.make(workers)
        words, items, used = entry
        second = x if x2 is None else x2
        if used <= 1:
            run_bound(_NO_CTL, 1, 0, self.kind, words, items, x, self.x_word, second, self.x2_word, out, self.out_word)
            return True
        pool_ = pool()
        if pool_ is None or not pool_.lock.acquire(blocking=False):
            return False
        try:
            pool_.ensure(used - 1)
            run_bound(pool_.ctl, used, pool_.sysfn, self.kind, words, items, x, self.x_word, second, self.x2_word, out,
                      self.out_word)
        finally:
            pool_.lock.release()
        return True


def bind_part(part, args: tuple, items: int, x_word: int, out_word: int, x2_word: int | None = None) -> Bound | None:
    """A kernels_shared work loop ``part(*args, counter)`` over ``items`` items as a ``Bound``
    job: ``args`` as a run would pass them, with placeholder arrays of the run's shapes and
    dtypes for the inputs and the output (their addresses are replaced at each run); None
    where the part has no bound form or its dtypes post no native job."""
    how = NATIVE_PARTS.get(part)
    chosen = None if how is None else how(args)
    if chosen is None or chosen[0] not in _WORDS:
        return None
    shared, kind = chosen
    words = np.zeros(native.NARGS, np.int64)
    _WORDS[shared](words, *args)

    def make(workers: int, _keep: tuple = args) -> tuple:  # (_keep: the arrays the words point at live with the job)
        return words, items, max(1, min(workers, items))

    return Bound(kind, x_word, out_word, make, x2_word)


_POOL: native.NativePool | None = None


def pool() -> native.NativePool | None:
    """The process's native helper pool (started on first use), or None where native helpers are off."""
    global _POOL
    if not native.ENABLED:
        return None
    if _POOL is None:
        _POOL = native.NativePool(helper_main)
    return _POOL


def wake() -> None:
    """Wake sleeping native helpers (if started): they spin for SPIN_US from now. A plan run with
    more than one thread starts with this, so its ops, whichever thread count they run at, find
    the helpers awake (a helper woken by a job's post arrives tens of microseconds late)."""
    if _POOL is not None and _POOL.ctl[SLEEPERS] > 0 and _POOL.ctl[SPIN] > 0:
        _POOL.wake()


def rest() -> None:
    """Let idle native helpers sleep now instead of spinning out SPIN_US (the end of a runtime
    segment: the runtime's queue and device threads run next on these cores); the next plan run
    wakes them."""
    if _POOL is not None:
        _POOL.rest()


def share_cores(sharing: bool) -> None:
    """While another device runs on this host's cores (``sharing``: an OpenCL CPU device in the
    same plan), native helpers sleep right after each job instead of spinning SPIN_US for the
    next (a spinning helper took the core PoCL's threads needed); back to SPIN_US otherwise."""
    pool_ = pool()
    if pool_ is not None:
        pool_.set_spin_us(0.0 if sharing else native.SPIN_US)


def _after_fork() -> None:
    """A forked child has none of the parent's helper threads: start afresh."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_after_fork)
