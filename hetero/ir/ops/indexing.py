"""Shape-building and indexing ops: Expand, ConstantOfShape, Range, Tile, Trilu, EyeLike,
Gather/Scatter variants, OneHot, TopK, DepthToSpace/SpaceToDepth, CastLike, Einsum.

Inputs that decide an output shape (Expand's shape, Tile's repeats, TopK's K, ...) must be
constants known at import; otherwise the op is refused as unsupported.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.binary import broadcast_shape


def const(value: object, what: str) -> np.ndarray:
    """The array of a constant input (a Value with const, or the array itself)."""
    array = getattr(value, "const", value)
    if array is None:
        raise UnsupportedOpError(f"{what} must be a constant known at import time")
    return np.asarray(array)


def _no_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return 0


def _out_elements(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return int(sum(int(np.prod(s)) for s in outputs))


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def _dims(value: object, what: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in const(value, what).reshape(-1))
    if any(d < 0 for d in dims):
        raise GraphError(f"{what} {list(dims)} has a negative dimension")
    return dims


# --- Expand, ConstantOfShape, Range, Tile, EyeLike, Trilu -----------------------------------

def _expand_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(broadcast_shape([x.shape, _dims(inputs[1], "Expand shape")]), x.dtype)]


def _expand(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    shape = broadcast_shape([ins[0].shape, _dims(ins[1], "Expand shape")])
    return [np.ascontiguousarray(np.broadcast_to(ins[0], shape))]


register("Expand", infer=_expand_infer, reference=_expand, flops=_no_flops, inputs=(2, 2))


def _fill(attrs: Attrs) -> np.ndarray:
    value = attrs.get("value")
    return np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]


register(
    "ConstantOfShape",
    infer=lambda ins, a: [(_dims(ins[0], "ConstantOfShape shape"), str(_fill(a).dtype))],
    reference=lambda ins, a: [np.full(_dims(ins[0], "ConstantOfShape shape"), _fill(a)[0], _fill(a).dtype)],
    flops=_no_flops,
)


def _range(ins: Sequence[object]) -> np.ndarray:
    start, limit, delta = (const(v, "Range input").reshape(()) for v in ins[:3])
    if delta == 0:
        raise GraphError("Range delta must not be 0")
    n = max(int(np.ceil((limit - start) / delta)), 0)
    return (start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64) * delta).astype(start.dtype)


register("Range", infer=lambda ins, a: [(_range(ins).shape, ins[0].dtype)],  # type: ignore[union-attr]
         reference=lambda ins, a: [_range(ins)], flops=_no_flops, inputs=(3, 3))


def _tile_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    reps = _dims(inputs[1], "Tile repeats")
    if len(reps) != len(x.shape):
        raise GraphError(f"Tile repeats {list(reps)} do not match rank {len(x.shape)}")
    return [(tuple(d * r for d, r in zip(x.shape, reps)), x.dtype)]


register("Tile", infer=_tile_infer, reference=lambda ins, a: [np.tile(ins[0], _dims(ins[1], "Tile repeats"))],
         flops=_no_flops, inputs=(2, 2))


def _trilu(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    k = int(const(ins[1], "Trilu k").reshape(())) if len(ins) > 1 and ins[1] is not None else 0
    x = ins[0]
    return [np.triu(x, k) if attrs.get("upper", 1) else np.tril(x, k)]


def _trilu_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if len(x.shape) < 2:
        raise GraphError("Trilu needs rank >= 2")
    if len(inputs) > 1 and inputs[1] is not None:
        const(inputs[1], "Trilu k")
    return [(x.shape, x.dtype)]


register("Trilu", infer=_trilu_infer, reference=_trilu, flops=_no_flops, inputs=(1, 2))

# ONNX TensorProto element types with a numpy equivalent, by enum value.
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def onnx_dtype(to: int, what: str) -> str:
    if int(to) not in ONNX_DTYPES:
        raise UnsupportedOpError(f"{what}: ONNX data type {to} is not supported")
    return ONNX_DTYPES[int(to)]


def _eye_dtype(x: Value | np.ndarray, attrs: Attrs) -> str:
    return onnx_dtype(attrs["dtype"], "EyeLike dtype") if "dtype" in attrs else str(x.dtype)


register(
    "EyeLike",
    infer=lambda ins, a: [(ins[0].shape, _eye_dtype(ins[0], a))],  # type: ignore[union-attr]
    reference=lambda ins, a: [np.eye(*ins[0].shape, k=int(a.get("k", 0)), dtype=_eye_dtype(ins[0], a))],
    flops=_no_flops,
)
register(
    "CastLike",
    infer=lambda ins, a: [(ins[0].shape, ins[1].dtype)],  # type: ignore[union-attr]
    reference=lambda ins, a: [ins[0].astype(ins[1].dtype)],
    flops=_no_flops,
    inputs=(2, 2),
)


# --- GatherElements, GatherND, ScatterElements, ScatterND -----------------------------------

def _indices(index: np.ndarray, dim: int) -> np.ndarray:
    index = index.astype(np.int64)
    if np.any(index < -dim) or np.any(index >= dim):
        raise GraphError(f"index out of range for a dimension of size {dim}")
    return np.where(index < 0, index + dim, index)


def _gather_elements(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, index = ins[0], ins[1]
    axis = _axis(int(attrs.get("axis", 0)), x.ndim)
    return [np.take_along_axis(x, _indices(index, x.shape[axis]), axis=axis)]


register("GatherElements", infer=lambda ins, a: [(ins[1].shape, ins[0].dtype)],  # type: ignore[union-attr]
         reference=_gather_elements, flops=_no_flops, inputs=(2, 2))


def _gather_nd_shape(data: Shape, index: Shape, batch: int) -> Shape:
    last = index[-1]
    if batch + last > len(data):
        raise GraphError(f"GatherND indices of depth {last} exceed data rank {len(data)}")
    return tuple(index[:-1]) + tuple(data[batch + last :])


def _gather_nd(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    data, index = ins[0], ins[1].astype(np.int64)
    batch = int(attrs.get("batch_dims", 0))
    out_shape = _gather_nd_shape(data.shape, index.shape, batch)
    batch_shape = data.shape[:batch]
    n_batch = int(np.prod(batch_shape))
    flat_data = data.reshape((n_batch,) + data.shape[batch:])
    flat_index = index.reshape((n_batch, -1, index.shape[-1]))
    picked = []
    for b in range(n_batch):
        rows = flat_index[b]
        dims = flat_data.shape[1 : 1 + rows.shape[1]]
        rows = np.stack([_indices(rows[:, j], d) for j, d in enumerate(dims)], axis=1) if rows.size else rows
        picked.append(flat_data[b][tuple(rows.T)] if rows.shape[1] else np.repeat(flat_data[b][None], rows.shape[0], 0))
    return [np.asarray(picked).reshape(out_shape).astype(data.dtype)]


register("GatherND", infer=lambda ins, a: [(_gather_nd_shape(ins[0].shape, ins[1].shape, int(a.get("batch_dims", 0))), ins[0].dtype)],  # type: ignore[union-attr]
         reference=_gather_nd, flops=_no_flops, inputs=(2, 2))

_REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(attrs: Attrs, what: str):
    name = attrs.get("reduction", "none")
    if name not in _REDUCTIONS:
        raise UnsupportedOpError(f"{what} attribute reduction={name!r} is not supported")
    return _REDUCTIONS[name]


def _scatter_infer(what: str):
    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        x = inputs[0]
        assert x is not None
        _reduction(attrs, what)
        return [(x.shape, x.dtype)]

    return infer


def _scatter_elements(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, index, updates = ins[0], ins[1], ins[2]
    axis = _axis(int(attrs.get("axis", 0)), x.ndim)
    index = _indices(index, x.shape[axis])
    out = x.copy()
    fn = _reduction(attrs, "ScatterElements")
    for pos in np.ndindex(*index.shape):
        target = list(pos)
        target[axis] = index[pos]
        target = tuple(target)
        out[target] = updates[pos] if fn is None else fn(out[target], updates[pos])
    return [out]


def _scatter_nd(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, index, updates = ins[0], ins[1].astype(np.int64), ins[2]
    out = x.copy()
    fn = _reduction(attrs, "ScatterND")
    depth = index.shape[-1]
    for pos in np.ndindex(*index.shape[:-1]):
        target = tuple(int(i) % d for i, d in zip(index[pos], x.shape[:depth]))
        out[target] = updates[pos] if fn is None else fn(out[target], updates[pos])
    return [out]


register("ScatterElements", infer=_scatter_infer("ScatterElements"), reference=_scatter_elements,
         flops=_no_flops, inputs=(3, 3))
register("ScatterND", infer=_scatter_infer("ScatterND"), reference=_scatter_nd, flops=_no_flops, inputs=(3, 3))


# --- OneHot, TopK ---------------------------------------------------------------------------

def _one_hot_shape(inputs: Sequence[object], attrs: Attrs) -> tuple[Shape, int, int]:
    index_shape = tuple(getattr(inputs[0], "shape"))
    depth = int(const(inputs[1], "OneHot depth").reshape(-1)[0])
    axis = _axis(int(attrs.get("axis", -1)), len(index_shape) + 1)
    shape = index_shape[:axis] + (depth,) + index_shape[axis:]
    return shape, depth, axis


def _one_hot(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    shape, depth, axis = _one_hot_shape(ins, attrs)
    index = ins[0].astype(np.int64)
    index = np.where(index < 0, index + depth, index)
    off, on = ins[2].reshape(-1)[:2]
    hot = np.expand_dims(index, axis) == np.arange(depth).reshape((-1,) + (1,) * (len(shape) - axis - 1))
    return [np.where(hot, on, off).astype(ins[2].dtype)]


register("OneHot", infer=lambda ins, a: [(_one_hot_shape(ins, a)[0], ins[2].dtype)],  # type: ignore[union-attr]
         reference=_one_hot, flops=_no_flops, inputs=(3, 3))


def _topk_k(inputs: Sequence[object]) -> int:
    return int(const(inputs[1], "TopK K").reshape(-1)[0])


def _topk_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axis = _axis(int(attrs.get("axis", -1)), len(x.shape))
    k = _topk_k(inputs)
    if not 0 <= k <= x.shape[axis]:
        raise GraphError(f"TopK K={k} exceeds dimension {x.shape[axis]}")
    shape = tuple(k if i == axis else d for i, d in enumerate(x.shape))
    return [(shape, x.dtype), (shape, "int64")]


def _topk(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axis = _axis(int(attrs.get("axis", -1)), x.ndim)
    k = _topk_k(ins)
    key = x.astype(np.float64)
    # ties go to the lower index; the sort is stable, so negate for "largest"
    order = np.argsort(-key if attrs.get("largest", 1) else key, axis=axis, kind="stable")
    index = np.take(order, range(k), axis=axis)
    return [np.take_along_axis(x, index, axis=axis), index.astype(np.int64)]


register("TopK", infer=_topk_infer, reference=_topk, flops=lambda i, o, a: int(np.prod(i[0].shape)) * 4, inputs=(2, 2))  # type: ignore[union-attr]


# --- DepthToSpace, SpaceToDepth, Einsum -----------------------------------------------------

def _depth_to_space(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y.reshape(n, c // (b * b), h * b, w * b))


def _d2s_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    b = int(attrs["blocksize"])
    if len(x.shape) != 4 or x.shape[1] % (b * b):
        raise GraphError(f"DepthToSpace needs NCHW with C divisible by {b * b}, got {list(x.shape)}")
    if attrs.get("mode", "DCR") not in ("DCR", "CRD"):
        raise UnsupportedOpError(f"DepthToSpace attribute mode={attrs['mode']!r} is not supported (DCR, CRD)")
    n, c, h, w = x.shape
    return [((n, c // (b * b), h * b, w * b), x.dtype)]


def _space_to_depth(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    b = int(attrs["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.transpose(0, 3, 5, 1, 2, 4) if attrs.get("mode", "DCR") == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return np.ascontiguousarray(y.reshape(n, c * b * b, h // b, w // b))


def _s2d_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    b = int(attrs["blocksize"])
    if len(x.shape) != 4 or x.shape[2] % b or x.shape[3] % b:
        raise GraphError(f"SpaceToDepth needs NCHW with H and W divisible by {b}, got {list(x.shape)}")
    if attrs.get("mode", "DCR") not in ("DCR", "CRD"):
        raise UnsupportedOpError(f"SpaceToDepth attribute mode={attrs['mode']!r} is not supported (DCR, CRD)")
    n, c, h, w = x.shape
    return [((n, c * b * b, h // b, w // b), x.dtype)]


register("DepthToSpace", infer=_d2s_infer, reference=lambda ins, a: [_depth_to_space(ins[0], a)], flops=_no_flops)
register("SpaceToDepth", infer=_s2d_infer, reference=lambda ins, a: [_space_to_depth(ins[0], a)], flops=_no_flops)


def _einsum(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    xs = [x for x in ins if x is not None]
    wide = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
    return [np.asarray(np.einsum(str(attrs["equation"]).replace(" ", ""), *wide)).astype(xs[0].dtype)]


def _einsum_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    present = [v for v in inputs if v is not None]
    try:
        probe = np.einsum(str(attrs["equation"]).replace(" ", ""), *[np.zeros(v.shape, np.float32) for v in present])
    except ValueError as err:
        raise GraphError(f"Einsum equation {attrs['equation']!r} does not fit the inputs: {err}") from None
    return [(tuple(np.shape(probe)), present[0].dtype)]


def _einsum_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return 2 * max(int(np.prod(v.shape)) for v in inputs if v is not None) * max(1, int(np.prod(outputs[0])))


register("Einsum", infer=_einsum_infer, reference=_einsum, flops=_einsum_flops, inputs=(1, 1 << 16))
