"""Exact int8/uint8 GEMM for the numba CPU backend.

The fast path drives AVX-512 VNNI ``vpdpbusd`` (u8 x s8 dot products of 4-byte groups added
to s32 lanes) through the LLVM intrinsic ``llvm.x86.avx512.vpdpbusd.512`` in a micro-kernel
holding an MR x NR int32 tile in zmm registers; a blocked int32 numba kernel is the exact
fallback. Both return ``(a - a_zp) @ (b - b_zp)`` modulo 2**32, as numpy int32 does.

Operands are first given the instruction's signedness: ``a_u = a + 128`` for int8
activations and ``b_s = b - 128`` for uint8 weights (each an XOR 0x80 of the bits). With
shifts ``sa``, ``sb`` (128 or 0), ``alpha = sa + a_zp`` and ``beta_j = sb - b_zp[j]``:
``(a - a_zp) @ (b - b_zp) = a_u @ b_s + beta_j * R_i - alpha * (S_j + beta_j * K)``, where
``R_i`` sums row i of ``a_u`` and ``S_j`` column j of ``b_s``. The micro-kernel adds the
last two terms to its accumulators before storing them.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import llvmlite.binding as llb
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import config
from numba.extending import intrinsic

from hetero.errors import DeviceError, InputError

log = logging.getLogger(__name__)

MR = 6
"""Rows of a VNNI micro-kernel tile (one broadcast register each)."""
NB = 4
"""zmm vectors (16 int32 columns each) per micro-kernel row."""
NR = 16 * NB
"""Columns of a tile; packed weights come in panels this wide."""
MB = 8
"""Row panels (of MR rows) per work item."""

_MASK32 = 0xFFFFFFFF


def _detect_vnni() -> bool:
    """Whether numba's compilation target can execute AVX-512 VNNI."""
    if config.CPU_FEATURES:
        return {"+avx512f", "+avx512vnni"} <= set(config.CPU_FEATURES.split(","))
    if config.CPU_NAME not in (None, "host"):
        return False  # a named (e.g. generic) target: do not assume the host's extensions
    host = llb.get_host_cpu_features()
    return bool(host.get("avx512f", False)) and bool(host.get("avx512vnni", False))


HAS_VNNI: bool = _detect_vnni()
"""True when the VNNI kernel can run here; otherwise qgemm uses the int32 fallback."""
log.debug("AVX-512 VNNI int8 GEMM %s", "enabled" if HAS_VNNI else "unavailable: int32 fallback")


@intrinsic
def _addr(typingctx, arr):
    """The data pointer of an array, as an intp.

    An address does not keep its array alive, so every array whose address the kernels use
    is allocated by their Python caller, and outlives the compiled call.
    """
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, context.get_value_type(types.intp))

    return types.intp(arr), codegen


@intrinsic
def _fetch_add(typingctx, addr, val):
    """Atomically add ``val`` to the int64 at ``addr``; return the previous value."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", ptr, args[1], "monotonic")

    return types.intp(types.intp, types.intp), codegen


def _make_ukernel(mr: int, nb: int, flip: bool):
    """An intrinsic computing one mr x 16*nb int32 tile with vpdpbusd.

    ``uk(pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp)``, byte addresses and strides as intp:
    ``pa`` row 0 of A with row stride ``lda`` (4*kg bytes per row are read, XORed with 0x80
    when ``flip``), ``pb`` a packed B panel (kg groups of nb 64-byte vectors), ``pc`` the
    int32 tile with row stride ``ldc``, ``pr`` mr int32 row sums ``R`` and ``pbeta``/``pcomp``
    16*nb int32 epilogue terms: the tile stored is ``acc + R_i * beta_j + comp_j``.
    """
    i32, i64 = ir.IntType(32), ir.IntType(64)
    v16 = ir.VectorType(i32, 16)
    pv16, pi32 = v16.as_pointer(), i32.as_pointer()
    zero, undef = ir.Constant(v16, None), ir.Constant(v16, ir.Undefined)
    splat0 = ir.Constant(v16, [0] * 16)

    def c64(x: int) -> ir.Constant:
        return ir.Constant(i64, x)

    def codegen(context, builder, signature, args):
        pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp = args
        fnty = ir.FunctionType(v16, [v16, v16, v16])
        dp = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=fnty)

        def vload(addr):
            return builder.load(builder.inttoptr(addr, pv16), align=1)

        def bcast(addr, flip_bits=False):
            s = builder.load(builder.inttoptr(addr, pi32), align=1)
            if flip_bits:
                # XOR the scalar, not the broadcast vector: LLVM 22's x86 instruction
                # selection never terminates on xor(broadcast(load), splat constant).
                s = builder.xor(s, ir.Constant(i32, -0x7F7F7F80))  # 0x80808080
            v = builder.insert_element(undef, s, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, undef, splat0)

        rows = [builder.mul(lda, c64(r)) for r in range(mr)]
        entry = builder.block
        loop = builder.append_basic_block("uk.loop")
        done = builder.append_basic_block("uk.done")
        builder.cbranch(builder.icmp_signed(">", kg, c64(0)), loop, done)

        builder.position_at_end(loop)  # one 4-deep k group per trip
        it, ca, cb = builder.phi(i64), builder.phi(i64), builder.phi(i64)
        accs = [builder.phi(v16) for _ in range(mr * nb)]
        bv = [vload(builder.add(cb, c64(64 * j))) for j in range(nb)]
        new = []
        for r in range(mr):
            av = bcast(builder.add(ca, rows[r]), flip)
            new += [builder.call(dp, [accs[r * nb + j], av, bv[j]]) for j in range(nb)]
        steps = [builder.add(it, c64(1)), builder.add(ca, c64(4)), builder.add(cb, c64(64 * nb))]
        tail = builder.block
        firsts = [c64(0), pa, pb] + [zero] * len(accs)
        for phi, first, nxt in zip([it, ca, cb, *accs], firsts, steps + new):
            phi.add_incoming(first, entry)
            phi.add_incoming(nxt, tail)
        builder.cbranch(builder.icmp_signed("<", steps[0], kg), loop, done)

        builder.position_at_end(done)
        outs = [builder.phi(v16) for _ in new]
        for phi, nxt in zip(outs, new):
            phi.add_incoming(zero, entry)
            phi.add_incoming(nxt, tail)
        beta = [vload(builder.add(pbeta, c64(64 * j))) for j in range(nb)]
        comp = [vload(builder.add(pcomp, c64(64 * j))) for j in range(nb)]
        for r in range(mr):
            rv = bcast(builder.add(pr, c64(4 * r)))
            row = builder.add(pc, builder.mul(ldc, c64(r)))
            for j in range(nb):
                val = builder.add(builder.add(outs[r * nb + j], builder.mul(rv, beta[j])), comp[j])
                builder.store(val, builder.inttoptr(builder.add(row, c64(64 * j)), pv16), align=1)
        return context.get_dummy_value()

    @intrinsic
    def ukernel(typingctx, pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp):
        return types.void(*([types.intp] * 9)), codegen

    return ukernel


_ukernel_u8 = _make_ukernel(MR, NB, flip=False)
_ukernel_s8 = _make_ukernel(MR, NB, flip=True)


@dataclass(frozen=True, eq=False)
class PackedB:
    """Weights in the VNNI panel layout, with what qgemm needs to undo the shift.

    ``data[p, g, 64*v + 4*c + t]`` is ``b_s[4*g + t, NR*p + 16*v + c]`` (int8), where
    ``b_s = b`` for int8 weights and ``b - 128`` for uint8 ones; K is zero-padded to a
    multiple of 4 and N to a multiple of NR. ``colsum`` holds the int64 column sums of b.
    """

    data: np.ndarray
    k: int
    n: int
    dtype: np.dtype
    colsum: np.ndarray

    @property
    def k_groups(self) -> int:
        """Number of 4-deep k groups, ceil(K / 4)."""
        return int(self.data.shape[1])


@njit(parallel=True, cache=True)
def _pack_b(bbits, xor, kg, npan):
    """The PackedB.data layout of ``bbits ^ xor``."""
    k, n = bbits.shape
    out = np.zeros((npan, kg, NR * 4), np.int8)
    for p in prange(npan):
        for kk in range(k):
            for jj in range(min(NR, n - p * NR)):
                out[p, kk >> 2, 4 * jj + (kk & 3)] = bbits[kk, p * NR + jj] ^ xor
    return out


def pack_weights(b: np.ndarray) -> PackedB:
    """Pack int8 or uint8 weights of shape (K, N) for qgemm."""
    if not isinstance(b, np.ndarray) or b.ndim != 2 or b.dtype not in (np.int8, np.uint8):
        raise InputError(f"pack_weights: need a 2-D int8 or uint8 array, got {_describe(b)}")
    k, n = b.shape
    b = np.ascontiguousarray(b)
    xor = 0x80 if b.dtype == np.uint8 else 0
    data = _pack_b(b.view(np.uint8), xor, (k + 3) // 4, (n + NR - 1) // NR)
    colsum = b.sum(axis=0, dtype=np.int64)
    return PackedB(data=data, k=k, n=n, dtype=np.dtype(b.dtype), colsum=colsum)


@njit(parallel=True, cache=True)
def _row_sums(a, shift, size):
    """int32 row sums of ``a + shift``, zero-padded to ``size``."""
    m, k = a.shape
    rs = np.zeros(size, np.int32)
    for i in prange(m):
        s = 0
        for kk in range(k):
            s += a[i, kk]
        rs[i] = s + shift * k
    return rs


@njit(cache=True)
def _tile(flip, pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp):
    """One micro-kernel tile, for uint8 (or, when ``flip``, int8) activations."""
    if flip:
        _ukernel_s8(pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp)
    else:
        _ukernel_u8(pa, lda, pb, kg, pc, ldc, pr, pbeta, pcomp)


@njit(parallel=True, cache=True)
def _gemm_vnni(a, edge, flip, bp, rs, beta, comp, out, tmp, counter, ng):
    """Workers (one per tmp slab) claim (row block, column group) items from ``counter``."""
    m, n = out.shape
    lda = a.shape[1]
    npan, kg = bp.shape[0], bp.shape[1]
    mpan = (m + MR - 1) // MR
    nbn = (npan + ng - 1) // ng
    nwork = ((mpan + MB - 1) // MB) * nbn
    a0, e0, b0, c0 = _addr(a), _addr(edge), _addr(bp), _addr(out)
    r0, be0, co0, t0, w0 = _addr(rs), _addr(beta), _addr(comp), _addr(tmp), _addr(counter)
    for wid in prange(tmp.shape[0]):
        tw = t0 + wid * MR * NR * 4
        w = _fetch_add(w0, 1)
        while w < nwork:
            bm, bn = w // nbn, w % nbn
            for q in range(bn * ng, min(bn * ng + ng, npan)):
                j0 = q * NR
                pb = b0 + q * kg * NR * 4
                for p in range(bm * MB, min(bm * MB + MB, mpan)):
                    i0 = p * MR
                    pa = a0 + i0 * lda if i0 + MR <= m else e0
                    pr, pbe, pco = r0 + i0 * 4, be0 + j0 * 4, co0 + j0 * 4
                    if i0 + MR <= m and j0 + NR <= n:
                        _tile(flip, pa, lda, pb, kg, c0 + (i0 * n + j0) * 4, n * 4, pr, pbe, pco)
                    else:  # edge tile: compute it whole into scratch, copy the part that exists
                        _tile(flip, pa, lda, pb, kg, tw, NR * 4, pr, pbe, pco)
                        for r in range(min(MR, m - i0)):
                            for jj in range(min(NR, n - j0)):
                                out[i0 + r, j0 + jj] = tmp[wid, r, jj]
            w = _fetch_add(w0, 1)


@njit(parallel=True, cache=True)
def _gemm_portable(a, flip, bp, rs, beta, comp, out):
    """The same product as _gemm_vnni, from B panels unpacked to int32, with plain numba."""
    m, n = out.shape
    npan, kg = bp.shape[0], bp.shape[1]
    xor = 0x80 if flip else 0
    rblk = MR * MB
    for blk in prange((m + rblk - 1) // rblk):
        bt = np.empty((kg * 4, NR), np.int32)  # one B panel, unpacked to int32 rows
        acc = np.empty(NR, np.int32)
        for q in range(npan):
            j0 = q * NR
            for kk in range(kg * 4):
                for jj in range(NR):
                    bt[kk, jj] = bp[q, kk >> 2, 4 * jj + (kk & 3)]
            for i in range(blk * rblk, min(blk * rblk + rblk, m)):
                acc[:] = 0
                for kk in range(kg * 4):
                    av = np.int32(a[i, kk] ^ xor)
                    for jj in range(NR):
                        acc[jj] += av * bt[kk, jj]
                for jj in range(min(NR, n - j0)):
                    out[i, j0 + jj] = acc[jj] + rs[i] * beta[j0 + jj] + comp[j0 + jj]


def _describe(x: object) -> str:
    """Type, shape and dtype of an argument, for error messages."""
    return f"{type(x).__name__} shape={getattr(x, 'shape', '-')} dtype={getattr(x, 'dtype', '-')}"


def _epilogue_terms(sa: int, a_zero_point: int, packed: PackedB, b_zero_point) -> tuple:
    """``beta_j`` and ``comp_j = -alpha * (S_j + beta_j * K)`` as int32, padded to NR panels.

    Computed modulo 2**32 in uint64, where every product of two residues wraps exactly.
    """
    zb = np.asarray(b_zero_point)
    if zb.dtype.kind not in "iub" or zb.shape not in ((), (packed.n,)):
        want = f"an integer or {packed.n} integers"
        raise InputError(f"qgemm: b_zero_point must be {want}, got {_describe(zb)}")
    try:
        alpha = np.uint64((sa + operator.index(a_zero_point)) & _MASK32)
    except TypeError:
        got = _describe(a_zero_point)
        raise InputError(f"qgemm: a_zero_point must be an integer, got {got}") from None
    mask, k = np.uint64(_MASK32), np.uint64(packed.k)
    sb = 128 if packed.dtype == np.uint8 else 0
    beta = (sb - np.broadcast_to(zb, (packed.n,)).astype(np.int64)).astype(np.uint64) & mask
    s = (packed.colsum - sb * packed.k).astype(np.uint64) & mask
    comp = (np.uint64(1 << 32) - alpha * ((s + beta * k) & mask)) & mask
    terms = np.zeros((2, packed.data.shape[0] * NR), np.int32)
    terms[:, : packed.n] = np.stack([beta, comp]).astype(np.uint32).view(np.int32)
    return terms[0], terms[1], bool(beta.any())


@contextmanager
def _num_threads(threads: int | None) -> Iterator[None]:
    """Run the body with numba's thread count set to ``threads`` (None: unchanged)."""
    if threads is None:
        yield
        return
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise InputError(f"qgemm: threads must be in 1..{limit}, got {threads}")
    prev = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def qgemm(
    a: np.ndarray,
    a_zero_point: int,
    packed: PackedB,
    b_zero_point: int | np.ndarray = 0,
    threads: int | None = None,
    use_vnni: bool | None = None,
) -> np.ndarray:
    """Exact int32 ``(a - a_zero_point) @ (b - b_zero_point)`` for packed weights b.

    ``a`` is int8 or uint8 of shape (M, K); ``b_zero_point`` a scalar or per-column (N,)
    array. Results wrap modulo 2**32 like numpy int32 arithmetic. ``use_vnni`` forces the
    VNNI kernel (True) or the portable one (False); None picks VNNI when ``HAS_VNNI``.
    """
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.dtype not in (np.int8, np.uint8):
        raise InputError(f"qgemm: a must be a 2-D int8 or uint8 array, got {_describe(a)}")
    if a.shape[1] != packed.k:
        raise InputError(f"qgemm: a has K={a.shape[1]} but the packed weights have K={packed.k}")
    vnni = HAS_VNNI if use_vnni is None else bool(use_vnni)
    if vnni and not HAS_VNNI:
        raise DeviceError("qgemm: use_vnni=True but this CPU target lacks AVX-512 VNNI")
    m, k, n = a.shape[0], packed.k, packed.n
    sa = 128 if a.dtype == np.int8 else 0
    beta, comp, need_rows = _epilogue_terms(sa, a_zero_point, packed, b_zero_point)
    out = np.empty((m, n), np.int32)
    if m == 0 or n == 0:
        return out
    a = np.ascontiguousarray(a)
    mp = (m + MR - 1) // MR * MR
    with _num_threads(threads):
        rs = _row_sums(a, sa, mp) if need_rows else np.zeros(mp, np.int32)
        bits = a.view(np.uint8)
        if 4 * packed.k_groups != k:
            bits = np.pad(bits, ((0, 0), (0, 4 * packed.k_groups - k)))
        if vnni:
            _run_vnni(bits, sa != 0, packed.data, rs, beta, comp, out)
        else:
            _gemm_portable(bits, sa != 0, packed.data, rs, beta, comp, out)
    return out


def _run_vnni(bits, flip, bp, rs, beta, comp, out) -> None:
    """Allocate the VNNI driver's buffers, choose its work split, run it."""
    m, lda = bits.shape
    workers = numba.get_num_threads()
    mpan, npan = (m + MR - 1) // MR, bp.shape[0]
    edge = np.zeros((MR, lda), np.uint8)  # the last row panel, zero-padded to MR rows
    edge[: m - (mpan - 1) * MR] = bits[(mpan - 1) * MR :]
    row_blocks = (mpan + MB - 1) // MB
    col_groups = min(npan, -(-16 * workers // row_blocks))  # >= 16 items per worker, if possible
    tmp = np.empty((workers, MR, NR), np.int32)
    counter = np.zeros(1, np.int64)
    _gemm_vnni(bits, edge, flip, bp, rs, beta, comp, out, tmp, counter, -(-npan // col_groups))


def kernel_asm() -> str:
    """Assembly of an uncached build of the VNNI tile function (to check for vpdpbusd)."""
    if not HAS_VNNI:
        raise DeviceError("kernel_asm: this CPU target lacks AVX-512 VNNI")
    fn = njit(cache=False)(_tile.py_func)
    fn.compile((types.boolean,) + (types.intp,) * 9)
    return "\n".join(fn.inspect_asm(sig) for sig in fn.signatures)
