"""Work loops for the float tails a compiled plan fuses (``hetero.backends.cpu.tails``).

- ``lookup_part``: an 8-bit tensor through a 256-entry table (a DequantizeLinear -> elementwise
  float ops -> QuantizeLinear region is a function of one byte: the table holds its 256 results,
  computed by the reference).
- ``gated_part``: QuantizeLinear(DequantizeLinear(x) * g) with g one float per (image, channel)
  (a squeeze-and-excitation gate): per element the float32 product of the dequantized value and
  the gate, then the quantization, the same float32 operations in the same order as the three
  ops, written once.

``lookup_core`` looks 64 bytes up at a time: where the host has AVX-512 VBMI (and numba compiles
for the host), by two ``vpermi2b`` (each a 128-entry lookup) and a select on the index's top bit,
about ten times the rate of one byte at a time (301 kB: 145 -> 14 us per thread measured); else by
64 scalar lookups (``_lookup64``: the choice is made when numba compiles, and its cache is keyed by
the CPU's features).

Both follow kernels_shared's protocol (items claimed from an atomic counter, ``run_items`` or a
native helper job), so every item is computed by the same code whichever thread runs it.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from hetero.backends.cpu.gemm import _addr
from hetero.backends.cpu.gemm_fused import _count_done
from hetero.backends.cpu.kernels_nhwc import _quantize_one
from hetero.backends.cpu.native import claim

__all__ = ["lookup_part", "lookup_core", "gated_part", "gated_core", "concat_part", "concat_core", "LOOKUP_CHUNK",
           "GATED_ELEMENTS", "CONCAT_PIXELS", "VBMI"]

LOOKUP_CHUNK = 32768
"""Bytes per work item of ``lookup_part``."""
GATED_ELEMENTS = 16384
"""About how many elements a work item of ``gated_part`` covers (whole rows)."""
CONCAT_PIXELS = 128
"""Pixels (output rows) per work item of ``concat_part``."""
GATED_ROW = 2048
"""About how many elements ``gated_core``'s channels-last inner loop runs over at once."""


def _host_has_vbmi() -> bool:
    """Whether numba compiles for this host (no NUMBA_CPU_NAME) and it has AVX-512 VBMI and BW,
    or NUMBA_CPU_FEATURES names both."""
    wanted = ("avx512vbmi", "avx512bw")
    named = numba.config.CPU_FEATURES
    if named:
        return all(f"+{f}" in named.split(",") for f in wanted)
    if numba.config.CPU_NAME not in (None, "", "host"):
        return False
    try:
        features = llvm_binding.get_host_cpu_features()
    except RuntimeError:  # pragma: no cover - llvmlite could not read the features
        return False
    return all(features.get(f, False) for f in wanted)


VBMI = _host_has_vbmi()
"""Whether ``lookup_core`` uses AVX-512 VBMI byte permutes (decided once, when imported)."""

_V64 = ir.VectorType(ir.IntType(8), 64)


def _permute256(builder, x, table):
    """table[x] for 64 index bytes ``x`` (a vector) and a 256-byte table at address ``table``:
    two VBMI ``vpermi2b`` (each a 128-entry lookup by the index's low 7 bits) and a select on
    bit 7, as LLVM IR."""
    permute = builder.module.declare_intrinsic("llvm.x86.avx512.vpermi2var.qi.512", fnty=ir.FunctionType(_V64, [_V64] * 3))
    tp = builder.inttoptr(table, _V64.as_pointer())
    quarters = [builder.load(builder.gep(tp, [ir.Constant(ir.IntType(64), k)]), align=1) for k in range(4)]
    low, high = builder.call(permute, [quarters[0], x, quarters[1]]), builder.call(permute, [quarters[2], x, quarters[3]])
    return builder.select(builder.icmp_signed("<", x, ir.Constant(_V64, None)), high, low)


def _emit_lookup64(builder, src, table, dst, vbmi: bool) -> None:
    """dst[0:64] = table[src[0:64]] at three addresses, as LLVM IR."""
    if not vbmi:
        i8p = ir.IntType(8).as_pointer()
        s, t, d = (builder.inttoptr(a, i8p) for a in (src, table, dst))
        for k in range(64):
            at = ir.Constant(ir.IntType(64), k)
            byte = builder.zext(builder.load(builder.gep(s, [at])), ir.IntType(64))
            builder.store(builder.load(builder.gep(t, [byte])), builder.gep(d, [at]))
        return
    vp = _V64.as_pointer()
    value = _permute256(builder, builder.load(builder.inttoptr(src, vp), align=1), table)
    builder.store(value, builder.inttoptr(dst, vp), align=1)


def _lookup64_intrinsic(vbmi: bool):
    @intrinsic
    def lookup64(typingctx, src, table, dst):
        def codegen(context, builder, signature, args):
            _emit_lookup64(builder, *args, vbmi=vbmi)
            return context.get_dummy_value()

        return types.void(types.intp, types.intp, types.intp), codegen

    return lookup64


_lookup64 = _lookup64_intrinsic(VBMI)
_lookup64_scalar = _lookup64_intrinsic(False)


def _emit_lookup_tail(context, builder, src, table, dst, count, vbmi: bool) -> None:
    """dst[0:count] = table[src[0:count]] for a run-time count below 64: VBMI, one masked load,
    the two permutes and a masked store (masked-off bytes are neither read nor written); else a
    loop of scalar lookups."""
    i64 = ir.IntType(64)
    if not vbmi:
        i8p = ir.IntType(8).as_pointer()
        s, t, d = (builder.inttoptr(a, i8p) for a in (src, table, dst))
        with cgutils.for_range(builder, count) as loop:
            byte = builder.zext(builder.load(builder.gep(s, [loop.index])), i64)
            builder.store(builder.load(builder.gep(t, [byte])), builder.gep(d, [loop.index]))
        return
    vp = _V64.as_pointer()
    m64 = ir.VectorType(ir.IntType(1), 64)
    one = ir.Constant(i64, 1)
    mask = builder.bitcast(builder.sub(builder.shl(one, count), one), m64)
    align = ir.Constant(ir.IntType(32), 1)
    load = builder.module.declare_intrinsic("llvm.masked.load.v64i8.p0", fnty=ir.FunctionType(_V64, [vp, ir.IntType(32), m64, _V64]))
    store = builder.module.declare_intrinsic("llvm.masked.store.v64i8.p0", fnty=ir.FunctionType(ir.VoidType(), [_V64, vp, ir.IntType(32), m64]))
    x = builder.call(load, [builder.inttoptr(src, vp), align, mask, ir.Constant(_V64, None)])
    builder.call(store, [_permute256(builder, x, table), builder.inttoptr(dst, vp), align, mask])


def _lookup_tail_intrinsic(vbmi: bool):
    @intrinsic
    def lookup_tail(typingctx, src, table, dst, count):
        def codegen(context, builder, signature, args):
            _emit_lookup_tail(context, builder, *args, vbmi=vbmi)
            return context.get_dummy_value()

        return types.void(types.intp, types.intp, types.intp, types.int64), codegen

    return lookup_tail


_lookup_tail = _lookup_tail_intrinsic(VBMI)
_lookup_tail_scalar = _lookup_tail_intrinsic(False)


def _lookup_loop(block, tail):
    """dst[0:count] = table[src[0:count]] at three addresses, by 64-byte ``block`` lookups and one
    ``tail`` of the rest."""

    @njit(nogil=True, inline="always")
    def lookup_at(src, table, dst, count):  # pragma: no cover - compiled
        i = 0
        while i + 64 <= count:
            block(src + i, table, dst + i)
            i += 64
        if i < count:
            tail(src + i, table, dst + i, count - i)

    return lookup_at


_lookup_at = _lookup_loop(_lookup64, _lookup_tail)
_lookup_at_scalar = _lookup_loop(_lookup64_scalar, _lookup_tail_scalar)


@njit(nogil=True, inline="always")
def _lookup_span(x, table, out, lo, hi):  # pragma: no cover - compiled
    _lookup_at(_addr(x) + lo, _addr(table), _addr(out) + lo, hi - lo)


@njit(nogil=True)
def lookup_portable(x, table, out):  # pragma: no cover - compiled
    """out = table[x] by the portable (non-VBMI) code: 64 scalar lookups per block and a loop
    for the tail, for tests on hosts that have VBMI."""
    _lookup_at_scalar(_addr(x), _addr(table), _addr(out), out.size)


@njit(nogil=True, cache=True)
def lookup_part(x, table, out, counter):  # pragma: no cover - compiled
    """out[i] = table[x[i]] over flat uint8 arrays, one LOOKUP_CHUNK per item."""
    return lookup_core(x, table, out, _addr(counter), 0)


@njit(nogil=True, cache=True)
def lookup_core(x, table, out, w0, tag):  # pragma: no cover - compiled
    """lookup_part claiming items of job ``tag`` from the counter at ``w0``."""
    n = out.size
    chunks = (n + LOOKUP_CHUNK - 1) // LOOKUP_CHUNK
    ran = 0
    t = claim(w0, tag, chunks)
    while t >= 0:
        ran += 1
        _lookup_span(x, table, out, t * LOOKUP_CHUNK, min(n, t * LOOKUP_CHUNK + LOOKUP_CHUNK))
        _count_done(w0 + 8)
        t = claim(w0, tag, chunks)
    return ran


@njit(nogil=True, cache=True, error_model="numpy")  # no zero-division check: the division vectorises
def gated_part(x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out, counter):  # pragma: no cover - compiled
    """See gated_core."""
    return gated_core(x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out, _addr(counter), 0)


@njit(nogil=True, cache=True, error_model="numpy")
def gated_core(x, zx, sx, gate, shift, channels_last, sy, zy, lo, hi, out, w0, tag):  # pragma: no cover - compiled
    """out = quantize(float32(x - zx) * sx * gate[n, c] + shift[n, c]) on x of shape (N, A, B):
    channels-last (A pixels, B channels: the gate varies along B) or not (A channels, B pixels);
    items are blocks of rows of one image. Each product and sum is one float32 rounding (a zero
    shift changes no output byte: only a zero's sign, which quantizes alike)."""
    nb, rows, cols = x.shape
    per = max(1, GATED_ELEMENTS // max(cols, 1))
    blocks = (rows + per - 1) // per
    # channels-last: the gate repeated over ``span`` pixels, so the inner loop runs over
    # span * cols elements (vectorised) rather than cols (a few dozen channels)
    span = max(1, GATED_ROW // max(cols, 1)) if channels_last else 1
    grow = np.empty(span * cols if channels_last else 0, np.float32)
    srow = np.empty(span * cols if channels_last else 0, np.float32)
    filled = -1
    ran = 0
    t = claim(w0, tag, nb * blocks)
    while t >= 0:
        ran += 1
        n, b = t // blocks, t % blocks
        g, h = gate[n], shift[n]
        r0, r1 = b * per, min(rows, b * per + per)
        if channels_last:
            if filled != n:
                for i in range(span * cols):
                    grow[i] = g[i % cols]
                    srow[i] = h[i % cols]
                filled = n
            xn, on = x[n].reshape(rows * cols), out[n].reshape(rows * cols)
            for r in range(r0, r1, span):
                base = r * cols
                xs, os = xn[base : base + min(span, r1 - r) * cols], on[base : base + min(span, r1 - r) * cols]
                for i in range(xs.size):
                    value = (np.float32(np.int32(xs[i]) - zx) * sx) * grow[i] + srow[i]
                    os[i] = _quantize_one(value, sy, zy, lo, hi)
        else:
            for r in range(r0, r1):
                xs, os = x[n, r], out[n, r]
                gr, hr = g[r], h[r]
                for p in range(cols):
                    value = (np.float32(np.int32(xs[p]) - zx) * sx) * gr + hr
                    os[p] = _quantize_one(value, sy, zy, lo, hi)
        _count_done(w0 + 8)
        t = claim(w0, tag, nb * blocks)
    return ran


@njit(nogil=True, cache=True)
def concat_part(ptrs, widths, begins, tables, dst, counter):  # pragma: no cover - compiled
    """See concat_core."""
    return concat_core(ptrs, widths, begins, tables, dst, _addr(counter), 0)


@njit(nogil=True, cache=True)
def concat_core(ptrs, widths, begins, tables, dst, w0, tag):  # pragma: no cover - compiled
    """A channels-last QLinearConcat in one pass: for each output row (pixel) and part k, the
    part's ``widths[k]`` bytes (at address ``ptrs[k]``, rows contiguous) through its 256-byte
    table ``tables[k]`` (the identity for a part already in the output's scale, else its
    requantization) into columns ``begins[k]:`` of ``dst`` (pixels, channels)."""
    pixels, row = dst.shape
    items = (pixels + CONCAT_PIXELS - 1) // CONCAT_PIXELS
    base, tab = _addr(dst), _addr(tables)
    ran = 0
    t = claim(w0, tag, items)
    while t >= 0:
        ran += 1
        for p in range(t * CONCAT_PIXELS, min(pixels, t * CONCAT_PIXELS + CONCAT_PIXELS)):
            for k in range(ptrs.size):
                width = widths[k]
                _lookup_at(ptrs[k] + p * width, tab + k * 256, base + p * row + begins[k], width)
        _count_done(w0 + 8)
        t = claim(w0, tag, items)
    return ran
