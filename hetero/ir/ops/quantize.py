"""QuantizeLinear and DequantizeLinear in onnxruntime's exact float32 semantics.

QuantizeLinear:   q = saturate(round_half_even(x / s) + z), x / s computed in float32.
DequantizeLinear: x = float32(int32(q) - z) * s.
Scale and zero point are per tensor (scalars), per axis (1-D along `axis`) or blocked (the input's
rank, `block_size` consecutive elements along `axis` sharing one scale).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register

QUANT_DTYPES = {"int8", "uint8", "int16", "uint16", "int32"}
_ONNX_DTYPE = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32"}


def _broadcastable(param: np.ndarray, rank: int, axis: int, shape_of: Shape | None = None, block: int = 0) -> np.ndarray:
    """The scale or zero point broadcast against the input; blocked parameters (the input's
    rank) repeated ``block`` times along ``axis`` and cut to the input's ``shape_of``."""
    if param.ndim == 0 or param.size == 1 and param.ndim <= 1:
        return param.reshape(())
    if param.ndim > 1:
        axis %= rank
        assert shape_of is not None and block > 0
        return np.repeat(param, block, axis=axis).take(range(shape_of[axis]), axis=axis)
    shape = [1] * rank
    shape[axis % rank] = param.size
    return param.reshape(shape)


def _check_params(inputs: Sequence[Value | None], attrs: Attrs, op: str) -> None:
    x, scale = inputs[0], inputs[1]
    assert x is not None and scale is not None
    if len(scale.shape) > 1:
        axis = int(attrs.get("axis", 1)) % len(x.shape)
        block = int(attrs.get("block_size", 0))
        expected = tuple(-(-d // block) if i == axis and block > 0 else d for i, d in enumerate(x.shape))
        if block <= 0 or tuple(scale.shape) != expected:
            raise GraphError(f"{op} has blocked scales {list(scale.shape)} for input {list(x.shape)}, axis {axis} "
                             f"and block_size {block}; they must be {list(expected)}")
    elif len(scale.shape) == 1 and scale.shape[0] != 1:
        axis = int(attrs.get("axis", 1)) % len(x.shape)
        if x.shape[axis] != scale.shape[0]:
            raise GraphError(f"{op} has {scale.shape[0]} scales for axis {axis} of size {x.shape[axis]}")


def quantized_dtype(inputs: Sequence[object], attrs: Attrs) -> str:
    """The integer type QuantizeLinear produces: the zero point's, else output_dtype, else uint8."""
    if len(inputs) > 2 and inputs[2] is not None:
        dtype = str(getattr(inputs[2], "dtype"))
    elif attrs.get("output_dtype"):
        dtype = _ONNX_DTYPE.get(int(attrs["output_dtype"]), f"ONNX type {attrs['output_dtype']}")
    else:
        dtype = "uint8"
    if dtype not in QUANT_DTYPES:
        raise UnsupportedOpError(f"quantization to {dtype} is not supported (int8, uint8, int32 are)")
    return dtype


def quantize_linear(
    x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, dtype: str, block: int = 0
) -> np.ndarray:
    """q = saturate(round_half_even(x / s) + z) in float32, as onnxruntime computes it."""
    s = _broadcastable(np.asarray(scale, np.float32), x.ndim, axis, x.shape, block)
    z = 0 if zero_point is None else _broadcastable(np.asarray(zero_point), x.ndim, axis, x.shape, block)
    info = np.iinfo(dtype)
    q = np.rint(np.asarray(x, np.float32) / s) + np.asarray(z, np.float32)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_linear(
    q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int = 0
) -> np.ndarray:
    """x = float32(int32(q) - z) * s (int64 differences for 32-bit inputs)."""
    s = _broadcastable(np.asarray(scale, np.float32), q.ndim, axis, q.shape, block)
    wide = np.int64 if q.dtype.itemsize >= 4 else np.int32
    z = 0 if zero_point is None else _broadcastable(np.asarray(zero_point, wide), q.ndim, axis, q.shape, block)
    return (q.astype(wide) - z).astype(np.float32) * s


def _q_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    _check_params(inputs, attrs, "QuantizeLinear")
    x = inputs[0]
    assert x is not None
    return [(x.shape, quantized_dtype(inputs, attrs))]


def _dq_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    _check_params(inputs, attrs, "DequantizeLinear")
    x = inputs[0]
    assert x is not None
    return [(x.shape, "float32")]


register(
    "QuantizeLinear",
    infer=_q_infer,
    reference=lambda ins, a: [
        quantize_linear(
            ins[0], ins[1], ins[2] if len(ins) > 2 else None, int(a.get("axis", 1)), quantized_dtype(ins, a),
            int(a.get("block_size", 0)),
        )
    ],
    flops=lambda i, o, a: 3 * int(np.prod(o[0])),
    inputs=(2, 3),
)
register(
    "DequantizeLinear",
    infer=_dq_infer,
    reference=lambda ins, a: [
        dequantize_linear(ins[0], ins[1], ins[2] if len(ins) > 2 else None, int(a.get("axis", 1)),
                          int(a.get("block_size", 0)))
    ],
    flops=lambda i, o, a: 2 * int(np.prod(o[0])),
    inputs=(2, 3),
)
