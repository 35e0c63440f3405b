"""float32 op kernels of the kernel backends (OpenCL and CUDA share them).

Each kernel is ``fn(device, op, inputs) -> outputs`` over device arrays; ``CONDITIONS`` says
which ops (dtypes, attributes) a kernel cannot take, so ``Device.supports`` is truthful.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import (
    ROW_LOCAL,
    TILE,
    TILE_THREADS,
    KernelDevice,
    broadcast_strides,
    contiguous_strides,
    f32,
    fits_int32,
    i32,
    input_dtype,
    input_shape,
    round_up,
    walk_table,
)
from hetero.ir.graph import Op
from hetero.ir.ops.elementwise import clip_bounds
from hetero.ir.ops.nn import window
from hetero.ir.ops.pool import average_divisor, batch_norm_float32, reduce_axes

Fn = Callable[[KernelDevice, Op, Sequence[Buffer]], list[Buffer]]
F32 = "float32"


# --- elementwise -------------------------------------------------------------------------------

def _unary(name: str, params: Callable[[Op], tuple[float, float]] = lambda op: (0.0, 0.0)) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        x = inputs[0]
        y = dev.empty(x.shape, x.dtype)
        p0, p1 = dev.host_value(op, "params", lambda: params(op))
        dev.launch_1d("elementwise", name, x.size, x, y, i32(x.size), f32(p0), f32(p1))
        return [y]

    return run


def _clip_params(op: Op) -> tuple[float, float]:
    values = [None if not t else op.weights.get(t) for t in op.inputs]
    return clip_bounds(values, op.attrs)


def _binary_table(op: Op) -> np.ndarray | None:
    out = op.output_specs[0].shape
    return walk_table(out, broadcast_strides(input_shape(op, 0), out), broadcast_strides(input_shape(op, 1), out))


def _binary(name: str) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        a, b = dev.operands(op, inputs)
        spec = op.output_specs[0]
        y = dev.empty(spec.shape, spec.dtype)
        if a.shape == b.shape:
            dev.launch_1d("elementwise", f"{name}_f32", y.size, a, b, y, i32(y.size))
        else:
            table = dev.constant(op, "walk", lambda: _binary_table(op))
            dev.launch_1d("elementwise", f"{name}_bcast_f32", y.size, a, b, y, table, i32(y.size))
        return [y]

    return run


def batch_norm(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    params = [None, *(op.weights[t] for t in op.inputs[1:])]
    affine = dev.host_value(op, "affine", lambda: batch_norm_float32(params, op.attrs))
    scale = dev.constant(op, "scale", lambda: affine[0])
    shift = dev.constant(op, "shift", lambda: affine[1])
    shape = x.shape
    inner = int(np.prod(shape[2:], dtype=np.int64))
    y = dev.empty(shape, x.dtype)
    dev.launch_1d("elementwise", "scale_shift_f32", x.size, x, scale, shift, y, i32(inner), i32(shape[1]), i32(x.size))
    return [y]


# --- convolution and matrix products -----------------------------------------------------------

def conv_geometry(op: Op, x_shape: Sequence[int], w_shape: Sequence[int]) -> tuple[np.int32, ...]:
    """CONV_ARGS of conv.cl / qconv.cl: C H W M Ho Wo kh kw sh sw dh dw pt pl group."""
    win = window(op.attrs, x_shape[2:], w_shape[2:])
    values = (
        x_shape[1], x_shape[2], x_shape[3], w_shape[0], *win.out_hw, *win.kernel,
        *win.strides, *win.dilations, win.pads[0], win.pads[1], int(op.attrs.get("group", 1)),
    )
    return tuple(i32(v) for v in values)


def conv(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x, w, bias = (dev.operands(op, inputs) + [None])[:3]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    n, m, ho, wo = spec.shape
    geometry = dev.host_value(op, "geometry", lambda: conv_geometry(op, x.shape, w.shape))
    group = int(geometry[-1])
    mg, k = m // group, int(np.prod(w.shape[1:]))
    has_bias = i32(bias is not None)
    bias = dev.dummy if bias is None else bias
    if mg >= 16 and k >= 16:
        gsize = (round_up(ho * wo, TILE) // 4, round_up(mg, TILE) // 4, n * group)
        local = (TILE_THREADS, TILE_THREADS, 1)
        dev.launch("conv", "conv2d_f32_tiled", gsize, local, x, w, bias, y, has_bias, *geometry)
    else:
        gsize = (round_up(ho * wo, ROW_LOCAL), m, n)
        dev.launch("conv", "conv2d_f32_direct", gsize, (ROW_LOCAL, 1, 1), x, w, bias, y, has_bias, *geometry)
    return [y]


def batch_offsets(a_shape: Sequence[int], b_shape: Sequence[int], m: int, n: int, k: int) -> np.ndarray:
    """[a offset, b offset] per output batch of a broadcasting batched matmul (int32 table)."""
    a_batch, b_batch = tuple(a_shape[:-2]), tuple(b_shape[:-2])
    batch = np.broadcast_shapes(a_batch, b_batch)
    a_index = np.broadcast_to(np.arange(int(np.prod(a_batch, dtype=np.int64))).reshape(a_batch), batch)
    b_index = np.broadcast_to(np.arange(int(np.prod(b_batch, dtype=np.int64))).reshape(b_batch), batch)
    return np.stack([a_index.ravel() * m * k, b_index.ravel() * k * n], axis=1).astype(np.int32).ravel()


def _matmul_call(dev: KernelDevice, a: Buffer, b: Buffer, y: Buffer, offsets: Buffer, batch: int,
                 dims: tuple[int, int, int], strides: tuple[int, int, int, int], bias: tuple[Any, ...]) -> None:
    m, n, k = dims
    args = (a, b, y, offsets, *(i32(v) for v in (*dims, *strides)), *bias)
    if m <= 4:
        dev.launch("gemm", "matvec_f32", (round_up(n, 64), m, batch), (64, 1, 1), *args)
    else:
        gsize = (round_up(n, TILE) // 4, round_up(m, TILE) // 4, batch)
        dev.launch("gemm", "matmul_f32", gsize, (TILE_THREADS, TILE_THREADS, 1), *args)


def gemm(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    b_name = op.inputs[1]
    trans_a, trans_b = int(op.attrs.get("transA", 0)), int(op.attrs.get("transB", 0))
    ops = dev.operands(op, inputs)
    a, c = ops[0], (ops[2] if len(ops) > 2 else None)
    if b_name in op.weights and trans_b:  # store constant B as K x N once: coalesced reads
        b = dev.constant(op, "bT", lambda: np.ascontiguousarray(op.weights[b_name].T))
        trans_b = 0
    else:
        b = ops[1]
    m, n = op.output_specs[0].shape
    k = a.shape[0] if trans_a else a.shape[1]
    y = dev.empty((m, n), F32)
    offsets = dev.constant(op, "offsets", lambda: np.zeros(2, np.int32))
    a_strides = (1, m) if trans_a else (k, 1)
    b_strides = (1, k) if trans_b else (n, 1)
    if c is None:
        bias = (dev.dummy, i32(0), i32(0), i32(0))
    else:
        scm, scn = broadcast_strides(c.shape, (m, n))
        bias = (c, i32(1), i32(scm), i32(scn))
    alpha, beta = f32(op.attrs.get("alpha", 1.0)), f32(op.attrs.get("beta", 1.0))
    _matmul_call(dev, a, b, y, offsets, 1, (m, n, k), (*a_strides, *b_strides), (*bias, alpha, beta))
    return [y]


def matmul(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    a, b = dev.operands(op, inputs)
    a_shape = (1, *a.shape) if a.ndim == 1 else tuple(a.shape)
    b_shape = (*b.shape, 1) if b.ndim == 1 else tuple(b.shape)
    m, k, n = a_shape[-2], a_shape[-1], b_shape[-1]
    table = dev.constant(op, "offsets", lambda: batch_offsets(a_shape, b_shape, m, n, k))
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, F32)
    batch = table.size // 2
    no_bias = (dev.dummy, i32(0), i32(0), i32(0), f32(1.0), f32(0.0))
    _matmul_call(dev, a, b, y, table, batch, (m, n, k), (k, 1, n, 1), no_bias)
    return [y]


# --- pooling, reductions, softmax ----------------------------------------------------------------

def pool_geometry(op: Op, x_shape: Sequence[int]) -> tuple[np.int32, ...]:
    """POOL_ARGS of pool.cl without n: H W Ho Wo kh kw sh sw dh dw pt pl."""
    win = window(op.attrs, x_shape[2:])
    values = (x_shape[2], x_shape[3], *win.out_hw, *win.kernel, *win.strides, *win.dilations, win.pads[0], win.pads[1])
    return tuple(i32(v) for v in values)


def max_pool(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    geometry = dev.host_value(op, "geometry", lambda: pool_geometry(op, x.shape))
    if spec.dtype == F32:
        dev.launch_1d("pool", "maxpool_f32", y.size, x, y, *geometry, i32(y.size))
    elif dev.cpu_style:  # blocks of 16 outputs along a row per work item
        rows = int(np.prod(spec.shape[:3], dtype=np.int64))
        local = 16 if rows >= 64 else 1
        dev.launch("qcpu", "maxpool_q8_rows", (round_up(rows, local), -(-int(spec.shape[3]) // 16)), (local, 1), x, y,
                   i32(spec.dtype == "int8"), *geometry, i32(rows))
    else:
        sgn = i32(spec.dtype == "int8")
        dev.launch_1d("pool", "maxpool_q8", y.size, x, y, sgn, *geometry, i32(y.size))
    return [y]


def average_pool(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    geometry = dev.host_value(op, "geometry", lambda: pool_geometry(op, x.shape))

    def divisor() -> np.ndarray:
        win = window(op.attrs, x.shape[2:])
        return average_divisor(win, x.shape[2:], bool(op.attrs.get("count_include_pad", 0))).astype(np.float32)

    table = dev.constant(op, "divisor", divisor)
    dev.launch_1d("pool", "avgpool_f32", y.size, x, y, table, *geometry, i32(y.size))
    return [y]


def row_mean(dev: KernelDevice, x: Buffer, y: Buffer, rows: int, inner: int) -> None:
    """y[r] = mean of row r of x viewed as rows x inner."""
    if rows > 0:
        dev.launch("pool", "row_mean_f32", (ROW_LOCAL * rows, 1), (ROW_LOCAL, 1), x, y, i32(inner))


def global_average_pool(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    rows = int(x.shape[0] * x.shape[1])
    row_mean(dev, x, y, rows, x.size // max(rows, 1))
    return [y]


def _reduce_tables(op: Op) -> tuple[np.ndarray | None, int, bool]:
    shape = input_shape(op, 0)
    axes = reduce_axes([None, *(op.weights.get(t) for t in op.inputs[1:])], op.attrs, len(shape))
    strides = contiguous_strides(shape)
    kept = [i for i in range(len(shape)) if i not in axes]
    count = int(np.prod([shape[i] for i in axes], dtype=np.int64))
    trailing = axes == tuple(range(len(shape) - len(axes), len(shape)))
    kept_table = walk_table([shape[i] for i in kept], [strides[i] for i in kept])
    red_table = walk_table([shape[i] for i in axes], [strides[i] for i in axes])
    if kept_table is None or red_table is None:
        return None, count, trailing
    return np.concatenate([kept_table, red_table]), count, trailing


def reduce_mean(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    _, count, trailing = dev.host_value(op, "tables", lambda: _reduce_tables(op))
    if trailing:
        row_mean(dev, x, y, y.size, count)
    else:
        table = dev.constant(op, "walk", lambda: _reduce_tables(op)[0])
        dev.launch_1d("pool", "reduce_mean_f32", y.size, x, y, table, i32(count), i32(y.size))
    return [y]


def softmax(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    axis = int(op.attrs.get("axis", -1)) % max(x.ndim, 1)
    dim = int(x.shape[axis]) if x.ndim else 1
    inner = int(np.prod(x.shape[axis + 1 :], dtype=np.int64))
    y = dev.empty(x.shape, x.dtype)
    rows = x.size // max(dim, 1)
    dev.launch_1d("pool", "softmax_f32", rows, x, y, i32(dim), i32(inner), i32(rows))
    return [y]


# --- the table and its conditions -------------------------------------------------------------------

KERNELS: dict[str, Fn] = {
    "Relu": _unary("relu_f32"),
    "Clip": _unary("clip_f32", _clip_params),
    "Sigmoid": _unary("sigmoid_f32"),
    "HardSigmoid": _unary("hard_sigmoid_f32", lambda op: (op.attrs.get("alpha", 0.2), op.attrs.get("beta", 0.5))),
    "HardSwish": _unary("hard_swish_f32"),
    "Tanh": _unary("tanh_f32"),
    "Add": _binary("add"),
    "Sub": _binary("sub"),
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "BatchNormalization": batch_norm,
    "Conv": conv,
    "Gemm": gemm,
    "MatMul": matmul,
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "GlobalAveragePool": global_average_pool,
    "ReduceMean": reduce_mean,
    "Softmax": softmax,
}


def _float_only(op: Op) -> bool:
    return all(s is None or s.dtype == F32 for s in op.input_specs[:1]) and fits_int32(op)


def _all_float(op: Op) -> bool:
    return all(s is None or s.dtype == F32 for s in op.input_specs) and fits_int32(op)


def _constants(op: Op, first: int) -> bool:
    return all(not t or t in op.weights for t in op.inputs[first:])


CONDITIONS: dict[str, Callable[[Op], bool]] = {
    **{t: _float_only for t in ("Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")},
    "AveragePool": lambda op: _float_only(op) and len(input_shape(op, 0)) == 4,  # 2-D windows only
    **{t: _float_only for t in ("GlobalAveragePool", "Softmax")},
    "Clip": lambda op: _float_only(op) and _constants(op, 1),
    **{t: lambda op: _all_float(op) and _binary_table(op) is not None for t in ("Add", "Sub", "Mul", "Div")},
    "BatchNormalization": lambda op: _float_only(op) and _constants(op, 1),
    "Conv": lambda op: _all_float(op) and len(input_shape(op, 0)) == 4,
    "Gemm": lambda op: _all_float(op) and (input_dtype(op, 2) == "" or len(input_shape(op, 2)) <= 2),
    "MatMul": _all_float,
    "MaxPool": lambda op: input_dtype(op) in (F32, "int8", "uint8") and len(op.outputs) == 1 and fits_int32(op)
    and len(input_shape(op, 0)) == 4,
    "ReduceMean": lambda op: _float_only(op) and _reduce_tables(op)[0] is not None,
}
