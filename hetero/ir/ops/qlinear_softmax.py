"""QLinearSoftmax (rule 8 of hetero.ir.ops.qlinear): onnxruntime's lookup-table int8 softmax."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.qlinear import F32, qrange, scalar_of

UINT32_MAX = float(np.iinfo(np.uint32).max)


def softmax_table(x_scale: float, reduction: int) -> np.ndarray:
    """Rule 8's 256 uint32 entries T[j] for an input scale and a reduction of ``reduction`` elements."""
    shift = np.log(UINT32_MAX / reduction)
    if shift > 3.0:
        shift -= 3.0
    scale = np.float64(np.float32(x_scale))
    j = np.arange(256, dtype=np.float64)
    return np.exp((j - 255.0 + shift / scale) * scale).astype(np.uint32)


def _qsoftmax_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, zy = inputs[0], inputs[4]
    assert x is not None
    if int(attrs.get("opset", 13)) < 13 and int(attrs.get("axis", 1)) % max(len(x.shape), 1) != len(x.shape) - 1:
        raise UnsupportedOpError("QLinearSoftmax of opset < 13 is supported on the last axis only")
    return [(x.shape, zy.dtype if zy is not None else x.dtype)]


def qlinear_softmax(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """QLinearSoftmax by rule 8."""
    x, sx, _, sy, zy = (list(ins) + [None] * 5)[:5]
    axis = int(attrs.get("axis", -1)) % x.ndim
    moved = np.moveaxis(x, axis, -1)
    table = softmax_table(float(np.asarray(sx).reshape(())), moved.shape[-1])
    u = moved.astype(np.int32) + (128 if moved.dtype == np.int8 else 0)
    e = table[u - u.max(axis=-1, keepdims=True) + 255]
    total = e.sum(axis=-1, keepdims=True, dtype=np.uint32)
    multiplier = F32(np.floor(F32(1.0) / F32(np.asarray(sy, F32).reshape(()))))
    v = ((e.astype(F32) * multiplier).astype(F32) / total.astype(F32)).astype(F32)
    dtype = zy.dtype if zy is not None else x.dtype
    low, high = qrange(dtype, attrs)
    y = np.clip(np.rint(v) + F32(scalar_of(zy)), low, high).astype(dtype)
    return np.moveaxis(y, -1, axis)


register(
    "QLinearSoftmax",
    infer=_qsoftmax_infer,
    reference=lambda ins, a: [qlinear_softmax(ins, a)],
    flops=lambda i, o, a: 4 * int(np.prod(o[0])),
    inputs=(5, 5),
)
