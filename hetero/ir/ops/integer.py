"""Integer products and dynamic quantization: ConvInteger, MatMulInteger, DynamicQuantizeLinear;
NonZero on constants (its output shape depends on values).

ConvInteger and MatMulInteger subtract the zero points (per tensor, per output channel for the
weight, per row of A) and accumulate exactly in int32; padding contributes zeros after the
shift. DynamicQuantizeLinear picks a uint8 scale and zero point from the input's range
(always including 0) and quantizes with round-half-even and saturation, in float32.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.nn import _conv_infer, _matmul_shape, conv2d
from hetero.ir.ops.window_nd import conv_nd

F32 = np.float32


def _optional(ins: Sequence[object], i: int) -> object | None:
    return ins[i] if len(ins) > i else None


def _conv_integer_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    return [(_conv_infer([x, w], attrs)[0][0], "int32")]


def conv_integer(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """int32 convolution of (x - x_zero_point) with (w - w_zero_point), exact through float64."""
    x, w, zx, zw = ins[0], ins[1], _optional(ins, 2), _optional(ins, 3)
    xs = x.astype(np.float64) - (0 if zx is None else float(np.asarray(zx).reshape(-1)[0]))
    shift = 0 if zw is None else np.asarray(zw, np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
    ws = w.astype(np.float64) - shift
    y = conv2d(xs, ws, None, attrs) if x.ndim == 4 else conv_nd(xs, ws, None, attrs)
    return np.rint(y).astype(np.int32)


register("ConvInteger", infer=_conv_integer_infer, reference=lambda ins, a: [conv_integer(ins, a)],
         flops=lambda i, o, a: 2 * int(np.prod(o[0])) * int(np.prod(i[1].shape[1:])), inputs=(2, 4))


def _matmul_integer_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise GraphError(f"MatMulInteger operands must have rank >= 2, got {list(a.shape)} and {list(b.shape)}")
    return [(_matmul_shape(a.shape, b.shape), "int32")]


def matmul_integer(ins: Sequence[np.ndarray | None], attrs: Attrs) -> np.ndarray:
    """int32 (A - a_zero_point) @ (B - b_zero_point); a per-row and b per-column zero points."""
    a, b, za, zb = ins[0], ins[1], _optional(ins, 2), _optional(ins, 3)
    a_shift = np.zeros((1, 1), np.int64) if za is None else np.asarray(za, np.int64).reshape(-1, 1)  # per row or one
    b_shift = np.zeros(1, np.int64) if zb is None else np.asarray(zb, np.int64).reshape(-1)  # per column or one
    product = np.matmul(a.astype(np.int64) - a_shift, b.astype(np.int64) - b_shift)
    return product.astype(np.int32)


register("MatMulInteger", infer=_matmul_integer_infer, reference=lambda ins, a: [matmul_integer(ins, a)],
         flops=lambda i, o, a: 2 * int(np.prod(o[0])) * int(i[0].shape[-1]), inputs=(2, 4))


def _dynamic_q_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if x.dtype != "float32":
        raise GraphError(f"DynamicQuantizeLinear takes float32, got {x.dtype}")
    return [(x.shape, "uint8"), ((), "float32"), ((), "uint8")]


def dynamic_quantize_linear(x: np.ndarray) -> list[np.ndarray]:
    """(y, y_scale, y_zero_point): scale (max(0, x) - min(0, x)) / 255 (1 for an all-zero input),
    zero point round(-min / scale)."""
    low = min(F32(0), F32(x.min())) if x.size else F32(0)
    high = max(F32(0), F32(x.max())) if x.size else F32(0)
    scale = F32((high - low) / F32(255)) or F32(1)  # an all-zero input: scale 1, as onnxruntime
    zero_point = np.clip(np.rint(F32(0) - low / scale), 0, 255)
    y = np.clip(np.rint(x.astype(F32) / scale) + zero_point, 0, 255)
    return [y.astype(np.uint8), np.array(scale, F32), np.array(zero_point, np.uint8)]


register("DynamicQuantizeLinear", infer=_dynamic_q_infer, reference=lambda ins, a: dynamic_quantize_linear(ins[0]),
         flops=lambda i, o, a: 4 * int(np.prod(o[0])))


def _nonzero_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if x.const is None:
        raise UnsupportedOpError(
            "NonZero's output shape depends on its input's values, and hetero compiles static shapes; "
            "it is supported on constant inputs only (folded at import)"
        )
    return [((len(x.shape), int(np.count_nonzero(x.const))), "int64")]


register("NonZero", infer=_nonzero_infer, reference=lambda ins, a: [np.array(np.nonzero(ins[0]), np.int64)],
         fold_only=True)
