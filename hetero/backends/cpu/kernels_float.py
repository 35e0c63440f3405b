"""Float32 op kernels of the CPU backend: numba loops, with float32 BLAS for the products.

The device keeps BLAS single-threaded (two spinning thread pools fight over the cores);
convolutions split their GEMM into row blocks that numba's threads hand to BLAS in parallel.

Each kernel has the Device kernel signature ``(device, op, activations) -> outputs``;
per-op constants (weight matrices, bias, BatchNorm affine, pool divisors, broadcast plans)
are built once through ``device.prepared``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numba
import numpy as np

from hetero.ir import ops
from hetero.backends.cpu import kernels as k
from hetero.backends.base import Device
from hetero.ir.graph import Op
from hetero.backends.cpu import kernels_mlas as m
from hetero.ir.ops.elementwise import clip_bounds
from hetero.ir.ops.nn import Window, window
from hetero.ir.ops.mlas import feeds_quantize
from hetero.ir.ops.pool import average_divisor, batch_norm_float32, reduce_axes

F32 = np.float32
Kernel = Callable[[Device, Op, Sequence[np.ndarray]], list[np.ndarray]]


def geometry(win: Window) -> tuple[int, ...]:
    """kh, kw, sh, sw, dh, dw, pad_top, pad_left: the window as the kernels take it."""
    return (*win.kernel, *win.strides, *win.dilations, win.pads[0], win.pads[1])


def reference(op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The numpy definition of an op (the host's own arithmetic, for uncommon forms)."""
    return ops.get(op.type).reference(op.arguments(activations), op.attrs)


# --- Conv ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvPlan:
    """A float Conv prepared for im2col + BLAS, or for the direct depthwise kernel."""

    win: Window
    group: int
    weights: tuple[np.ndarray, ...]  # per group (M/g, C/g * kh * kw); depthwise: one (kh, kw, M)
    bias: np.ndarray  # (M,) float32, zeros when absent
    has_bias: bool
    depthwise: bool
    pointwise: bool  # 1x1, stride 1, no padding: the input is already the column matrix


def is_depthwise(op: Op, w_shape: tuple[int, ...]) -> bool:
    """One input channel per group and one group per input channel."""
    x_spec = op.input_specs[0]
    assert x_spec is not None
    return int(op.attrs.get("group", 1)) == x_spec.shape[1] and w_shape[1] == 1


def _conv_plan(op: Op) -> ConvPlan:
    x_spec = op.input_specs[0]
    assert x_spec is not None
    w = np.asarray(op.weights[op.inputs[1]], F32)
    b = op.weights.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
    m, group = w.shape[0], int(op.attrs.get("group", 1))
    win = window(op.attrs, x_spec.shape[2:], w.shape[2:])
    bias = np.zeros(m, F32) if b is None else np.array(b, F32)
    if is_depthwise(op, w.shape):
        weights: tuple[np.ndarray, ...] = (np.array(w[:, 0].transpose(1, 2, 0), F32),)  # owned, channels last
    else:
        mg = m // group
        weights = tuple(np.ascontiguousarray(w[g * mg : (g + 1) * mg].reshape(mg, -1)) for g in range(group))
    pointwise = win.kernel == (1, 1) and win.strides == (1, 1) and win.pads == (0, 0, 0, 0)
    return ConvPlan(win, group, weights, bias, b is not None, is_depthwise(op, w.shape), pointwise)


def conv(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Conv: a direct channels-last depthwise kernel, else per group im2col and a float32 BLAS product."""
    plan: ConvPlan = device.prepared(op, lambda: _conv_plan(op))
    x = np.ascontiguousarray(activations[0])
    n, c, h, w = x.shape
    out_spec = op.output_specs[0]
    m, (ho, wo) = out_spec.shape[1], plan.win.out_hw
    out = np.empty(out_spec.shape, F32)
    kh, kw, sh, sw, dh, dw, pt, pl = geometry(plan.win)
    if plan.depthwise:  # channels last: each tap is a vector multiply-add over channels
        xt, yt = np.empty((h, w, m), F32), np.empty((ho, wo, m), F32)
        for i in range(n):
            k.to_hwc(x[i], m // c, xt)
            k.depthwise_f32(xt, plan.weights[0], plan.bias, sh, sw, dh, dw, pt, pl, yt)
            k.to_chw(yt, out[i])
        return [out]
    cg, mg = c // plan.group, m // plan.group
    cols = None if plan.pointwise else np.empty((cg * kh * kw, ho * wo), F32)
    parts = min(numba.get_num_threads(), mg)  # BLAS runs single-threaded inside numba's threads
    for i in range(n):
        for g in range(plan.group):
            if cols is None:
                matrix = x[i, g * cg : (g + 1) * cg].reshape(cg, h * w)
            else:
                k.im2col(x[i], g * cg, cg, kh, kw, sh, sw, dh, dw, pt, pl, ho, wo, F32(0), cols)
                matrix = cols
            k.gemm_rows(plan.weights[g], matrix, out[i, g * mg : (g + 1) * mg].reshape(mg, ho * wo), parts)
    if plan.has_bias:
        out += plan.bias.reshape(1, m, 1, 1)
    return [out]


# --- Gemm and MatMul ----------------------------------------------------------------------


def gemm(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Gemm: alpha * A' B' + beta * C through float32 BLAS (B' prepared once when constant)."""
    a, b, c = (op.arguments(activations) + [None])[:3]
    if op.attrs.get("transA", 0):
        a = a.T
    if op.inputs[1] in op.weights:
        b = device.prepared(op, lambda: np.ascontiguousarray(b.T if op.attrs.get("transB", 0) else b))
    elif op.attrs.get("transB", 0):
        b = b.T
    y = np.dot(a, b)
    alpha, beta = F32(op.attrs.get("alpha", 1.0)), F32(op.attrs.get("beta", 1.0))
    if alpha != 1:
        y *= alpha
    if c is not None:
        y += c if beta == 1 else beta * c
    return [y]


def matmul(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """MatMul through float32 BLAS with numpy's batching rules."""
    a, b = op.arguments(activations)
    return [np.ascontiguousarray(np.matmul(a, b)).reshape(op.output_specs[0].shape)]  # 1-D x 1-D is 0-D


# --- elementwise --------------------------------------------------------------------------


def binary(code: int) -> Kernel:
    """A broadcasting Add/Sub/Mul/Div kernel: numba for float32, numpy for other dtypes."""

    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = op.arguments(activations)
        spec = op.output_specs[0]
        shapes = (tuple(a.shape), tuple(b.shape), spec.shape)
        plan = device.prepared(op, lambda: k.broadcast_plan(*shapes))
        if a.dtype != F32 or b.dtype != F32 or plan is None or 0 in spec.shape:
            return reference(op, activations)
        out = np.empty(spec.shape, F32)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        k.binary_f32(code, a.reshape(-1), b.reshape(-1), *plan, out.reshape(-1))
        return [out]

    return kernel


def unary(code: int) -> Kernel:
    """An activation kernel: numba for float32, numpy (Relu and Clip on integers) otherwise."""

    def kernel(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
        args = op.arguments(activations)
        x = args[0]
        if x.dtype != F32:
            return reference(op, activations)
        if code == k.CLIP:
            p0, p1 = (F32(v) for v in clip_bounds(args, op.attrs))
        elif code == k.HARD_SIGMOID:
            p0, p1 = F32(op.attrs.get("alpha", 0.2)), F32(op.attrs.get("beta", 0.5))
        else:
            p0 = p1 = F32(0)
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        k.unary_f32(code, x.reshape(-1), out.reshape(-1), p0, p1)
        return [out]

    return kernel


def batch_norm(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """BatchNormalization (inference) as a per-channel affine map."""
    scale, shift = device.prepared(op, lambda: batch_norm_float32(op.arguments(activations), op.attrs))
    x = np.ascontiguousarray(activations[0])
    shape3 = (x.shape[0], x.shape[1], -1)
    out = np.empty_like(x)
    k.channel_affine(x.reshape(shape3), scale, shift, out.reshape(shape3))
    return [out]


def softmax(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Softmax along one axis: float32 as the reference (onnxruntime's rounding, hetero.ir.ops.mlas),
    bit for bit, so that a QuantizeLinear after it agrees on every device placement."""
    x = activations[0]
    axis = int(op.attrs.get("axis", -1)) % max(x.ndim, 1)
    if x.dtype == F32:
        moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
        out = np.empty_like(moved)
        if moved.size:
            m.softmax_rows(moved.reshape(-1, moved.shape[-1]), out.reshape(-1, moved.shape[-1]))
        return [np.ascontiguousarray(np.moveaxis(out, -1, axis))]
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    out = np.empty_like(moved)
    k.softmax_rows(moved.reshape(-1, moved.shape[-1]), out.reshape(-1, moved.shape[-1]))
    return [np.ascontiguousarray(np.moveaxis(out, -1, axis))]


def _mean_rows(x: np.ndarray, reduced: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    kept = tuple(i for i in range(x.ndim) if i not in reduced)
    moved = np.ascontiguousarray(x.transpose(kept + reduced))
    length = int(np.prod([x.shape[i] for i in reduced], dtype=np.int64))
    out = np.empty(moved.size // max(length, 1), F32)
    k.row_mean(moved.reshape(out.size, length), out)
    return out.reshape(out_shape)


def global_average_pool(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """GlobalAveragePool: the mean of each (n, c) plane."""
    x = activations[0]
    return [_mean_rows(x, tuple(range(2, x.ndim)), op.output_specs[0].shape)]


def reduce_mean(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """ReduceMean over constant axes (all reduced axes moved last). Where an int8 graph quantizes
    its output (a CNN head's mean over H and W between DequantizeLinear and QuantizeLinear), the
    reference's own summation (onnxruntime's order, hetero.ir.ops.mlas), whose float32 bits decide
    the integers."""
    args = op.arguments(activations)
    if feeds_quantize(op):
        x = args[0]
        axes = reduce_axes(args, op.attrs, x.ndim)
        if x.dtype == np.float32 and axes and axes == tuple(range(axes[0], x.ndim)) and x.size:
            return [m.reduce_mean_trailing(x, axes[0], bool(op.attrs.get("keepdims", 1)))]
        return ops.get("ReduceMean").reference(args, op.attrs)
    x = args[0]
    axes = reduce_axes(args, op.attrs, x.ndim)
    if not axes:
        return [x.copy()]
    return [_mean_rows(x, axes, op.output_specs[0].shape)]


# --- pools --------------------------------------------------------------------------------


def max_pool(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """MaxPool on float32, int8 or uint8."""
    x = np.ascontiguousarray(activations[0])
    win: Window = device.prepared(op, lambda: window(op.attrs, x.shape[2:]))
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    out = np.empty(op.output_specs[0].shape, x.dtype)
    k.max_pool(x, *geometry(win), x.dtype.type(low), out)
    return [out]


def average_pool(device: Device, op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """AveragePool on float32 with onnxruntime's divisor rule."""
    x = np.ascontiguousarray(activations[0])

    def make() -> tuple[Window, np.ndarray]:
        win = window(op.attrs, x.shape[2:])
        count = average_divisor(win, x.shape[2:], bool(op.attrs.get("count_include_pad", 0)))
        return win, np.ascontiguousarray(count, F32)

    win, divisor = device.prepared(op, make)
    out = np.empty(op.output_specs[0].shape, F32)
    k.average_pool_f32(x, *geometry(win), divisor, out)
    return [out]


FLOAT_KERNELS: dict[str, Kernel] = {
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "Add": binary(k.ADD),
    "Sub": binary(k.SUB),
    "Mul": binary(k.MUL),
    "Div": binary(k.DIV),
    "Relu": unary(k.RELU),
    "Clip": unary(k.CLIP),
    "Sigmoid": unary(k.SIGMOID),
    "HardSigmoid": unary(k.HARD_SIGMOID),
    "HardSwish": unary(k.HARD_SWISH),
    "Tanh": lambda device, op, activations: [m.mlas_unary(m.TANH, activations[0])],  # the reference's float32 bits
    "BatchNormalization": batch_norm,
    "Softmax": softmax,
    "GlobalAveragePool": global_average_pool,
    "ReduceMean": reduce_mean,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
}
"""Float (and dtype-generic MaxPool) kernels by op type."""
