"""Quantization math: scales and zero points, quantize/dequantize, int32 biases (the seed article's).

For a signed or unsigned 8-bit type with range [qmin, qmax]:

- Activations: asymmetric, one scale and zero point per tensor. The calibrated range is
  first widened to include 0 (min <= 0 <= max), then
  ``s = (max - min) / (qmax - qmin)`` and ``z = qmin - round(min / s)``
  (uint8: z = -round(min / s); int8: z = -128 - round(min / s)); an all-zero range gets s = 1,
  and no scale is below ``SCALE_FLOOR`` (2^-60), so that every product of an activation and a
  weight scale (a bias scale, a requantization multiplier's numerator) is a normal float32.
  Quantize: ``q = saturate(round_half_even(x / s) + z)``; dequantize: ``x = (q - z) * s``,
  both in float32 as onnxruntime computes them. 0 is exactly representable (q = z).
- Weights: symmetric int8 per output channel c: ``s[c] = max|w[c]| / 127``, z = 0 (channel
  axis 0 for Conv and for Gemm with transB, axis 1 for Gemm without it and for MatMul).
- Bias: int32 with ``s[c] = s_x * s_w[c]`` and z = 0, so it adds straight into the int32
  accumulator of the integer op. Where ``|b[c]| / s[c]`` plus the largest sum of K products
  (K x 255 x 127) would not fit int32, ``s_w[c]`` is raised to the least scale at which it
  fits (onnxruntime's quantizer raises it likewise; :func:`bias_weight_scales`). That
  happens only where the bias outweighs the channel's largest possible input contribution
  about 2^31 / (K x 255 x 127) times over, so the coarser weights cost little. Without it, a
  model whose activations shrink layer by layer (torchvision's GoogLeNet with its random init
  reaches ranges of 1e-11 before its classifier) saturates the classifier's bias and outputs
  one constant.
- A Relu/Clip's bounds in the quantized domain (:func:`activation_bounds`): the quantizer
  folds an activation its output's quantization implies, and the integer lowering drops it.
"""

from __future__ import annotations

import numpy as np

from hetero.errors import InputError
from hetero.ir.graph import Op
from hetero.ir.ops.elementwise import clip_bounds
from hetero.ir.ops.quantize import dequantize_linear, quantize_linear

ACTIVATION_DTYPES = ("uint8", "int8")
SCALE_FLOOR = np.float32(2.0**-60)
"""The smallest activation or weight scale: a product of two stays a normal float32 (>= 2^-120)."""
INT32_MAX = int(np.iinfo(np.int32).max)
ACCUMULATOR_TERM = 255 * 127
"""The largest |(q_x - z_x) * q_w| an 8-bit activation times an int8 weight adds to the accumulator."""


def check_activation_dtype(dtype: str) -> np.iinfo:
    if dtype not in ACTIVATION_DTYPES:
        raise InputError(f"activation dtype {dtype!r} is not supported (use {' or '.join(ACTIVATION_DTYPES)})")
    return np.iinfo(dtype)


def activation_params(minimum: float, maximum: float, dtype: str = "uint8") -> tuple[np.float32, np.integer]:
    """Asymmetric per-tensor (scale, zero point) for values in [minimum, maximum]."""
    info = check_activation_dtype(dtype)
    low, high = min(float(minimum), 0.0), max(float(maximum), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"cannot quantize the range [{minimum}, {maximum}]: it is not finite")
    scale = np.float32((high - low) / (info.max - info.min))
    if high == low:
        scale = np.float32(1.0)
    scale = max(scale, SCALE_FLOOR)
    zero_point = np.clip(info.min - np.round(low / np.float64(scale)), info.min, info.max)
    return scale, np.dtype(dtype).type(zero_point)


def weight_params(w: np.ndarray, axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (scales, zero points) per slice along ``axis`` (per tensor when None)."""
    w = np.asarray(w, np.float32)
    reduce = None if axis is None else tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=reduce) if w.size else np.zeros(())
    scales = np.asarray(amax / np.float32(127.0), np.float32)
    scales[amax == 0] = 1.0
    scales = np.maximum(scales, SCALE_FLOOR)
    return scales, np.zeros(scales.shape, np.int8)


def range_problem(minimum: float, maximum: float, dtype: str = "uint8") -> str | None:
    """"zero" for a range that is all 0, "tiny" for one whose scale is below the floor, else None."""
    info = check_activation_dtype(dtype)
    span = max(float(maximum), 0.0) - min(float(minimum), 0.0)
    if span == 0.0:
        return "zero"
    if span / (info.max - info.min) < SCALE_FLOOR:
        return "tiny"
    return None


def bias_weight_scales(bias: np.ndarray, x_scale: float, w_scales: np.ndarray, reduction: int) -> np.ndarray:
    """Weight scales per output channel, each raised to the least value at which the int32 bias
    ``round(b / (s_x * s_w))`` plus ``reduction`` accumulated products still fits int32."""
    scales = np.asarray(w_scales, np.float32).reshape(-1)
    headroom = min(int(reduction) * ACCUMULATOR_TERM, INT32_MAX // 2)
    budget = float(INT32_MAX - headroom)
    need = np.abs(np.asarray(bias, np.float64).reshape(-1)) / (budget * float(np.float32(x_scale)))
    need = need * (1.0 + 2.0**-20)  # covers float32 rounding of the scale and of s_x * s_w
    return np.where(need > scales, need, scales).astype(np.float32)


def quantize_array(
    x: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | np.integer, axis: int = 1
) -> np.ndarray:
    """q = saturate(round_half_even(x / s) + z), in the zero point's integer type."""
    zp = np.asarray(zero_point)
    return quantize_linear(np.asarray(x, np.float32), np.asarray(scale, np.float32), zp, axis, str(zp.dtype))


def dequantize_array(
    q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | np.integer | None = None, axis: int = 1
) -> np.ndarray:
    """x = (q - z) * s in float32."""
    zp = None if zero_point is None else np.asarray(zero_point)
    return dequantize_linear(np.asarray(q), np.asarray(scale, np.float32), zp, axis)


def quantize_bias(bias: np.ndarray, x_scale: float, w_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias and its scales s_x * s_w[c] (zero point 0)."""
    scales = (np.float32(x_scale) * np.asarray(w_scales, np.float32).reshape(-1)).astype(np.float32)
    flat = np.asarray(bias, np.float64).reshape(-1)
    info = np.iinfo(np.int32)
    q = np.clip(np.rint(flat / scales.astype(np.float64)), info.min, info.max).astype(np.int32)
    return q.reshape(np.shape(bias)), scales


def activation_bounds(op: Op, scale: float, zero_point: int, dtype: str) -> tuple[int, int] | None:
    """A Relu/Clip's bounds in the quantized domain of (scale, zero point, dtype), clipped to the
    type's range; None for a Clip with non-constant bounds. The activation is redundant before
    such a Q when they are the type's whole range (onnxruntime's IsClipMadeRedundantByQ)."""
    if op.type == "Relu":
        low, high = 0.0, np.inf
    elif any(t and t not in op.weights for t in op.inputs[1:]):
        return None
    else:
        low, high = clip_bounds([None, *[op.weights.get(t) if t else None for t in op.inputs[1:]]], op.attrs)
    info = np.iinfo(dtype)

    def bound(value: float, default: int) -> int:
        if np.isinf(value):
            return default
        q = np.rint(np.float32(value) / np.float32(scale)) + zero_point
        return int(np.clip(q, info.min, info.max))

    return bound(low, info.min), bound(high, info.max)
