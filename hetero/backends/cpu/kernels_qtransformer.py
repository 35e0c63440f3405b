"""numba int8 kernels for the transformer's integer ops: QLinearMul (rule 7) and
QLinearSoftmax (rule 8) of hetero.ir.ops.qlinear, bit-exact with its numpy reference.

Every float step is float32 and rounded separately (numba's strict floating point, no fast
math); rounding is ``np.rint`` (half to even). QLinearSoftmax's lookup table is built by the
reference's own ``softmax_table`` (float64 exp), once per op; the row sum is exact in uint32
(the table is scaled so that D entries fit).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import njit, prange

from hetero.backends.base import Device
from hetero.backends.cpu.kernels_float import Kernel
from hetero.backends.cpu.kernels_quant import scalar
from hetero.ir.graph import Op
from hetero.ir.ops.qlinear import qrange
from hetero.ir.ops.qlinear_softmax import softmax_table

F32 = np.float32


def _f32(a: np.ndarray) -> np.float32:
    return F32(np.asarray(a, F32).reshape(()))


@njit(parallel=True, cache=True)
def qmul(a, b, sa, za, sb, zb, sy, zy, lo, hi, out):  # pragma: no cover - compiled
    """Rule 7 elementwise over equal-length flat a, b."""
    for i in prange(out.size):
        va = sa * np.float32(np.int32(a[i]) - za)
        vb = sb * np.float32(np.int32(b[i]) - zb)
        v = np.float32(va * vb) / sy
        y = np.float32(np.rint(v)) + zy
        out[i] = min(max(y, lo), hi)


@njit(parallel=True, cache=True)
def qsoftmax(x, offset, table, c, zy, lo, hi, out):  # pragma: no cover - compiled
    """Rule 8 along the last axis of a 2-D (rows, D) x."""
    rows, d = x.shape
    for r in prange(rows):
        m = np.int32(-1)
        for i in range(d):
            u = np.int32(x[r, i]) + offset
            if u > m:
                m = u
        total = np.uint32(0)
        for i in range(d):
            total = np.uint32(total + table[np.int32(x[r, i]) + offset - m + 255])
        s = np.float32(total)
        for i in range(d):
            e = np.float32(table[np.int32(x[r, i]) + offset - m + 255])
            v = np.float32(e * c) / s
            y = np.float32(np.rint(v)) + zy
            out[r, i] = min(max(y, lo), hi)


def qlinear_mul(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearMul by rule 7 over a broadcast of the two inputs."""
    a, sa, za, b, sb, zb, sy, zy = op.arguments(activations)[:8]
    spec = op.output_specs[0]

    def make() -> tuple[Any, ...]:
        dtype = np.dtype(zy.dtype if zy is not None else a.dtype)
        low, high = qrange(dtype, op.attrs)
        constants = (_f32(sa), np.int32(scalar(za)), _f32(sb), np.int32(scalar(zb)), _f32(sy), F32(scalar(zy)))
        return dtype, constants, F32(low), F32(high)

    dtype, constants, lo, hi = device.prepared(op, make)
    shape = tuple(spec.shape)
    out = np.empty(shape, dtype)
    fa = np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1)
    fb = np.ascontiguousarray(np.broadcast_to(b, shape)).reshape(-1)
    qmul(fa, fb, *constants, lo, hi, out.reshape(-1))
    return [out]


def qlinear_softmax(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """QLinearSoftmax by rule 8 along the op's axis."""
    x, sx, _, sy, zy = (list(op.arguments(activations)) + [None] * 5)[:5]
    axis = int(op.attrs.get("axis", -1)) % x.ndim

    def make() -> tuple[Any, ...]:
        dtype = np.dtype(zy.dtype if zy is not None else x.dtype)
        low, high = qrange(dtype, op.attrs)
        table = softmax_table(float(np.asarray(sx).reshape(())), x.shape[axis])
        c = F32(np.floor(F32(1.0) / _f32(sy)))
        return dtype, table, c, F32(scalar(zy)), F32(low), F32(high)

    dtype, table, c, zyf, lo, hi = device.prepared(op, make)
    moved = np.moveaxis(x, axis, -1)
    flat = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1]) if moved.size else moved.reshape(0, 1)
    out = np.empty(flat.shape, dtype)
    if flat.size:
        qsoftmax(flat, np.int32(128 if x.dtype == np.int8 else 0), table, c, zyf, lo, hi, out)
    return [np.ascontiguousarray(np.moveaxis(out.reshape(moved.shape), -1, axis))]


QTRANSFORMER_KERNELS: dict[str, Kernel] = {
    "QLinearMul": qlinear_mul,
    "QLinearSoftmax": qlinear_softmax,
}
"""Integer transformer kernels by op type."""
