"""Ops bound to cpu kernels for a compiled plan: weights packed, arguments resolved, layouts chosen.

A :class:`Step` is one op ready to run: the layout each activation input must arrive in
(``NCHW``: as ONNX says, ``NHWC``: a 4-D tensor stored channels-last as (N, H, W, C), a 5-D
one (N, A, B, H, W) as (N, H, W, A, B): a channel shuffle's middle), the
layout of each output, and a function of the input arrays alone. Integer convolutions and
GEMMs (steps_conv, steps_dw), pools, residual adds, channel concats and channel shuffles
(Reshape, Transpose, Reshape) run channels-last (kernels_nhwc, kernels_pool, kernels_channels,
as kernels_shared's work loops shared with helper threads); QuantizeLinear writes channels-last;
every other op runs its ordinary kernel (the device's table) on NCHW arrays.
Each step computes exactly what the op's ordinary kernel computes (the same int32 sums and
float32 rules), so plans are bit-identical to per-op runs and to the numpy reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.backends.cpu import kernels_int8 as q
from hetero.backends.cpu import kernels_nhwc as nk
from hetero.backends.cpu import native
from hetero.backends.cpu import kernels_channels as kc
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu import kernels_tail as kt
from hetero.backends.cpu.kernels_float import geometry
from hetero.backends.cpu.kernels_quant import F32, Requant, _ratio, per_channel, scalar
from hetero.ir.graph import Op
from hetero.ir.ops.nn import window
from hetero.ir.ops.pool import average_divisor, batch_norm_float32
from hetero.ir.ops.qlinear import pool_multiplier
from hetero.ir.ops.tensor import slice_index, split_sizes
from hetero.errors import GraphError

NCHW, NHWC = "nchw", "nhwc"
INT8 = (np.dtype(np.int8), np.dtype(np.uint8))

Run = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Step:
    """One op bound to a kernel: the layouts its inputs must come in and its outputs leave in."""

    op: Op
    wants: tuple[str, ...]
    gives: tuple[str, ...]
    run: Run


def nhwc_shape(shape: Sequence[int]) -> tuple[int, ...]:
    n, c, h, w = shape
    return (n, h, w, c)


def fallback(device: Device, op: Op) -> Step:
    """The op's ordinary kernel on NCHW arrays."""
    kernel = device.kernels[op.type]
    return Step(op, (NCHW,) * len(op.activation_inputs), (NCHW,) * len(op.outputs),
                lambda inputs: kernel(device, op, inputs))


# --- elementwise, pools, concat, (de)quantization -----------------------------------------------------------


def _qadd_constant(op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearAdd of an 8-bit tensor and a one-element constant (Gelu's ``1 + erf(.)`` in a QDQ
    ConvNeXt or transformer): each output byte is a function of the input byte, so one 256-entry
    table computed by the reference on every byte, looked up in whichever layout the tensor comes
    (it ran the generic broadcasting kernel: 3.3 ms for 56x56x384 against onnxruntime's 0.11)."""
    from hetero.backends.reference import reference_op

    index = 0 if op.inputs[0] not in op.weights else 3
    other = op.inputs[3 - index]
    spec, out_spec = op.input_specs[index], op.output_specs[0]
    if other not in op.weights or np.asarray(op.weights[other]).size != 1 or spec is None:
        return None
    if np.dtype(spec.dtype) not in INT8 or np.dtype(out_spec.dtype) not in INT8 or tuple(spec.shape) != tuple(out_spec.shape):
        return None
    rank = max(len(spec.shape), 1)
    every = np.arange(256, dtype=np.uint8).view(spec.dtype).reshape((1,) * (rank - 1) + (256,))
    table = np.ascontiguousarray(np.asarray(reference_op(op, [every])[0]).reshape(256)).view(np.uint8)
    dtype, size = np.dtype(out_spec.dtype), int(np.prod(spec.shape))
    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None or size == 0 else jobs.bind_part(kt.lookup_part, (
        np.empty(size, np.uint8), table, np.empty(size, np.uint8)), -(-size // kt.LOOKUP_CHUNK), 0, 3)
    layout = available[0] if available else NCHW

    def lookup(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(x.shape, dtype)
        if bound is not None and x.flags.c_contiguous and bound.run(x, out):
            return [out]
        flat = out.reshape(-1).view(np.uint8)
        ks.run_items(kt.lookup_part, (np.ascontiguousarray(x).reshape(-1).view(np.uint8), table, flat),
                     -(-flat.size // kt.LOOKUP_CHUNK))
        return [out]

    return Step(op, (layout,), (layout,), lookup)


def qadd(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearAdd of two same-shape tensors: elementwise, so in whichever layout they come; of a
    tensor and a one-element constant: a table lookup (``_qadd_constant``)."""
    if len(op.activation_inputs) == 1:
        return _qadd_constant(op, available)
    a_spec, b_spec = op.input_specs[0], op.input_specs[3]
    shape = op.output_specs[0].shape
    if len(op.activation_inputs) != 2 or a_spec.shape != shape or b_spec.shape != shape or len(shape) != 4:
        return None
    args = op.arguments([None, None])
    _, sa, za, _, sb, zb, sy, zy = args[:8]
    ra, rb = _ratio(sa, sy), _ratio(sb, sy)
    fixed = F32(q.qadd_fixed(ra, F32(scalar(za)), rb, F32(scalar(zb)), F32(scalar(zy))))
    rq = Requant.of(op, np.ones(1, F32), 1, zy)
    layout = NHWC if NHWC in available else NCHW
    size = int(np.prod(shape))
    chunks = -(-size // nk.CHUNK)
    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None else jobs.bind_part(ks.qadd_part, (
        np.empty(size, a_spec.dtype), np.empty(size, b_spec.dtype), ra, rb, fixed, rq.lo, rq.hi, np.empty(size, rq.dtype)),
        chunks, 0, 8, 2)

    def add(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        a, b = inputs
        out = np.empty(a.shape, rq.dtype)
        if bound is not None and a.flags.c_contiguous and b.flags.c_contiguous and bound.run(a, out, b):
            return [out]
        ks.run_items(ks.qadd_part, (a.reshape(-1), b.reshape(-1), ra, rb, fixed, rq.lo, rq.hi, out.reshape(-1)), chunks)
        return [out]

    return Step(op, (layout, layout), (layout,), add)


def max_pool(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Integer MaxPool channels-last."""
    spec = op.input_specs[0]
    dtype = np.dtype(spec.dtype)
    if dtype not in INT8 or available[0] != NHWC:
        return None
    win = window(op.attrs, spec.shape[2:])
    out_shape = nhwc_shape(op.output_specs[0].shape)
    low = dtype.type(np.iinfo(dtype).min)

    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None else jobs.bind_part(ks.max_pool_part, (
        np.empty(nhwc_shape(spec.shape), dtype), *geometry(win), low, np.empty(out_shape, dtype)),
        out_shape[0] * out_shape[1], 0, 5)

    def pool(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty(out_shape, dtype)
        if bound is not None and inputs[0].flags.c_contiguous and bound.run(inputs[0], out):
            return [out]
        ks.run_items(ks.max_pool_part, (inputs[0], *geometry(win), low, out), out_shape[0] * out_shape[1])
        return [out]

    return Step(op, (NHWC,), (NHWC,), pool)


def _global_pool(op: Op, spec_shape: tuple[int, ...], sx, zx, sy, zy) -> Run:
    n, c, h, w = spec_shape
    rq = Requant.of(op, np.ones(1, F32), 1, zy)
    mult = F32(pool_multiplier(sx, sy, h * w))
    zx32 = np.int32(scalar(zx))
    out_shape = op.output_specs[0].shape

    def pool(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty(out_shape, rq.dtype)
        ks.run_items(ks.global_pool_part, (inputs[0].reshape(n, h * w, c), zx32, mult, *rq.tail, out.reshape(n, c)), n)
        return [out]

    return pool


def qglobal_pool(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearGlobalAveragePool of a channels-last input; its (N, C, 1, 1) output is the same in both layouts."""
    if available[0] != NHWC:
        return None
    x_spec = op.input_specs[0]
    _, sx, zx, sy, zy = op.arguments([None])[:5]
    return Step(op, (NHWC,), (NCHW,), _global_pool(op, x_spec.shape, sx, zx, sy, zy))


def qaverage_pool(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearAveragePool channels-last: integer sums when one window covers the image, else rule 5's float path."""
    if available[0] != NHWC:
        return None
    x_spec = op.input_specs[0]
    _, sx, zx, sy, zy = op.arguments([None])[:5]
    win = window(op.attrs, x_spec.shape[2:])
    if tuple(win.kernel) == tuple(x_spec.shape[2:]) and not any(win.pads):
        return Step(op, (NHWC,), (NCHW,), _global_pool(op, x_spec.shape, sx, zx, sy, zy))
    if op.attrs.get("count_include_pad", 0):
        count = np.full(win.out_hw, F32(win.kernel[0] * win.kernel[1]))
    else:
        count = average_divisor(win, x_spec.shape[2:], False)
    count = np.ascontiguousarray(count, F32)
    rq = Requant.of(op, np.ones(1, F32), 1, zy)
    out_shape = nhwc_shape(op.output_specs[0].shape)
    sx32, sy32, zx32 = F32(np.asarray(sx).reshape(())), F32(np.asarray(sy).reshape(())), np.int32(scalar(zx))

    def pool(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty(out_shape, rq.dtype)
        ks.run_items(ks.average_pool_part, (inputs[0], zx32, *geometry(win), sx32, count, sy32, *rq.tail, out),
                     out.shape[0] * out.shape[1])
        return [out]

    return Step(op, (NHWC,), (NHWC,), pool)


def qconcat(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearConcat along channels of channels-last inputs in one pass over the output rows:
    each part's bytes through a 256-byte table into its column slice (the identity for a part
    already in the output's scale and zero point; else its requantization, rule 6, of each of
    its 256 values, computed by the same kernel), 64 bytes at a time (kernels_tail)."""
    spec = op.output_specs[0]
    if len(spec.shape) != 4 or int(op.attrs["axis"]) % 4 != 1 or NHWC not in available:
        return None
    parts = len(op.activation_inputs)
    args = op.arguments([None] * parts)
    sy, zy = args[0], args[1]
    dtype = np.dtype(spec.dtype)
    info = np.iinfo(dtype)
    y_scale, y_zp = F32(np.asarray(sy, F32).reshape(())), scalar(zy)
    n, _, h, w = spec.shape
    plan = []
    start = 0
    for i in range(2, len(args), 3):
        width = op.input_specs[i].shape[1]
        scale, zp = F32(np.asarray(args[i + 1], F32).reshape(())), scalar(args[i + 2])
        same = scale == y_scale and zp == y_zp and np.dtype(op.input_specs[i].dtype) == dtype
        plan.append((start, width, same, np.int32(zp), scale))
        start += width
    out_shape = nhwc_shape(spec.shape)
    tail = (y_scale, F32(y_zp), F32(info.min), F32(info.max))
    tables = np.empty((parts, 256), np.uint8)  # per part: its bytes' output bytes
    for k, (i, (_, _, same, zp, scale)) in enumerate(zip(range(2, len(args), 3), plan)):
        if same:
            tables[k] = np.arange(256, dtype=np.uint8)
        else:  # the part's requantization (kernels_int8's rule 6) of each of its 256 values
            every = np.arange(256, dtype=np.uint8).view(op.input_specs[i].dtype).reshape(1, 256)
            row = np.empty((1, 256), dtype)
            ks.requant_rows_part(every, zp, scale, *tail, row, np.zeros(2, np.int64))
            tables[k] = row.view(np.uint8)[0]
    widths = np.array([width for _, width, _, _, _ in plan], np.int64)
    begins = np.array([begin for begin, _, _, _, _ in plan], np.int64)
    pixels = n * h * w

    def concat(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty(out_shape, dtype)
        srcs = [np.ascontiguousarray(x) for x in inputs]  # alive until the job returns
        ptrs = np.array([x.ctypes.data for x in srcs], np.int64)
        ks.run_items(kt.concat_part, (ptrs, widths, begins, tables, out.reshape(pixels, -1).view(np.uint8)),
                     -(-pixels // kt.CONCAT_PIXELS))
        return [out]

    return Step(op, (NHWC,) * parts, (NHWC,), concat)


def _quantize_flat(op: Op) -> Step | None:
    """Per-tensor QuantizeLinear of a float tensor of another rank (a CNN head's pooled (N, C), a
    transformer's rows), elementwise in the layout it has, as one bound job."""
    args = op.arguments([None]) + [None]
    scale, zp = args[1], args[2]
    dtype = np.dtype(op.output_specs[0].dtype)
    if np.asarray(scale).size != 1 or dtype not in INT8:
        return None
    info = np.iinfo(dtype)
    shape = tuple(op.input_specs[0].shape)
    size = int(np.prod(shape, dtype=np.int64))
    scales, zps, lo, hi = per_channel(scale, 1, F32), per_channel(zp, 1, F32), F32(info.min), F32(info.max)
    items = -(-size // ks.QUANTIZE_BLOCK)
    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None or size == 0 else jobs.bind_part(ks.quantize_part, (
        np.empty((1, 1, size), F32), scales, zps, lo, hi, np.empty((1, size, 1), dtype)), items, 0, 8)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty(shape, dtype)
        if bound is not None and x.dtype == F32 and x.flags.c_contiguous and bound.run(x, out):
            return [out]
        x = np.ascontiguousarray(x, F32)
        if size:
            ks.run_items(ks.quantize_part, (x.reshape(1, 1, size), scales, zps, lo, hi, out.reshape(1, size, 1)), items)
        return [out]

    return Step(op, (NCHW,), (NCHW,), run)


def quantize(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QuantizeLinear of a 4-D float tensor, per tensor or per channel (axis 1), written channels-last."""
    spec = op.input_specs[0]
    if spec is None or spec.dtype != "float32":
        return None
    if len(spec.shape) != 4:
        return _quantize_flat(op)
    args = op.arguments([None]) + [None]
    scale, zp = args[1], args[2]
    n, c, h, w = spec.shape
    per_axis = np.asarray(scale).size != 1
    if per_axis and int(op.attrs.get("axis", 1)) % 4 != 1:
        return None
    dtype = np.dtype(op.output_specs[0].dtype)
    if dtype not in INT8:
        return None
    info = np.iinfo(dtype)
    scales, zps = per_channel(scale, c, F32), per_channel(zp, c, F32)
    lo, hi = F32(info.min), F32(info.max)
    items = n * -(-(h * w) // ks.QUANTIZE_BLOCK)

    if available[0] == NHWC and not per_axis:  # a float channels-last tensor (a dequantized chain's end): elementwise
        flat = h * w * c
        items_flat = n * -(-flat // ks.QUANTIZE_BLOCK)

        def run_flat(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            x = np.ascontiguousarray(inputs[0], F32)
            out = np.empty((n, h, w, c), dtype)
            ks.run_items(ks.quantize_part, (x.reshape(n, 1, flat), scales[:1], zps[:1], lo, hi, out.reshape(n, flat, 1)), items_flat)
            return [out]

        return Step(op, (NHWC,), (NHWC,), run_flat)

    jobs = native.jobs() if native.BIND else None
    bound = None if jobs is None else jobs.bind_part(ks.quantize_part, (
        np.empty((n, c, h * w), F32), scales, zps, lo, hi, np.empty((n, h * w, c), dtype)), items, 0, 8)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out = np.empty((n, h, w, c), dtype)
        if bound is not None and x.dtype == F32 and x.flags.c_contiguous and bound.run(x, out):
            return [out]
        x = np.ascontiguousarray(x, F32)
        ks.run_items(ks.quantize_part, (x.reshape(n, c, h * w), scales, zps, lo, hi, out.reshape(n, h * w, c)), items)
        return [out]

    return Step(op, (NCHW,), (NHWC,), run)


def dequantize(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """DequantizeLinear per tensor of an int8/uint8 tensor (NCHW: the float result leaves the plan's integer part)."""
    spec = op.input_specs[0]
    args = op.arguments([None]) + [None]
    scale, zp = args[1], args[2]
    if spec is None or np.dtype(spec.dtype) not in INT8 or np.asarray(scale).size != 1 or (zp is not None and np.asarray(zp).size != 1):
        return None
    s32, z32 = F32(np.asarray(scale, F32).reshape(())), np.int32(scalar(zp))
    shape = op.output_specs[0].shape
    layout = NHWC if available[0] == NHWC and len(shape) == 4 else NCHW  # elementwise: in the layout it comes
    if layout == NHWC:
        shape = nhwc_shape(shape)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty(shape, F32)
        ks.run_items(ks.dequantize_part, (np.ascontiguousarray(inputs[0]).reshape(-1), z32, s32, out.reshape(-1)),
                     -(-out.size // nk.CHUNK))
        return [out]

    return Step(op, (layout,), (layout,), run)


def float_unary(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """A float32 activation of a channels-last 4-D tensor: the device's kernel is elementwise, so
    it runs on the channels-last array as it is (the plan gives it one only inside a dequantized
    region that returns to 8 bits, plan._float_nhwc_chains)."""
    spec = op.input_specs[0]
    if not available or available[0] != NHWC or spec is None or spec.dtype != "float32" or len(spec.shape) != 4:
        return None
    kernel = device.kernels[op.type]
    return Step(op, (NHWC,), (NHWC,), lambda inputs: kernel(device, op, inputs))


def batch_norm_nhwc(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """A float32 BatchNormalization of a channels-last 4-D tensor (DenseNet's pre-activation
    blocks, between a DequantizeLinear and a QuantizeLinear): x * scale + shift along the last
    axis, the reference's two float32 roundings (hetero.ir.ops.pool.batch_norm_float32)."""
    spec = op.input_specs[0]
    if not available or available[0] != NHWC or spec is None or spec.dtype != "float32" or len(spec.shape) != 4:
        return None
    scale, shift = batch_norm_float32(op.arguments([None]), op.attrs)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.multiply(inputs[0], scale)
        np.add(out, shift, out=out)
        return [out]

    return Step(op, (NHWC,), (NHWC,), run)


def float_mul(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """A float32 Mul of a channels-last (N, C, H, W) tensor by one of its shape or by an (N, C, 1, 1)
    one (a squeeze-and-excitation gate; the same bytes in both layouts): the products the NCHW
    kernel forms, without converting the big tensor."""
    specs = op.input_specs[:2]
    if len(specs) != 2 or any(s is None or s.dtype != "float32" or len(s.shape) != 4 for s in specs) or NHWC not in available:
        return None
    shape = tuple(op.output_specs[0].shape)
    n, c, h, w = shape
    gates = [tuple(s.shape) == (n, c, 1, 1) and h * w > 1 for s in specs]
    if not all(g or tuple(s.shape) == shape for g, s in zip(gates, specs)) or all(gates):
        return None
    if any(not g and form != NHWC for g, form in zip(gates, available)):
        return None  # a full-size operand must come channels-last
    wants = tuple(form if g else NHWC for g, form in zip(gates, available))
    views = [(n, 1, c) if g else (n, h * w, c) for g in gates]
    full, other = (1, 0) if gates[0] else (0, 1)  # the full-size operand first (the product commutes)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = np.empty((n, h, w, c), F32)
        a, b = (np.ascontiguousarray(inputs[i]).reshape(views[i]) for i in (full, other))
        nk.mul_rows(a, b, not gates[other], out.reshape(n, h * w, c))
        return [out]

    return Step(op, wants, (NHWC,), run)


def reshape_pooled(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Flatten/Reshape/Squeeze of an (N, C, 1, 1) tensor: the same bytes in either layout."""
    spec = op.input_specs[0]
    if spec is None or len(spec.shape) != 4 or spec.shape[2] * spec.shape[3] != 1 or len(op.activation_inputs) != 1:
        return None
    shape = op.output_specs[0].shape
    return Step(op, (available[0],), (NCHW,), lambda inputs: [np.ascontiguousarray(inputs[0]).reshape(shape)])


def reshape(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Flatten/Reshape/Squeeze of a pooled tensor, or a channel shuffle's reshapes."""
    step = reshape_pooled(device, op, available)
    return step if step is not None else channel_reshape(op, available)


def channel_reshape(op: Op, available: tuple[str, ...]) -> Step | None:
    """Reshape of a channels-last tensor between (N, C, H, W) and (N, A, B, H, W), A * B = C:
    the same bytes in both (stored (N, H, W, C) and (N, H, W, A, B))."""
    spec = op.input_specs[0]
    if op.type != "Reshape" or spec is None or available[0] != NHWC:
        return None
    src, dst = tuple(spec.shape), tuple(op.output_specs[0].shape)
    if len(src) == 4 and len(dst) == 5 and dst[0] == src[0] and dst[3:] == src[2:] and dst[1] * dst[2] == src[1]:
        stored = (dst[0], dst[3], dst[4], dst[1], dst[2])
    elif len(src) == 5 and len(dst) == 4 and dst[0] == src[0] and dst[2:] == src[3:] and src[1] * src[2] == dst[1]:
        stored = (dst[0], dst[2], dst[3], dst[1])
    else:
        return None
    return Step(op, (NHWC,), (NHWC,), lambda inputs: [np.ascontiguousarray(inputs[0]).reshape(stored)])


def transpose(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Transpose (0, 2, 1, 3, 4) of a channels-last 5-D 8-bit tensor: swaps its two channel axes
    (a channel shuffle's middle), one (A, B) transpose per pixel."""
    spec = op.input_specs[0]
    perm = tuple(int(p) for p in op.attrs.get("perm", ()))
    if spec is None or available[0] != NHWC or len(spec.shape) != 5 or perm != (0, 2, 1, 3, 4):
        return None
    if np.dtype(spec.dtype).itemsize != 1:
        return None
    n, a, b, h, w = spec.shape
    dtype = np.dtype(spec.dtype)
    items = -(-(n * h * w) // kc.PIXELS_PER_ITEM)

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(inputs[0])
        out = np.empty((n, h, w, b, a), dtype)
        ks.run_items(ks.swap_part, (x.view(np.uint8).reshape(n * h * w, a, b), out.view(np.uint8).reshape(n * h * w, b, a)), items)
        return [out]

    return Step(op, (NHWC,), (NHWC,), run)


_NHWC_AXIS = (0, 3, 1, 2)  # an NCHW axis's position in the channels-last array


def slice_nhwc(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Slice of a channels-last 4-D tensor by constant starts, ends, axes and steps (ShuffleNetV2's
    channel halves): the same index with its axes moved, one strided copy, so the plan around it
    stays channels-last (it had converted the whole tensor to NCHW and back for each Slice)."""
    spec = op.input_specs[0]
    if spec is None or available[0] != NHWC or len(spec.shape) != 4:
        return None
    try:
        index = slice_index(spec.shape, op.arguments([None]))
    except (GraphError, TypeError, ValueError):
        return None
    moved = tuple(index[a] for a in (0, 2, 3, 1))

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(inputs[0][moved])]

    return Step(op, (NHWC,), (NHWC,), run)


def split_nhwc(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """Split of a channels-last 4-D tensor into constant sizes along any axis, channels-last."""
    spec = op.input_specs[0]
    if spec is None or available[0] != NHWC or len(spec.shape) != 4:
        return None
    axis = int(op.attrs.get("axis", 0)) % 4
    try:
        sizes = split_sizes(op.arguments([None]), op.attrs, spec.shape[axis])
    except (GraphError, TypeError, ValueError):
        return None
    where, bounds = _NHWC_AXIS[axis], np.cumsum(sizes)[:-1]

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.ascontiguousarray(part) for part in np.split(inputs[0], bounds, axis=where)]

    return Step(op, (NHWC,), (NHWC,) * len(sizes), run)


def only_data_is_activation(op: Op) -> bool:
    """Every input but the data ones (QLinearAdd's a and b, QLinearConcat's parts, else the first)
    is absent or a constant: the builders bind parameters once."""
    if op.type == "QLinearAdd":
        data = {i for i in (0, 3) if i < len(op.inputs) and op.inputs[i] and op.inputs[i] not in op.weights} or {0, 3}
    elif op.type == "Mul":
        data = {0, 1}
    elif op.type == "QLinearConcat":
        data = set(range(2, len(op.inputs), 3))
    else:
        data = {0}
    return all(i in data or not name or name in op.weights for i, name in enumerate(op.inputs)) and all(
        op.inputs[i] and op.inputs[i] not in op.weights for i in data if i < len(op.inputs))
