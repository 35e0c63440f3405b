"""Integer op kernels of the kernel backends besides the matrix products (opencl_qgemm):
QuantizeLinear, DequantizeLinear, QLinearAdd, the average pools, QLinearConcat, QLinearMul and
QLinearSoftmax, bit for bit
with hetero/ops/quantize.py and hetero/ops/qlinear.py. int8 and uint8 share kernels through a
signedness flag; every float32 constant is computed on the host by the reference's functions.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import (
    ROW_LOCAL,
    KernelDevice,
    round_up,
    broadcast_strides,
    contiguous_strides,
    f32,
    i32,
    walk_table,
)
from hetero.backends.kernels.ops import pool_geometry
from hetero.backends.kernels.qgemm import CONDITIONS as PRODUCT_CONDITIONS
from hetero.backends.kernels.qgemm import KERNELS as PRODUCT_KERNELS
from hetero.backends.kernels.qgemm import (
    F,
    Fn,
    const_input,
    int8_io,
    params_constant,
    per_channel,
    saturation,
    scalar,
    scalar_f32,
    signed,
)
from hetero.backends.kernels.tensor import copy_into
from hetero.ir.graph import Op
from hetero.ir.ops.nn import window
from hetero.ir.ops.pool import average_divisor
from hetero.ir.ops.qlinear import _broadcast_side, fma32, pool_multiplier
from hetero.ir.ops.qlinear_softmax import softmax_table


# --- QuantizeLinear, DequantizeLinear -----------------------------------------------------------

def _axis_layout(op: Op, shape: Sequence[int]) -> tuple[np.int32, np.int32]:
    """(inner, axis_dim) indexing per-axis parameters; (1, 1) for per-tensor."""
    scale = np.asarray(const_input(op, 1))
    if scale.size == 1:
        return i32(1), i32(1)
    axis = int(op.attrs.get("axis", 1)) % len(shape)
    return i32(np.prod(shape[axis + 1 :], dtype=np.int64)), i32(shape[axis])


def quantize(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = dev.operands(op, inputs)[0]  # an activation, or a constant (uploaded once)
    dtype = op.output_specs[0].dtype
    y = dev.empty(x.shape, dtype)
    inner, axis_dim = dev.host_value(op, "layout", lambda: _axis_layout(op, x.shape))
    scale = dev.constant(op, "scale", lambda: per_channel(const_input(op, 1), int(axis_dim), np.float32))
    zero = dev.constant(op, "zero", lambda: per_channel(const_input(op, 2), int(axis_dim), np.int32))
    info = np.iinfo(dtype)
    kernel = "quantize_i32" if dtype == "int32" else "quantize_q8"
    bounds = (f32(info.min), f32(info.max))
    if dev.cpu_style and kernel == "quantize_q8" and int(axis_dim) == 1:  # per tensor: 16 elements per item
        s, z = scalar_f32(const_input(op, 1)), f32(scalar(const_input(op, 2)))
        items = -(-x.size // 16)
        local = 16 if items >= 64 else 1
        if items:
            dev.launch("qcpu", "quantize_q8_cpu", (round_up(items, local),), (local,), x, s, z, y, *bounds, i32(x.size))
        return [y]
    dev.launch_1d("qmisc", kernel, x.size, x, scale, zero, y, inner, axis_dim, *bounds, i32(x.size))
    return [y]


def dequantize(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    q = dev.operands(op, inputs)[0]  # an activation, or a constant weight (uploaded once)
    y = dev.empty(q.shape, "float32")
    inner, axis_dim = dev.host_value(op, "layout", lambda: _axis_layout(op, q.shape))
    scale = dev.constant(op, "scale", lambda: per_channel(const_input(op, 1), int(axis_dim), np.float32))
    zero = dev.constant(op, "zero", lambda: per_channel(const_input(op, 2), int(axis_dim), np.int32))
    if str(q.dtype) == "int32":
        dev.launch_1d("qmisc", "dequantize_i32", q.size, q, scale, zero, y, inner, axis_dim, i32(q.size))
    else:
        args = (q, signed(q.dtype), scale, zero, y, inner, axis_dim, i32(q.size))
        dev.launch_1d("qmisc", "dequantize_q8", q.size, *args)
    return [y]


# --- QLinearAdd, average pools, QLinearConcat -------------------------------------------------------

def _qadd_constants(op: Op) -> tuple[np.float32, np.float32, np.float32, int]:
    """ra, rb, fixed and the folded side of rule 4, by the reference's own float32 steps."""
    sy = F(np.asarray(const_input(op, 6), F).reshape(()))
    ra = F(np.asarray(const_input(op, 1), F).reshape(())) / sy
    rb = F(np.asarray(const_input(op, 4), F).reshape(())) / sy
    za, zb, zy = F(scalar(const_input(op, 2))), F(scalar(const_input(op, 5))), F(scalar(const_input(op, 7)))
    fixed = F(zy - fma32(ra, za, F(rb * zb)))
    a, b = op.input_specs[0], op.input_specs[3]
    assert a is not None and b is not None
    side = _broadcast_side(a.shape, b.shape, op.output_specs[0].shape)
    return ra, rb, fixed, {"": 0, "b": 1, "a": 2}[side]


def _binary_walk(a: Sequence[int], b: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """The broadcast walk of a two-operand int8 op (all zeros when neither operand broadcasts)."""
    if tuple(a) == tuple(b) == tuple(out):
        return np.zeros(1 + 3 * 6, np.int32)
    walk = walk_table(tuple(out), broadcast_strides(a, out), broadcast_strides(b, out))
    assert walk is not None, "supports() admits only broadcasts that fit MAX_RANK"
    return walk


def qadd(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    values = dev.operands(op, inputs)
    a, b = values[0], values[3]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)

    ra, rb, fixed, side = dev.host_value(op, "rule4", lambda: _qadd_constants(op))
    lo, hi = saturation(op)
    if dev.cpu_style and side == 0 and tuple(a.shape) == tuple(b.shape) == spec.shape:  # 16 elements per item
        args = (a, signed(a.dtype), b, signed(b.dtype), f32(ra), f32(rb), f32(fixed), lo, hi, y, i32(y.size))
        items = -(-y.size // 16)
        local = 16 if items >= 64 else 1
        dev.launch("qcpu", "qadd_cpu", (round_up(items, local),), (local,), *args)
        return [y]
    args = (a, signed(a.dtype), b, signed(b.dtype), f32(ra), f32(rb), f32(fixed), i32(side),
            dev.constant(op, "walk", lambda: _binary_walk(a.shape, b.shape, spec.shape)), lo, hi, y, i32(y.size))
    dev.launch_1d("qmisc", "qadd", y.size, *args)
    return [y]


def qaverage_pool(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    geometry = dev.host_value(op, "geometry", lambda: pool_geometry(op, x.shape))
    win = window(op.attrs, x.shape[2:])
    sx, zx = scalar_f32(const_input(op, 1)), scalar(const_input(op, 2))
    sy, zy = scalar_f32(const_input(op, 3)), f32(scalar(const_input(op, 4)))
    lo, hi = saturation(op)
    tail = (y, *geometry, i32(y.size))
    if tuple(win.kernel) == tuple(x.shape[2:]) and not any(win.pads):  # the integer form of rule 5
        count = x.shape[2] * x.shape[3]
        mult = dev.constant(op, "mult", lambda: np.full(win.out_hw, pool_multiplier(sx, sy, count), F))
        dev.launch_1d("qmisc", "qavgpool", y.size, x, signed(x.dtype), i32(zx), mult, zy, lo, hi, *tail)
        return [y]

    def counts() -> np.ndarray:
        if op.attrs.get("count_include_pad", 0):
            return np.full(win.out_hw, win.kernel[0] * win.kernel[1], F)
        return average_divisor(win, x.shape[2:], False).astype(F)

    table = dev.constant(op, "count", counts)
    dev.launch_1d("qmisc", "qavgpool_float", y.size, x, signed(x.dtype), i32(zx), sx, table, sy, zy, lo, hi, *tail)
    return [y]


def qglobal_average_pool(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    rows, inner = int(x.shape[0] * x.shape[1]), int(x.shape[2] * x.shape[3])
    mult = pool_multiplier(const_input(op, 1), const_input(op, 3), inner)
    lo, hi = saturation(op)
    zx, zy = i32(scalar(const_input(op, 2))), f32(scalar(const_input(op, 4)))
    args = (x, signed(x.dtype), zx, f32(mult), zy, lo, hi, y, i32(inner))
    if rows > 0:
        dev.launch("qmisc", "qgap", (ROW_LOCAL * rows, 1), (ROW_LOCAL, 1), *args)
    return [y]


def qconcat(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    values = dev.operands(op, inputs)
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    axis = int(op.attrs["axis"]) % len(spec.shape)
    out_strides = contiguous_strides(spec.shape)
    sy, zy = F(np.asarray(const_input(op, 0), F).reshape(())), scalar(const_input(op, 1))
    info = np.iinfo(spec.dtype)
    start = 0
    for index in range(2, len(values), 3):
        x = values[index]
        si, zi = F(np.asarray(const_input(op, index + 1), F).reshape(())), scalar(const_input(op, index + 2))
        offset = start * out_strides[axis]
        table = dev.constant(op, f"walk{index}", lambda s=x.shape, o=offset: walk_table(
            s, contiguous_strides(s), out_strides, extra=(0, o)))
        if si == sy and zi == zy and str(x.dtype) == spec.dtype:
            copy_into(dev, x, y, table, x.size)
        else:
            dev.launch_1d("qmisc", "qrequant_copy", x.size, x, signed(x.dtype), i32(zi), f32(si), y, table, f32(sy),
                          f32(zy), f32(info.min), f32(info.max), i32(x.size))
        start += x.shape[axis]
    return [y]


# --- QLinearMul, QLinearSoftmax -----------------------------------------------------------------

def qmul(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    values = dev.operands(op, inputs)
    a, b = values[0], values[3]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)

    sa, za = scalar_f32(const_input(op, 1)), i32(scalar(const_input(op, 2)))
    sb, zb = scalar_f32(const_input(op, 4)), i32(scalar(const_input(op, 5)))
    sy, zy = scalar_f32(const_input(op, 6)), f32(scalar(const_input(op, 7)))
    lo, hi = saturation(op)
    walk = dev.constant(op, "walk", lambda: _binary_walk(a.shape, b.shape, spec.shape))
    args = (a, signed(a.dtype), za, sa, b, signed(b.dtype), zb, sb, sy, zy, walk, lo, hi, y, i32(y.size))
    dev.launch_1d("qmisc", "qmul", y.size, *args)
    return [y]


def qsoftmax(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    shape = tuple(int(d) for d in x.shape)
    axis = int(op.attrs.get("axis", -1)) % max(len(shape), 1)
    d = shape[axis] if shape else 1
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    sx = float(np.asarray(const_input(op, 1)).reshape(()))
    table = dev.constant(op, "table", lambda: softmax_table(sx, d))
    c = f32(np.floor(F(1.0) / scalar_f32(const_input(op, 3))))
    zy = f32(scalar(const_input(op, 4)))
    lo, hi = saturation(op)
    rows = x.size // d if d else 0
    dev.launch_1d("qmisc", "qsoftmax", rows, x, signed(x.dtype), table, c, zy, lo, hi, y, i32(d), i32(inner), i32(rows))
    return [y]


def _per_tensor(op: Op, positions: Sequence[int]) -> bool:
    """The parameters at ``positions`` are absent or single values."""
    return all(np.asarray(const_input(op, p) if const_input(op, p) is not None else 0).size == 1 for p in positions)


def _qadd_ok(op: Op) -> bool:
    out = op.output_specs[0].shape
    a, b = op.input_specs[0], op.input_specs[3]
    assert a is not None and b is not None
    return walk_table(out, broadcast_strides(a.shape, out), broadcast_strides(b.shape, out)) is not None


def _input_is(op: Op, dtypes: Sequence[str]) -> bool:
    spec = op.input_specs[0]
    return spec is not None and spec.dtype in dtypes


KERNELS: dict[str, Fn] = {
    **PRODUCT_KERNELS,
    "QuantizeLinear": quantize,
    "DequantizeLinear": dequantize,
    "QLinearAdd": qadd,
    "QLinearAveragePool": qaverage_pool,
    "QLinearGlobalAveragePool": qglobal_average_pool,
    "QLinearConcat": qconcat,
    "QLinearMul": qmul,
    "QLinearSoftmax": qsoftmax,
}
CONDITIONS: dict[str, Callable[[Op], bool]] = {
    **PRODUCT_CONDITIONS,
    "QuantizeLinear": lambda op: _input_is(op, ("float32",)) and params_constant(op, (0,)),
    "DequantizeLinear": lambda op: _input_is(op, ("int8", "uint8", "int32")) and params_constant(op, (0,)),
    "QLinearAdd": lambda op: int8_io(op, 0, 3) and params_constant(op, (0, 3)) and _qadd_ok(op),
    "QLinearAveragePool": lambda op: int8_io(op, 0) and params_constant(op, (0,)) and len(op.input_specs[0].shape) == 4,
    "QLinearGlobalAveragePool": lambda op: int8_io(op, 0) and params_constant(op, (0,))
    and len(op.output_specs[0].shape) == 4,
    "QLinearConcat": lambda op: int8_io(op, *range(2, len(op.inputs), 3))
    and params_constant(op, range(2, len(op.inputs), 3)),
    "QLinearMul": lambda op: int8_io(op, 0, 3) and params_constant(op, (0, 3)) and _per_tensor(op, (1, 2, 4, 5, 6, 7))
    and _qadd_ok(op),
    "QLinearSoftmax": lambda op: int8_io(op, 0) and params_constant(op, (0,)) and _per_tensor(op, (1, 2, 3, 4))
    and op.input_specs[0].numel > 0,
}
