"""Host wrappers of the numba kernels in kernels_mlas_nb.py: float32 Erf, Tanh, Gelu, Softmax rows
and LayerNormalization with the reference's (onnxruntime's) roundings, bit for bit."""

from __future__ import annotations

import math

import numpy as np

from hetero.backends.cpu import kernels_mlas_nb as nb

F32 = np.float32
ERF, TANH, GELU, GELU_TANH = nb.ERF, nb.TANH, nb.GELU, nb.GELU_TANH
softmax_rows = nb.softmax_rows


def mlas_unary(code: int, x: np.ndarray) -> np.ndarray:
    """Erf, Tanh, Gelu or tanh-Gelu of a float32 array."""
    flat = np.ascontiguousarray(x, F32).reshape(-1)
    out = np.empty_like(flat)
    if flat.size:
        nb.unary(code, flat, out)
    return out.reshape(np.shape(x))


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int,
               epsilon: float) -> list[np.ndarray]:
    """y, mean and 1/std of LayerNormalization over the axes from ``axis`` (float32)."""
    x = np.ascontiguousarray(x, F32)
    norm_shape = x.shape[axis:]
    rows, n = math.prod(x.shape[:axis]), math.prod(norm_shape)
    s = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, F32), norm_shape)).reshape(-1)
    b = np.zeros_like(s) if bias is None else np.ascontiguousarray(np.broadcast_to(np.asarray(bias, F32), norm_shape)).reshape(-1)
    out = np.empty_like(x)
    mean, inv = np.empty(rows, F32), np.empty(rows, F32)
    if x.size:
        nb.layer_norm_rows(x.reshape(rows, n), s, b, bias is not None, F32(epsilon), out.reshape(rows, n), mean, inv)
    stats = (*x.shape[:axis], *([1] * (x.ndim - axis)))
    return [out, mean.reshape(stats), inv.reshape(stats)]


def reduce_mean_trailing(x: np.ndarray, first_axis: int, keepdims: bool) -> np.ndarray:
    """``mlas.reduce_mean_trailing`` (onnxruntime's float32 ReduceMean over the axes from
    ``first_axis`` on) in one compiled pass: the same bits."""
    x = np.ascontiguousarray(x, F32)
    lead = x.shape[:first_axis]
    n = math.prod(x.shape[first_axis:])
    rows = math.prod(lead)
    out = np.empty(rows, F32)
    if rows:
        nb.eigen_mean_rows(x.reshape(rows, n), out)
    return out.reshape(lead + (1,) * (x.ndim - first_axis) if keepdims else lead)
