"""Data-movement op kernels of the kernel backends: Transpose, Concat, Split and Slice through
one strided copy, Gather, Cast, and the reshapes that only reinterpret a buffer.

Copies move elements by size (1, 4 or 8 bytes), so every kernel here serves every dtype.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer
from hetero.backends.kernels.common import (
    KernelDevice,
    contiguous_strides,
    fits_int32,
    i32,
    input_dtype,
    input_shape,
    walk_table,
)
from hetero.ir.graph import Op
from hetero.ir.ops.tensor import slice_index

Fn = Callable[[KernelDevice, Op, Sequence[Buffer]], list[Buffer]]


def copy_into(dev: KernelDevice, src: Buffer, dst: Buffer, table: Buffer, n: int) -> None:
    """Strided copy of n elements by a walk table [rank, shape, src strides, dst strides, offsets]."""
    dev.launch_1d("copy", f"copy_b{np.dtype(src.dtype).itemsize}", n, src, dst, table, i32(n))


def _copy_table(shape: Sequence[int], src: Sequence[int], dst: Sequence[int], offsets: tuple[int, int]) -> np.ndarray:
    table = walk_table(shape, src, dst, extra=offsets)
    assert table is not None, "supports() admits only ops whose copies fit MAX_RANK"
    return table


def _transpose_table(op: Op) -> np.ndarray | None:
    shape = input_shape(op, 0)
    perm = op.attrs.get("perm") or tuple(reversed(range(len(shape))))
    out = op.output_specs[0].shape
    strides = contiguous_strides(shape)
    return walk_table(out, [strides[p] for p in perm], contiguous_strides(out), extra=(0, 0))


def transpose(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    copy_into(dev, x, y, dev.constant(op, "walk", lambda: _transpose_table(op)), y.size)
    return [y]


def concat_tables(op: Op, parts: Sequence[tuple[int, ...]], axis: int) -> list[np.ndarray | None]:
    """One walk table per input of a concatenation along ``axis`` into the op's output."""
    out = op.output_specs[0].shape
    out_strides = contiguous_strides(out)
    tables, start = [], 0
    for shape in parts:
        tables.append(walk_table(shape, contiguous_strides(shape), out_strides, extra=(0, start * out_strides[axis])))
        start += shape[axis]
    return tables


def concat(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    parts = [p for p in dev.operands(op, inputs) if p is not None]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    axis = int(op.attrs["axis"]) % len(spec.shape)
    tables = dev.host_value(op, "tables", lambda: concat_tables(op, [tuple(p.shape) for p in parts], axis))
    for index, (part, table) in enumerate(zip(parts, tables)):
        copy_into(dev, part, y, dev.constant(op, f"walk{index}", lambda t=table: t), part.size)
    return [y]


def split(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    axis = int(op.attrs.get("axis", 0)) % x.ndim
    strides = contiguous_strides(x.shape)
    outputs, start = [], 0
    for index, spec in enumerate(op.output_specs):
        y = dev.empty(spec.shape, spec.dtype)
        offset = start * strides[axis]
        shape = spec.shape
        table = dev.constant(
            op, f"walk{index}", lambda s=shape, o=offset: _copy_table(s, strides, contiguous_strides(s), (o, 0))
        )
        copy_into(dev, x, y, table, y.size)
        outputs.append(y)
        start += spec.shape[axis]
    return outputs


def _slice_table(op: Op) -> np.ndarray | None:
    shape = input_shape(op, 0)
    values = [None if not t else op.weights.get(t) for t in op.inputs]
    index = slice_index(shape, values)
    strides = contiguous_strides(shape)
    offset, walk = 0, []
    for sl, dim, stride in zip(index, shape, strides):
        start, _, step = sl.indices(dim)
        offset += start * stride
        walk.append(step * stride)
    out = op.output_specs[0].shape
    return walk_table(out, walk, contiguous_strides(out), extra=(offset, 0))


def slice_(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    copy_into(dev, x, y, dev.constant(op, "walk", lambda: _slice_table(op)), y.size)
    return [y]


def gather(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    data, idx = dev.operands(op, inputs)
    spec = op.output_specs[0]
    y = dev.empty(spec.shape, spec.dtype)
    axis = int(op.attrs.get("axis", 0)) % data.ndim
    inner = int(np.prod(data.shape[axis + 1 :], dtype=np.int64))
    name = f"gather_b{np.dtype(data.dtype).itemsize}_i{np.dtype(idx.dtype).itemsize * 8}"
    args = (data, idx, y, i32(inner), i32(data.shape[axis]), i32(max(idx.size, 1)), i32(y.size))
    dev.launch_1d("copy", name, y.size, *args)
    return [y]


CAST_CODES = {"float32": "f32", "uint8": "u8", "int8": "i8", "int32": "i32", "int64": "i64", "bool": "b8"}


def cast(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    x = inputs[0]
    spec = op.output_specs[0]
    if spec.dtype == str(x.dtype):
        return [x]
    y = dev.empty(spec.shape, spec.dtype)
    name = f"cast_{CAST_CODES[str(x.dtype)]}_{CAST_CODES[spec.dtype]}"
    dev.launch_1d("copy", name, y.size, x, y, i32(y.size))
    return [y]


def reinterpret(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return [dev.view(inputs[0], op.output_specs[0].shape)]


def identity(dev: KernelDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return [inputs[0]]


KERNELS: dict[str, Fn] = {
    "Transpose": transpose,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Gather": gather,
    "Cast": cast,
    "Flatten": reinterpret,
    "Reshape": reinterpret,
    "Squeeze": reinterpret,
    "Unsqueeze": reinterpret,
    "Identity": identity,
}


def _movable(op: Op) -> bool:
    return np.dtype(input_dtype(op)).itemsize in (1, 4, 8) and fits_int32(op)


def _concat_ok(op: Op) -> bool:
    axis = int(op.attrs["axis"]) % len(op.output_specs[0].shape)
    parts = [s.shape for s in op.input_specs if s is not None]
    return all(t is not None for t in concat_tables(op, parts, axis))


CONDITIONS: dict[str, Callable[[Op], bool]] = {
    "Transpose": lambda op: _movable(op) and _transpose_table(op) is not None,
    "Concat": lambda op: _movable(op) and _concat_ok(op),
    "Split": lambda op: _movable(op) and len(input_shape(op, 0)) <= 6,
    "Slice": lambda op: _movable(op) and _slice_table(op) is not None,
    "Gather": lambda op: _movable(op) and input_dtype(op, 1) in ("int32", "int64"),
    "Cast": lambda op: input_dtype(op) in CAST_CODES and op.output_specs[0].dtype in CAST_CODES and fits_int32(op),
}
