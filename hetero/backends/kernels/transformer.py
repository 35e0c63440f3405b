"""Transformer op kernels of the kernel backends (OpenCL and CUDA share them): kernels/transformer.cl
for the math unaries (Erf, Gelu, Exp, Log, Sqrt, Reciprocal, Neg, Abs, Sin, Cos, Softplus,
Floor, Ceil), broadcasting Pow/Mod/comparisons/logic/Where, Layer- and
InstanceNormalization, LogSoftmax, ReduceSum/ReduceMax, Trilu, CumSum and IsNaN; Expand and
Tile as strided copies (kernels/copy.cl). Add/Sub/Mul and Clip keep the float32 kernels of
kernels/ops.py and gain int32/int64 ones here (position ids in exported language models).

``CONDITIONS`` admits exactly the dtypes, ranks and attributes these kernels handle.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels import ops as float_ops
from hetero.backends.kernels.common import (
    KernelDevice,
    broadcast_strides,
    contiguous_strides,
    f32,
    fits_int32,
    i32,
    input_dtype,
    input_shape,
    walk_table,
)
from hetero.backends.kernels.tensor import copy_into
from hetero.ir.graph import Op
from hetero.ir.ops.pool import reduce_axes

Fn = Callable[[KernelDevice, Op, Sequence[Buffer]], list[Buffer]]
FILE = "transformer"
NORM_LOCAL = 64  # as NORM_LOCAL in kernels/transformer.cl
SUFFIX = {"float32": "f32", "int32": "i32", "int64": "i64", "bool": "b8"}
MOVABLE = ("float32", "int8", "uint8", "int32", "int64", "bool")


# --- unary ------------------------------------------------------------------------------------

def _unary(name: str) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        x = inputs[0]
        y = dev.empty(x.shape, op.output_specs[0].dtype)
        dev.launch_1d(FILE, name, x.size, x, y, i32(x.size))
        return [y]

    return run


def neg(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return _unary(f"neg_{SUFFIX[input_dtype(op)]}")(dev, op, inputs)


def gelu(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    tanh = op.attrs.get("approximate", "none") == "tanh"
    return _unary("gelu_tanh_f32" if tanh else "gelu_f32")(dev, op, inputs)


# --- broadcasting binaries and Where ------------------------------------------------------------

def _walk(op: Op, count: int) -> np.ndarray | None:
    out = op.output_specs[0].shape
    return walk_table(out, *(broadcast_strides(input_shape(op, i), out) for i in range(count)))


def _binary(prefix: str, float_b: bool = False) -> Fn:
    """kernels ``<prefix>_<dtype of a>``; ``prefix`` may depend on the op (Mod's fmod)."""

    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        if float_b and input_dtype(op, 1) != "float32":  # an integer exponent, constant: float32 once
            a = dev.operands(op, inputs)[0]
            b = dev.constant(op, "b:f32", lambda: np.asarray(op.weights[op.inputs[1]], np.float32))
        else:
            a, b = dev.operands(op, inputs)
        spec = op.output_specs[0]
        y = dev.empty(spec.shape, spec.dtype)
        name = prefix
        if prefix == "mod" and op.attrs.get("fmod", 0):
            name = "fmod"
        table = dev.constant(op, "walk", lambda: _walk(op, 2))
        dev.launch_1d(FILE, f"{name}_{SUFFIX[input_dtype(op, 0)]}", y.size, a, b, y, table, i32(y.size))
        return [y]

    return run


def where(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    cond, x, z = dev.operands(op, inputs)
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    table = dev.constant(op, "walk", lambda: _walk(op, 3))
    name = f"where_b{np.dtype(spec.dtype).itemsize}"
    dev.launch_1d(FILE, name, y.size, cond, x, z, y, table, i32(y.size))
    return [y]


# --- normalisations, LogSoftmax, reductions --------------------------------------------------------

def _norm_rows(dev: KernelDevice, op: Op, x: Buffer, scale: Buffer, bias: Buffer | None, rows: int, n: int,
               channels: int, per_row: bool) -> list[Buffer]:
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    stats = [dev.empty(s.shape, s.dtype) for s in op.output_specs[1:]]
    mean, inv = (stats + [dev.dummy, dev.dummy])[:2]
    eps = f32(op.attrs.get("epsilon", 1e-5))
    if rows > 0 and n > 0:
        flags = (i32(n), i32(channels), i32(per_row), i32(bias is not None), i32(bool(stats)), eps)
        dev.launch(FILE, "norm_rows_f32", (NORM_LOCAL * rows,), (NORM_LOCAL,), x, scale,
                   dev.dummy if bias is None else bias, y, mean, inv, *flags)
    return [y, *stats]


def layer_norm(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    args = dev.operands(op, inputs) + [None]
    x = args[0]
    axis = int(op.attrs.get("axis", -1)) % x.ndim
    norm_shape = tuple(x.shape[axis:])
    rows, n = math.prod(x.shape[:axis]), math.prod(norm_shape)

    def full(index: int) -> Buffer | None:
        spec = op.input_specs[index] if index < len(op.input_specs) else None
        if spec is None:
            return None
        if spec.shape == norm_shape:
            return args[index]
        # a scale or bias that broadcasts over the normalised dims: expanded once (constants only)
        value = np.broadcast_to(op.weights[op.inputs[index]], norm_shape)
        return dev.constant(op, f"full{index}", lambda: np.ascontiguousarray(value, np.float32))

    return _norm_rows(dev, op, x, full(1), full(2), rows, n, 1, per_row=False)


def instance_norm(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x, scale, bias = dev.operands(op, inputs)
    rows = int(x.shape[0] * x.shape[1])
    return _norm_rows(dev, op, x, scale, bias, rows, x.size // max(rows, 1), int(x.shape[1]), per_row=True)


def log_softmax(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    axis = int(op.attrs.get("axis", -1)) % max(x.ndim, 1)
    dim = int(x.shape[axis]) if x.ndim else 1
    inner = math.prod(x.shape[axis + 1 :])
    y = dev.empty(x.shape, x.dtype)
    rows = x.size // max(dim, 1)
    dev.launch_1d(FILE, "log_softmax_f32", rows, x, y, i32(dim), i32(inner), i32(rows))
    return [y]


def _reduce_table(op: Op) -> tuple[np.ndarray | None, int, bool]:
    """The kept/reduced walk tables, the count of reduced elements, and whether no axis is reduced."""
    shape = input_shape(op, 0)
    axes = reduce_axes([None, *(op.weights.get(t) for t in op.inputs[1:])], op.attrs, len(shape))
    strides = contiguous_strides(shape)
    kept = [i for i in range(len(shape)) if i not in axes]
    count = math.prod(shape[i] for i in axes)
    kept_table = walk_table([shape[i] for i in kept], [strides[i] for i in kept])
    red_table = walk_table([shape[i] for i in axes] or [1], [strides[i] for i in axes] or [0])
    if kept_table is None or red_table is None:
        return None, count, not axes
    return np.concatenate([kept_table, red_table]), count, not axes


def _reduce(name: str) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        x = inputs[0]
        spec = op.output_specs[0]
        table, count, none_reduced = dev.host_value(op, "tables", lambda: _reduce_table(op))
        if none_reduced:  # noop_with_empty_axes and no axes
            return [x]
        y = dev.empty(spec.shape, spec.dtype)
        walk = dev.constant(op, "walk", lambda: table)
        dev.launch_1d(FILE, name, y.size, x, y, walk, i32(count), i32(y.size))
        return [y]

    return run


# --- Trilu, Expand, Tile -------------------------------------------------------------------------

def trilu(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    y = dev.empty(x.shape, x.dtype)
    k_name = op.inputs[1] if len(op.inputs) > 1 else ""
    k = int(np.asarray(op.weights[k_name]).reshape(())) if k_name else 0
    upper = i32(bool(op.attrs.get("upper", 1)))
    name = f"trilu_b{np.dtype(x.dtype).itemsize}"
    dev.launch_1d(FILE, name, x.size, x, y, i32(x.shape[-2]), i32(x.shape[-1]), i32(k), upper, i32(x.size))
    return [y]


def _expand_table(op: Op) -> np.ndarray | None:
    out = op.output_specs[0].shape
    return walk_table(out, broadcast_strides(input_shape(op, 0), out), contiguous_strides(out), extra=(0, 0))


def _tile_table(op: Op) -> np.ndarray | None:
    """Output dim d (repeats r, input size s) as two dims (r, s): the copy reads (0, stride) of
    the input and writes (s * stride, stride) of the output."""
    shape = input_shape(op, 0)
    repeats = [int(r) for r in np.asarray(op.weights[op.inputs[1]]).reshape(-1)]
    src, dst = contiguous_strides(shape), contiguous_strides(op.output_specs[0].shape)
    dims, reads, writes = [], [], []
    for s, r, a, b in zip(shape, repeats, src, dst):
        dims += [r, s]
        reads += [0, a]
        writes += [s * b, b]
    return walk_table(dims, reads, writes, extra=(0, 0))


def _copy(make: Callable[[Op], np.ndarray | None]) -> Fn:
    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        x = inputs[0]
        spec = op.output_specs[0]
        y = dev.empty(spec.shape, spec.dtype)
        copy_into(dev, x, y, dev.constant(op, "walk", lambda: make(op)), y.size)
        return [y]

    return run


def cumsum(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    axis = int(np.asarray(op.weights[op.inputs[1]]).reshape(-1)[0]) % x.ndim
    dim, inner = int(x.shape[axis]), math.prod(x.shape[axis + 1 :])
    y = dev.empty(x.shape, x.dtype)
    lines = x.size // max(dim, 1)
    flags = (i32(dim), i32(inner), i32(bool(op.attrs.get("exclusive", 0))), i32(bool(op.attrs.get("reverse", 0))))
    dev.launch_1d(FILE, f"cumsum_{SUFFIX[str(x.dtype)]}", lines, x, y, *flags, i32(lines))
    return [y]


def _clip_bounds_int(op: Op) -> tuple[int, int]:
    """Clip's integer bounds from its constant inputs (or the old attributes), clamped to the type."""
    info = np.iinfo(input_dtype(op))
    bounds = [info.min, info.max]
    for slot, (key, limit) in enumerate((("min", info.min), ("max", info.max))):
        name = op.inputs[slot + 1] if len(op.inputs) > slot + 1 else ""
        value = op.weights[name] if name else op.attrs.get(key)
        if value is not None:
            bounds[slot] = int(min(max(int(np.asarray(value).reshape(())), info.min), info.max))
    return bounds[0], bounds[1]


def clip_int(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    y = dev.empty(x.shape, x.dtype)
    lo, hi = (np.dtype(x.dtype).type(v) for v in dev.host_value(op, "bounds", lambda: _clip_bounds_int(op)))
    dev.launch_1d(FILE, f"clip_{SUFFIX[str(x.dtype)]}", x.size, x, y, lo, hi, i32(x.size))
    return [y]


INTEGER = ("int32", "int64")


def _or_integer(op_type: str, integer: Fn) -> Fn:
    """kernels/ops.py's float kernel for op_type, or ``integer`` for int32/int64 inputs."""

    def run(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        kernel = integer if input_dtype(op) in INTEGER else float_ops.KERNELS[op_type]
        return kernel(dev, op, inputs)

    return run


KERNELS: dict[str, Fn] = {
    **{name: _or_integer(name, _binary(name.lower())) for name in ("Add", "Sub", "Mul")},
    "Clip": _or_integer("Clip", clip_int),
    "CumSum": cumsum,
    "IsNaN": _unary("isnan_f32"),
    "Erf": _unary("erf_f32"),
    "Gelu": gelu,
    "Exp": _unary("exp_f32"),
    "Log": _unary("log_f32"),
    "Sqrt": _unary("sqrt_f32"),
    "Reciprocal": _unary("reciprocal_f32"),
    **{name: _unary(f"{name.lower()}_f32") for name in ("Abs", "Sin", "Cos", "Softplus", "Floor", "Ceil")},
    "Neg": neg,
    "Not": _unary("not_b8"),
    "Pow": _binary("pow", float_b=True),
    "Mod": _binary("mod"),
    "Equal": _binary("equal"),
    "Less": _binary("less"),
    "Greater": _binary("greater"),
    "LessOrEqual": _binary("less_equal"),
    "GreaterOrEqual": _binary("greater_equal"),
    "And": _binary("and"),
    "Or": _binary("or"),
    "Xor": _binary("xor"),
    "Where": where,
    "LayerNormalization": layer_norm,
    "InstanceNormalization": instance_norm,
    "LogSoftmax": log_softmax,
    "ReduceSum": _reduce("reduce_sum_f32"),
    "ReduceMax": _reduce("reduce_max_f32"),
    "Trilu": trilu,
    "Expand": _copy(_expand_table),
    "Tile": _copy(_tile_table),
}


# --- conditions ------------------------------------------------------------------------------------

def _dtypes(index: int, *dtypes: str) -> Callable[[Op], bool]:
    return lambda op: input_dtype(op, index) in dtypes


def _all(*predicates: Callable[[Op], bool]) -> Callable[[Op], bool]:
    return lambda op: fits_int32(op) and all(p(op) for p in predicates)


def _same(first: int, second: int) -> Callable[[Op], bool]:
    return lambda op: input_dtype(op, first) == input_dtype(op, second) != ""


def _constant(op: Op, index: int) -> bool:
    return index < len(op.inputs) and op.inputs[index] in op.weights


def _absent_or_constant(op: Op, index: int) -> bool:
    return index >= len(op.inputs) or not op.inputs[index] or op.inputs[index] in op.weights


def _walks(count: int) -> Callable[[Op], bool]:
    return lambda op: _walk(op, count) is not None


def _layer_norm_ok(op: Op) -> bool:
    if input_dtype(op) != "float32" or not input_shape(op, 0) or int(op.attrs.get("stash_type", 1)) != 1:
        return False
    shape = input_shape(op, 0)
    norm_shape = shape[int(op.attrs.get("axis", -1)) % len(shape):]
    for index in (1, 2):
        spec = op.input_specs[index] if index < len(op.input_specs) else None
        if spec is None:
            continue
        if spec.dtype != "float32" or len(spec.shape) > len(norm_shape):
            return False
        try:
            fits = tuple(np.broadcast_shapes(spec.shape, norm_shape)) == norm_shape
        except ValueError:
            return False
        if not fits or (spec.shape != norm_shape and not _constant(op, index)):
            return False
    return all(op.outputs)


def _instance_norm_ok(op: Op) -> bool:
    shape = input_shape(op, 0)
    return (input_dtype(op) == "float32" and len(shape) >= 2
            and all(input_dtype(op, i) == "float32" and input_shape(op, i) == (shape[1],) for i in (1, 2)))


def _reduce_ok(op: Op) -> bool:
    return input_dtype(op) == "float32" and _absent_or_constant(op, 1) and _reduce_table(op)[0] is not None


FLOAT = _dtypes(0, "float32")
COMPARISON = _all(_dtypes(0, "float32", "int32", "int64"), _same(0, 1), _walks(2))
LOGIC = _all(_dtypes(0, "bool"), _dtypes(1, "bool"), _walks(2))
def _or_integer_ok(op_type: str, integer_ok: Callable[[Op], bool]) -> Callable[[Op], bool]:
    def ok(op: Op) -> bool:
        return integer_ok(op) if input_dtype(op) in INTEGER else float_ops.CONDITIONS[op_type](op)

    return ok


def _clip_int_ok(op: Op) -> bool:
    return all(_absent_or_constant(op, i) for i in (1, 2)) and all(
        input_dtype(op, i) in ("", input_dtype(op)) for i in (1, 2))


def _cumsum_ok(op: Op) -> bool:
    return input_dtype(op) in ("float32", *INTEGER) and _constant(op, 1) and len(input_shape(op, 0)) >= 1


CONDITIONS: dict[str, Callable[[Op], bool]] = {
    **{name: _or_integer_ok(name, _all(_same(0, 1), _walks(2))) for name in ("Add", "Sub", "Mul")},
    "Clip": _or_integer_ok("Clip", _all(_clip_int_ok)),
    "CumSum": _all(_cumsum_ok),
    "IsNaN": _all(FLOAT),
    **{name: _all(FLOAT) for name in ("Erf", "Exp", "Log", "Sqrt", "Reciprocal", "LogSoftmax", "Abs", "Sin", "Cos",
                                      "Softplus", "Floor", "Ceil")},
    "Neg": _all(_dtypes(0, "float32", "int32", "int64")),
    "Gelu": _all(FLOAT, lambda op: op.attrs.get("approximate", "none") in ("none", "tanh")),
    "Not": _all(_dtypes(0, "bool")),
    "Pow": _all(FLOAT, _walks(2), lambda op: input_dtype(op, 1) == "float32"
                or (input_dtype(op, 1) in ("int32", "int64") and _constant(op, 1))),
    "Mod": _all(_dtypes(0, "float32", "int32", "int64"), _same(0, 1), _walks(2)),
    **{name: COMPARISON for name in ("Less", "Greater", "LessOrEqual", "GreaterOrEqual")},
    "Equal": _all(_dtypes(0, "float32", "int32", "int64", "bool"), _same(0, 1), _walks(2)),
    **{name: LOGIC for name in ("And", "Or", "Xor")},
    "Where": _all(_dtypes(0, "bool"), _dtypes(1, *MOVABLE), _same(1, 2), _walks(3)),
    "LayerNormalization": _all(_layer_norm_ok),
    "InstanceNormalization": _all(_instance_norm_ok),
    "ReduceSum": _all(_reduce_ok),
    "ReduceMax": _all(_reduce_ok),
    "Trilu": _all(_dtypes(0, *MOVABLE), lambda op: len(input_shape(op, 0)) >= 2, lambda op: _absent_or_constant(op, 1)),
    "Expand": _all(_dtypes(0, *MOVABLE), lambda op: _expand_table(op) is not None),
    "Tile": _all(_dtypes(0, *MOVABLE), lambda op: _constant(op, 1) and _tile_table(op) is not None),
}
