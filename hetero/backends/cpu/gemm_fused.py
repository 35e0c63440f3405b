"""The VNNI int8 GEMM with its requantizer fused: int8/uint8 out, written once.

``_make_ukernel_rq`` is gemm's micro-kernel (an MR x NR int32 tile in zmm registers, u8 x s8
``vpdpbusd``) whose epilogue, instead of storing int32, finishes each output on the
registers: ``acc + R_i * beta_j + comp_j`` (gemm's shift terms) ``+ bias_j``, wrapping in
int32 as numpy does, then rules 2-3 in float32 (``rint(float32(v) * mult_j) + zy``, clamped
to [lo, hi]) and a 16-byte store per vector. ``rint`` is ``llvm.rint``, which rounds half to
even like ``np.rint``; no step is contracted into an FMA. A convolution (``conv_tiles_part``, the
kernel built ``indirect``) or QGemm thus reads its activations once and writes its uint8 output rows
in place (channels-last).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from hetero.backends.cpu import helpers, native
from hetero.backends.cpu.gemm import MB, MR, NB, NR, _addr, _gemm_portable
from hetero.backends.cpu.kernels_int8 import _requant
from hetero.backends.cpu.native import claim


def _make_ukernel_rq(mr: int, nb: int, flip: bool, indirect: bool = False):
    """``uk(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)``:
    one mr x 16*nb tile of requantized output bytes at ``py`` (row stride ``ldy`` bytes), of
    which rows < ni and columns < nj are stored. ``nb`` < NB computes only the first columns
    of a packed panel (an output with 16 or 32 channels wastes no dot products).

    Row r of A is ``nseg`` segments of ``4*kgs`` bytes, segment s at ``pa + r*lda + s*seg``
    (one segment for a plain GEMM; for an implicit convolution one per tap row, read in place
    from the padded NHWC image); the B panel holds the ``nseg*kgs`` groups in order. The
    output bytes are the same for uint8 and int8 (a value in [lo, hi] truncated to 8 bits).

    ``indirect``: row r of A starts at byte ``lda + table[r]`` instead, ``pa`` the address of an
    int64 table of mr offsets (an implicit convolution's tile of consecutive output pixels that
    may span output rows), and no row sums are used: ``pcomp`` holds ``comp_j + bias_j``
    (``pr``, ``pbeta``, ``pbias`` are not read)."""
    i8, i32, i64, f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
    v16, vf, vb = ir.VectorType(i32, 16), ir.VectorType(f32, 16), ir.VectorType(i8, 16)
    pv16, pvf, pvb, pi32 = v16.as_pointer(), vf.as_pointer(), vb.as_pointer(), i32.as_pointer()
    zero, undef = ir.Constant(v16, None), ir.Constant(v16, ir.Undefined)
    undef_f = ir.Constant(vf, ir.Undefined)
    splat0 = ir.Constant(v16, [0] * 16)

    def c64(x: int) -> ir.Constant:
        return ir.Constant(i64, x)

    vmask = ir.VectorType(ir.IntType(1), 16)
    lanes = ir.Constant(v16, list(range(16)))

    def codegen(context, builder, signature, args):
        pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj = args
        dp = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=ir.FunctionType(v16, [v16, v16, v16]))
        rint = builder.module.declare_intrinsic("llvm.rint.v16f32", fnty=ir.FunctionType(vf, [vf]))
        mstore = builder.module.declare_intrinsic("llvm.masked.store.v16i8.p0",
                                                  fnty=ir.FunctionType(ir.VoidType(), [vb, pvb, i32, vmask]))

        def vload(addr, ptr=pv16):
            return builder.load(builder.inttoptr(addr, ptr), align=1)

        def bcast(addr, flip_bits=False):
            s = builder.load(builder.inttoptr(addr, pi32), align=1)
            if flip_bits:
                s = builder.xor(s, ir.Constant(i32, -0x7F7F7F80))  # 0x80808080 (see gemm._make_ukernel)
            v = builder.insert_element(undef, s, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, undef, splat0)

        def fsplat(x):
            v = builder.insert_element(undef_f, x, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, undef_f, splat0)

        if indirect:
            pi64 = i64.as_pointer()
            rows = [builder.add(lda, builder.load(builder.inttoptr(builder.add(pa, c64(8 * r)), pi64), align=8))
                    for r in range(mr)]
            start = c64(0)
        else:
            rows = [builder.mul(lda, c64(r)) for r in range(mr)]
            start = pa
        total = builder.mul(kgs, nseg)
        jump = builder.sub(seg, builder.mul(kgs, c64(4)))  # from a segment's end to the next one's start
        entry = builder.block
        loop = builder.append_basic_block("ukrq.loop")
        done = builder.append_basic_block("ukrq.done")
        builder.cbranch(builder.icmp_signed(">", total, c64(0)), loop, done)

        builder.position_at_end(loop)  # one 4-deep k group per trip
        it, inner, ca, cb = builder.phi(i64), builder.phi(i64), builder.phi(i64), builder.phi(i64)
        accs = [builder.phi(v16) for _ in range(mr * nb)]
        bv = [vload(builder.add(cb, c64(64 * j))) for j in range(nb)]
        new = []
        for r in range(mr):
            av = bcast(builder.add(ca, rows[r]), flip)
            new += [builder.call(dp, [accs[r * nb + j], av, bv[j]]) for j in range(nb)]
        inner1 = builder.add(inner, c64(1))
        wrap = builder.icmp_signed("==", inner1, kgs)
        ca1 = builder.add(ca, c64(4))
        steps = [builder.add(it, c64(1)), builder.select(wrap, c64(0), inner1),
                 builder.select(wrap, builder.add(ca1, jump), ca1), builder.add(cb, c64(64 * NB))]
        tail = builder.block
        firsts = [c64(0), c64(0), start, pb] + [zero] * len(accs)
        for phi, first, nxt in zip([it, inner, ca, cb, *accs], firsts, steps + new):
            phi.add_incoming(first, entry)
            phi.add_incoming(nxt, tail)
        builder.cbranch(builder.icmp_signed("<", steps[0], total), loop, done)

        builder.position_at_end(done)
        outs = [builder.phi(v16) for _ in new]
        for phi, nxt in zip(outs, new):
            phi.add_incoming(zero, entry)
            phi.add_incoming(nxt, tail)
        comp = [vload(builder.add(pcomp, c64(64 * j))) for j in range(nb)]
        if not indirect:
            beta = [vload(builder.add(pbeta, c64(64 * j))) for j in range(nb)]
            bias = [vload(builder.add(pbias, c64(64 * j))) for j in range(nb)]
        mult = [vload(builder.add(pmult, c64(64 * j)), pvf) for j in range(nb)]
        zyv, lov, hiv = fsplat(zy), fsplat(lo), fsplat(hi)
        nj32 = builder.trunc(nj, i32)
        njv = builder.shuffle_vector(builder.insert_element(undef, nj32, ir.Constant(i32, 0)), undef, splat0)
        masks = [builder.icmp_signed("<", builder.add(lanes, ir.Constant(v16, [16 * j] * 16)), njv) for j in range(nb)]
        full = builder.icmp_signed(">=", nj, c64(16 * nb))
        for r in range(mr):
            rv = None if indirect else bcast(builder.add(pr, c64(4 * r)))
            row = builder.add(py, builder.mul(ldy, c64(r)))
            store_row = builder.append_basic_block(f"ukrq.row{r}")
            after = builder.append_basic_block(f"ukrq.after{r}")
            builder.cbranch(builder.icmp_signed(">", ni, c64(r)), store_row, after)
            builder.position_at_end(store_row)
            values = []
            for j in range(nb):
                if indirect:  # no row sums: comp holds comp + bias (int32, wrapping)
                    val = builder.add(outs[r * nb + j], comp[j])
                else:
                    val = builder.add(builder.add(outs[r * nb + j], builder.mul(rv, beta[j])), comp[j])
                    val = builder.add(val, bias[j])
                y = builder.fadd(builder.call(rint, [builder.fmul(builder.sitofp(val, vf), mult[j])]), zyv)
                y = builder.select(builder.fcmp_ordered("<", y, lov), lov, y)
                y = builder.select(builder.fcmp_ordered(">", y, hiv), hiv, y)
                values.append(builder.trunc(builder.fptosi(y, v16), vb))
            with builder.if_else(full) as (whole, part):
                with whole:  # every column of the tile exists: plain stores
                    for j, q in enumerate(values):
                        builder.store(q, builder.inttoptr(builder.add(row, c64(16 * j)), pvb), align=1)
                with part:  # the output's last columns: masked stores write only columns < nj
                    for j, q in enumerate(values):
                        addr = builder.inttoptr(builder.add(row, c64(16 * j)), pvb)
                        builder.call(mstore, [q, addr, ir.Constant(i32, 1), masks[j]])
            builder.branch(after)
            builder.position_at_end(after)
        return context.get_dummy_value()

    @intrinsic
    def ukernel(typingctx, pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj):
        sig = types.void(*([types.intp] * 13), types.float32, types.float32, types.float32, types.intp, types.intp)
        return sig, codegen

    return ukernel


_uk_u8, _uk_s8 = _make_ukernel_rq(MR, NB, flip=False), _make_ukernel_rq(MR, NB, flip=True)
_uk_u8_48, _uk_s8_48 = _make_ukernel_rq(MR, 3, flip=False), _make_ukernel_rq(MR, 3, flip=True)
_uk_u8_32, _uk_s8_32 = _make_ukernel_rq(MR, 2, flip=False), _make_ukernel_rq(MR, 2, flip=True)
_uk_u8_16, _uk_s8_16 = _make_ukernel_rq(MR, 1, flip=False), _make_ukernel_rq(MR, 1, flip=True)
_uk1_u8, _uk1_s8 = _make_ukernel_rq(1, NB, flip=False), _make_ukernel_rq(1, NB, flip=True)


@njit(cache=True)
def _tile_rq(flip, pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj):  # pragma: no cover
    """One fused tile for uint8 (or, when ``flip``, int8) activations; stores rows < ni, columns
    < nj, and computes only as many 16-column vectors as nj needs (1, 2, 3 or all 4). A one-row tile
    (a batch-1 QGemm's, a GEMV) runs a one-row kernel: MR rows would multiply MR - 1 unused ones."""
    if ni == 1:
        if flip:
            _uk1_s8(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _uk1_u8(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif nj > 48:
        if flip:
            _uk_s8(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _uk_u8(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif nj > 32:
        if flip:
            _uk_s8_48(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _uk_u8_48(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif nj > 16:
        if flip:
            _uk_s8_32(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _uk_u8_32(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif flip:
        _uk_s8_16(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    else:
        _uk_u8_16(pa, lda, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)


@intrinsic
def _count_done(typingctx, addr):
    """Atomically add 1 to the int64 at ``addr`` after every earlier store (release order)."""

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "release")
        return context.get_dummy_value()

    return types.void(types.intp), codegen


@njit(nogil=True, cache=True)
def gemm_requant_core(a0, e0, rows_a, lda, m, flip, b0, npan, kg, n, r0, be0, co0, bi0, mu0, zy, lo, hi, y0, ldy,
                      col0, w0, tag, ng):  # pragma: no cover - compiled
    """gemm_requant_part on addresses: the work loop a native helper runs from a job's words
    (``native``), claiming items of job ``tag`` from the counter at ``w0``."""
    mpan = (m + MR - 1) // MR
    nbn = (npan + ng - 1) // ng
    nwork = ((mpan + MB - 1) // MB) * nbn
    ran = 0
    w = claim(w0, tag, nwork)
    while w >= 0:
        ran += 1
        bm, bn = w // nbn, w % nbn
        for q in range(bn * ng, min(bn * ng + ng, npan)):
            j0 = q * NR
            nj = min(NR, n - j0)
            pb = b0 + q * kg * NR * 4
            for p in range(bm * MB, min(bm * MB + MB, mpan)):
                i0 = p * MR
                ni = min(MR, m - i0)
                pa = a0 + i0 * lda if i0 + MR <= rows_a or ni == 1 else e0  # a one-row tile reads one row
                _tile_rq(flip, pa, lda, pb, kg, 1, 0, y0 + i0 * ldy + col0 + j0, ldy, r0 + i0 * 4, be0 + j0 * 4,
                         co0 + j0 * 4, bi0 + j0 * 4, mu0 + j0 * 4, zy, lo, hi, ni, nj)
        _count_done(w0 + 8)
        w = claim(w0, tag, nwork)
    return ran


@njit(nogil=True, cache=True)
def gemm_requant_part(a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out, col0, counter,
                      ng):  # pragma: no cover - compiled
    """out[i, col0 + j] = requant(((a - za) @ (b - zb))[i, j] + bias[j]) for i < m, j < n: the
    work loop of one thread, the GIL released (see conv_tiles_part for ``counter``). gemm._gemm_vnni's work split; ``out`` is a 2-D byte array (its row stride the
    output's), ``bias``/``mult``/``beta``/``comp`` padded to the panels' width. A row panel that
    would read past a's rows reads ``edge`` (the last rows, filled up to MR with rows never stored) instead; a tile partly
    outside the output stores only its rows and columns inside (masked stores). Items are (row
    block, column group) pairs."""
    return gemm_requant_core(_addr(a), _addr(edge), a.shape[0], a.shape[1], m, flip, _addr(bp), bp.shape[0],
                             bp.shape[1], n, _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult), zy, lo,
                             hi, _addr(out), out.shape[1], col0, _addr(counter), 0, ng)


@njit(parallel=True, cache=True)
def requant_into(acc, bias, mult, zy, lo, hi, out, col0):  # pragma: no cover - compiled
    """out[i, col0 + j] = requant(acc[i, j] + bias[j]): the portable path's separate epilogue."""
    rows, cols = acc.shape
    for i in prange(rows):
        for j in range(cols):
            out[i, col0 + j] = _requant(np.int32(acc[i, j] + bias[j]), mult[j], zy, lo, hi)


def pad_panels(values: np.ndarray, width: int) -> np.ndarray:
    """A per-column vector zero-padded to ``width`` (the packed panels' columns)."""
    out = np.zeros(width, values.dtype)
    out[: values.size] = values
    return out


def run_gemm_requant(a: np.ndarray, m: int, flip: bool, bp: np.ndarray, n: int, rs: np.ndarray, beta: np.ndarray,
                     comp: np.ndarray, bias: np.ndarray, mult: np.ndarray, tail: tuple, out: np.ndarray, col0: int,
                     vnni: bool) -> None:
    """The fused GEMM over the first m rows of ``a`` (uint8 bits, K padded to 4) into the
    columns col0..col0+n of the 2-D byte array ``out`` (viewed as uint8); per-column vectors
    padded to the panels' width (``pad_panels``), ``rs`` to a multiple of MR rows."""
    if m == 0 or n == 0:
        return
    if not vnni:
        acc = np.empty((m, n), np.int32)
        _gemm_portable(a[:m], flip, bp, rs, beta, comp, acc)
        requant_into(acc, bias, mult, *tail, out, col0)
        return
    mpan, npan = (m + MR - 1) // MR, bp.shape[0]
    if a.shape[0] >= mpan * MR or m - (mpan - 1) * MR == 1:
        edge = a[:1]  # never read: every row panel lies inside a, or the last one is one row (read in place)
    else:  # rows past m are read but never stored: left as they come (no zeroing of MR x K per run)
        edge = np.empty((MR, a.shape[1]), np.uint8)
        edge[: m - (mpan - 1) * MR] = a[(mpan - 1) * MR : m]
    ng, items, workers = _gemm_split(mpan, npan, helpers.thread_count())
    if workers > 1:
        jobs = native.jobs()
        if jobs is not None and jobs.run_shared(jobs.gemm_requant_shared, workers, (
                a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, *tail, out.view(np.uint8), col0, ng)):
            return
    counter = np.zeros(2, np.int64)
    args = (a, edge, m, flip, bp, n, rs, beta, comp, bias, mult, *tail, out.view(np.uint8), col0, counter, ng)
    helpers.share(gemm_requant_part, args, workers, items, counter)


def _gemm_split(mpan: int, npan: int, workers: int) -> tuple[int, int, int]:
    """run_gemm_requant's work items, MB row panels by enough column panels for >= 16 items per
    worker: (column panels per item, items, workers used)."""
    row_blocks = (mpan + MB - 1) // MB
    col_groups = min(npan, -(-16 * workers // row_blocks))
    ng = -(-npan // col_groups)
    items = row_blocks * (-(-npan // ng))
    return ng, items, min(workers, items)


def bind_gemm_requant(m: int, lda: int, flip: bool, bp: np.ndarray, n: int, rs: np.ndarray, beta: np.ndarray,
                      comp: np.ndarray, bias: np.ndarray, mult: np.ndarray, tail: tuple):
    """run_gemm_requant on the VNNI path over an (m, lda) A (every row panel inside it, or the
    last one a single row: no edge copy), all of its columns into an (m, n) output, as a native
    ``Bound`` job (``bound.run(a, out, a)``); None where native helpers are off or A would need
    an edge copy."""
    jobs = native.jobs()
    mpan = (m + MR - 1) // MR
    if jobs is None or m == 0 or n == 0 or not (m >= mpan * MR or m - (mpan - 1) * MR == 1):
        return None
    a0 = np.empty((m, lda), np.uint8)  # shapes for the words; its address is replaced at each run

    def make(workers: int) -> tuple:
        ng, items, used = _gemm_split(mpan, bp.shape[0], workers)
        words = np.zeros(native.NARGS, np.int64)
        jobs.gemm_words(words, a0, a0, m, flip, bp, n, rs, beta, comp, bias, mult, *tail, np.empty((1, n), np.uint8), 0,
                        ng)
        return words, items, used

    return jobs.Bound(jobs.KIND_GEMM, jobs.GEMM_A, jobs.GEMM_OUT, make, jobs.GEMM_EDGE)


# --- implicit-GEMM convolution over flat pixel tiles -----------------------------------------
# A tile is MR consecutive output pixels in row-major (oh, ow) order, wherever the output rows
# break: its A rows are found through a table of byte offsets into the (padded) NHWC image,
# built once per convolution, so no output row wastes the rest of its last tile (a 7- or
# 14-pixel row would compute 12 or 18 rows) and short rows need no im2row copy. The kernels are
# built ``indirect`` here, next to their code generator: numba's on-disk cache is checked against
# the file of the jitted function only, so a kernel cached elsewhere could outlive a change here.

_ui_u8, _ui_s8 = _make_ukernel_rq(MR, NB, False, True), _make_ukernel_rq(MR, NB, True, True)
_ui_u8_48, _ui_s8_48 = _make_ukernel_rq(MR, 3, False, True), _make_ukernel_rq(MR, 3, True, True)
_ui_u8_32, _ui_s8_32 = _make_ukernel_rq(MR, 2, False, True), _make_ukernel_rq(MR, 2, True, True)
_ui_u8_16, _ui_s8_16 = _make_ukernel_rq(MR, 1, False, True), _make_ukernel_rq(MR, 1, True, True)


@njit(cache=True)
def _tile_ind(flip, pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj):  # pragma: no cover
    """One fused tile whose MR row offsets are at ``pt`` (into the image at ``base``); stores rows
    < ni and columns < nj, computing only as many 16-column vectors as nj needs."""
    if nj > 48:
        if flip:
            _ui_s8(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _ui_u8(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif nj > 32:
        if flip:
            _ui_s8_48(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _ui_u8_48(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif nj > 16:
        if flip:
            _ui_s8_32(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
        else:
            _ui_u8_32(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    elif flip:
        _ui_s8_16(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)
    else:
        _ui_u8_16(pt, base, pb, kgs, nseg, seg, py, ldy, pr, pbeta, pcomp, pbias, pmult, zy, lo, hi, ni, nj)


def pixel_table(ho: int, wo: int, a_oh: int, lda: int) -> np.ndarray:
    """Byte offsets ``oh * a_oh + ow * lda`` of every output pixel's first tap, row-major, padded
    with zeros (pixel 0's, read but never stored) to whole tiles."""
    pixels = ho * wo
    table = np.zeros(-(-pixels // MR) * MR, np.int64)
    oh, ow = np.divmod(np.arange(pixels, dtype=np.int64), wo)
    table[:pixels] = oh * a_oh + ow * lda
    return table


@njit(nogil=True, cache=True)
def conv_tiles_core(i0, t0, pixels, kgs, nseg, seg, flip, b0, npan, kg, n, r0, be0, co0, bi0, mu0, zy, lo, hi, y0,
                    ldy, w0, tag, mb, ng):  # pragma: no cover - compiled
    """conv_tiles_part on addresses: the work loop a native helper runs from a job's words
    (``native``), claiming items of job ``tag`` from the counter at ``w0``."""
    tiles = (pixels + MR - 1) // MR
    nbn = (npan + ng - 1) // ng
    nwork = ((tiles + mb - 1) // mb) * nbn
    ran = 0
    w = claim(w0, tag, nwork)
    while w >= 0:
        ran += 1
        bm, bn = w // nbn, w % nbn
        for q in range(bn * ng, min(bn * ng + ng, npan)):
            j0 = q * NR
            nj = min(NR, n - j0)
            pb = b0 + q * kg * NR * 4
            for t in range(bm * mb, min(bm * mb + mb, tiles)):
                p0 = t * MR
                _tile_ind(flip, t0 + p0 * 8, i0, pb, kgs, nseg, seg, y0 + p0 * ldy + j0, ldy, r0, be0 + j0 * 4,
                          co0 + j0 * 4, bi0 + j0 * 4, mu0 + j0 * 4, zy, lo, hi, min(MR, pixels - p0), nj)
        _count_done(w0 + 8)
        w = claim(w0, tag, nwork)
    return ran


@njit(nogil=True, cache=True)
def conv_tiles_part(img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, zy, lo, hi, out,
                    counter, mb, ng):  # pragma: no cover - compiled
    """out[p, j] for output pixels p < ``pixels`` and channels j < n, the work loop of one thread,
    the GIL released (the B panel stays put while a block's tiles pass under it): claims (block of
    ``mb`` tiles, group of ``ng`` column panels)
    items from ``counter[0]`` (job tag 0: ``native.claim``) until none is left, counting each
    finished one in ``counter[1]``; returns how many it ran."""
    return conv_tiles_core(_addr(img), _addr(table), pixels, kgs, nseg, seg, flip, _addr(bp), bp.shape[0],
                           bp.shape[1], n, _addr(rs), _addr(beta), _addr(comp), _addr(bias), _addr(mult), zy, lo, hi,
                           _addr(out), out.shape[1], _addr(counter), 0, mb, ng)


def run_conv_tiles(img: np.ndarray, table: np.ndarray, pixels: int, kgs: int, nseg: int, seg: int, flip: bool,
                   bp: np.ndarray, n: int, rs: np.ndarray, beta: np.ndarray, comp: np.ndarray, bias: np.ndarray,
                   mult: np.ndarray, tail: tuple, out: np.ndarray) -> None:
    """Drive conv_tiles_part into the (pixels, n) byte array ``out``: ``comp`` holds comp + bias, ``rs``
    (MR zeros), ``beta`` and ``bias`` are not read (no row sums: the weights' zero points equal
    the shift). Work items of MB tiles by enough column panels for >= 16 items per worker. With
    more than one thread the calling thread runs the work loop and helper threads join it if
    they wake in time (``helpers``); it never waits for a helper to wake."""
    ng, items, workers = _conv_split(pixels, bp.shape[0], helpers.thread_count())
    if workers > 1:
        jobs = native.jobs()
        if jobs is not None and jobs.run_shared(jobs.conv_tiles_shared, workers, (
                img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, *tail, out.view(np.uint8),
                MB, ng)):
            return
    counter = np.zeros(2, np.int64)
    args = (img, table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, *tail, out.view(np.uint8),
            counter, MB, ng)
    helpers.share(conv_tiles_part, args, workers, items, counter)



def _conv_split(pixels: int, npan: int, workers: int) -> tuple[int, int, int]:
    """run_conv_tiles' work items, MB tiles by enough column panels for >= 16 items per worker:
    (column panels per item, items, workers used)."""
    blocks = -(-(-(-pixels // MR)) // MB)
    col_groups = min(npan, -(-16 * workers // blocks))
    ng = -(-npan // col_groups)
    items = blocks * (-(-npan // ng))
    return ng, items, min(workers, items)


def bind_conv_tiles(table: np.ndarray, pixels: int, kgs: int, nseg: int, seg: int, flip: bool, bp: np.ndarray, n: int,
                    rs: np.ndarray, beta: np.ndarray, comp: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                    tail: tuple):
    """run_conv_tiles with everything but the image and the output fixed, as a native
    ``Bound`` job (``bound.run(image, out)``: image bytes C-contiguous, out (pixels, n) bytes,
    either dtype); None where native helpers are off. The arrays are kept alive by the job."""
    jobs = native.jobs()
    if jobs is None:
        return None
    keep = (table, bp, rs, beta, comp, bias, mult)

    def make(workers: int) -> tuple:
        ng, items, used = _conv_split(pixels, bp.shape[0], workers)
        words = np.zeros(native.NARGS, np.int64)
        jobs.conv_words(words, keep[0], table, pixels, kgs, nseg, seg, flip, bp, n, rs, beta, comp, bias, mult, *tail,
                        np.empty((1, n), np.uint8), MB, ng)
        return words, items, used

    return jobs.Bound(jobs.KIND_CONV, jobs.CONV_IMAGE, jobs.CONV_OUT, make)


# --- grouped convolutions: every group's implicit GEMM in one job -------------------------------


@njit(nogil=True, cache=True)
def grouped_tiles_core(i0, gi, t0, pixels, kgs, nseg, seg, flip, b0, gb, npan, kg, n, co0, mu0, gv, zy, lo, hi, y0, ldy,
                       w0, tag, groups, mb):  # pragma: no cover - compiled
    """conv_tiles_core for each group of a grouped conv: group g's padded image at ``i0 + g*gi``
    (kernels_nhwc.pad_groups), its packed panels at ``b0 + g*gb``, its comp + bias and
    multipliers at ``co0``/``mu0`` + g*gv bytes, its n output channels at columns g*n.. of the
    rows at ``y0``; items are (group, block of ``mb`` tiles) pairs claimed from ``w0``."""
    tiles = (pixels + MR - 1) // MR
    blocks = (tiles + mb - 1) // mb
    nwork = groups * blocks
    ran = 0
    w = claim(w0, tag, nwork)
    while w >= 0:
        ran += 1
        g, bm = w // blocks, w % blocks
        ig, bg, vg = i0 + g * gi, b0 + g * gb, g * gv
        for q in range(npan):
            j0 = q * NR
            nj = min(NR, n - j0)
            pb = bg + q * kg * NR * 4
            for t in range(bm * mb, min(bm * mb + mb, tiles)):
                p0 = t * MR
                _tile_ind(flip, t0 + p0 * 8, ig, pb, kgs, nseg, seg, y0 + p0 * ldy + g * n + j0, ldy, 0, 0,
                          co0 + vg + j0 * 4, 0, mu0 + vg + j0 * 4, zy, lo, hi, min(MR, pixels - p0), nj)
        _count_done(w0 + 8)
        w = claim(w0, tag, nwork)
    return ran


@njit(nogil=True, cache=True)
def grouped_tiles_part(img, table, pixels, kgs, nseg, seg, flip, bp, n, comp, mult, zy, lo, hi, out, mb,
                       counter):  # pragma: no cover - compiled
    """grouped_tiles_core over arrays, one thread's work loop (job tag 0 on ``counter``): ``img``
    (G, image bytes) group images, ``bp`` (G, panels, K/4, NR*4), ``comp``/``mult`` (G, panels*NR),
    ``out`` (pixels, G*n) bytes."""
    return grouped_tiles_core(_addr(img), img.shape[1], _addr(table), pixels, kgs, nseg, seg, flip, _addr(bp),
                              bp.shape[1] * bp.shape[2] * bp.shape[3], bp.shape[1], bp.shape[2], n, _addr(comp),
                              _addr(mult), comp.shape[1] * 4, zy, lo, hi, _addr(out), out.shape[1], _addr(counter), 0,
                              img.shape[0], mb)


def grouped_blocks(pixels: int, groups: int, workers: int) -> tuple[int, int]:
    """(tiles per item, items) of a grouped conv's job: whole MB-tile blocks, or smaller ones
    (split evenly) until every worker has >= 16 items."""
    tiles = -(-pixels // MR)
    blocks = -(-tiles // MB)
    while groups * blocks < 16 * workers and blocks < tiles:
        blocks = min(tiles, blocks * 2)
    mb = -(-tiles // blocks)
    return mb, groups * -(-tiles // mb)


def bind_grouped_tiles(groups: int, image_bytes: int, table: np.ndarray, pixels: int, kgs: int, nseg: int, seg: int,
                       flip: bool, bp: np.ndarray, n: int, comp: np.ndarray, mult: np.ndarray, tail: tuple, ldy: int):
    """grouped_tiles_part as a native ``Bound`` job (``bound.run(images, out)``: images (G,
    image_bytes) bytes, out (pixels, ldy) bytes); None where native helpers are off."""
    jobs = native.jobs()
    if jobs is None:
        return None
    keep = (table, bp, comp, mult)

    def make(workers: int) -> tuple:
        mb, items = grouped_blocks(pixels, groups, workers)
        words = np.zeros(native.NARGS, np.int64)
        jobs.grouped_words(words, np.empty((groups, image_bytes), np.uint8), keep[0], pixels, kgs, nseg, seg, flip, bp,
                           n, comp, mult, *tail, np.empty((1, ldy), np.uint8), mb)
        return words, items, min(workers, items)

    return jobs.Bound(jobs.KIND_GROUPED, jobs.GROUPED_IMAGES, jobs.GROUPED_OUT, make)


def run_grouped_tiles(bound, img: np.ndarray, table: np.ndarray, pixels: int, kgs: int, nseg: int, seg: int, flip: bool,
                      bp: np.ndarray, n: int, comp: np.ndarray, mult: np.ndarray, tail: tuple, out: np.ndarray) -> None:
    """Every group's implicit GEMM (grouped_tiles_part) into ``out``: the bound native job where
    it runs, else the work loop shared through ``helpers``."""
    if bound is not None and bound.run(img, out):
        return
    workers = helpers.thread_count()
    mb, items = grouped_blocks(pixels, img.shape[0], workers)
    counter = np.zeros(2, np.int64)
    helpers.share(grouped_tiles_part, (img, table, pixels, kgs, nseg, seg, flip, bp, n, comp, mult, *tail, out, mb, counter),
                  min(workers, items), items, counter)
