"""numba max pooling on channels-last (NHWC) int8 images, for the cpu device's compiled plans.

A window's maximum is taken in two passes per output row: down the kernel rows over whole
image rows (W*C contiguous values: long vector loops), then across the kernel columns of that
one row, pixel by pixel. The per-pixel pass is where the time goes when C is small (a C-run
shorter than a vector register runs scalar), so it is done once per output row instead of
once per kernel row, and a pixel's channels in whole 64-byte blocks are one vector maximum each
(``_vmax_at``: LLVM's ``umax``/``smax`` on 64, 32 and 16 bytes, one instruction each with AVX-512
BW; a loop over 64 bytes cost its setup per pixel: squeezenet's 55x55x64 pool per row 1.84 ->
0.88 us). Padding never wins.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__: list[str] = []  # the inlined helpers of kernels_shared.max_pool_part


def _vmax_intrinsic(width: int):
    vector = ir.VectorType(ir.IntType(8), width)

    @intrinsic
    def vmax(typingctx, dst, src, like):
        """dst[0:width] = max(dst[0:width], src[0:width]) at two addresses, signed if ``like`` (a
        value of the element type) is."""
        signed = bool(getattr(like, "signed", False))

        def codegen(context, builder, signature, args):
            vp = vector.as_pointer()
            d, s = builder.inttoptr(args[0], vp), builder.inttoptr(args[1], vp)
            name = f"{'llvm.smax' if signed else 'llvm.umax'}.v{width}i8"
            maximum = builder.module.declare_intrinsic(name, fnty=ir.FunctionType(vector, [vector, vector]))
            builder.store(builder.call(maximum, [builder.load(d, align=1), builder.load(s, align=1)]), d, align=1)
            return context.get_dummy_value()

        return types.void(types.intp, types.intp, like), codegen

    return vmax


_vmax64, _vmax32, _vmax16 = (_vmax_intrinsic(n) for n in (64, 32, 16))


@njit(cache=True, inline="always")
def _vmax_at(dst, src, count, like):  # pragma: no cover - compiled
    """dst[0:count] = max(dst, src) at two addresses: 64-, 32- and 16-byte vectors, then bytes."""
    i = 0
    while i + 64 <= count:
        _vmax64(dst + i, src + i, like)
        i += 64
    if i + 32 <= count:
        _vmax32(dst + i, src + i, like)
        i += 32
    if i + 16 <= count:
        _vmax16(dst + i, src + i, like)
        i += 16
    return i


@njit(cache=True, inline="always")
def _vmax(dst, src):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = max(dst[i], src[i])


@njit(cache=True, inline="always")
def _copy(dst, src):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def _fill(dst, value):  # pragma: no cover - compiled
    for i in range(dst.size):
        dst[i] = value
