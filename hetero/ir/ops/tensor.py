"""Data-movement ops (Flatten, Reshape, Transpose, Concat, Split, Slice, ...) and the
shape-only ops (Shape, Gather, Unsqueeze, Squeeze, Cast) that import folds on constants."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register


def _no_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return 0


def _const(value: Value | np.ndarray | None, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if value is None or value.const is None:
        raise UnsupportedOpError(f"{what} must be a constant known at import time")
    return value.const


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise GraphError(f"axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


# --- Flatten, Reshape, Transpose, Squeeze, Unsqueeze ---------------------------------------

def _flatten_shape(shape: Shape, attrs: Attrs) -> Shape:
    axis = int(attrs.get("axis", 1))
    if not -len(shape) <= axis <= len(shape):
        raise GraphError(f"Flatten axis {axis} is out of range for rank {len(shape)}")
    axis = axis + len(shape) if axis < 0 else axis
    return (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))


def reshape_target(in_shape: Shape, spec: np.ndarray, allow_zero: bool) -> Shape:
    """Resolve a Reshape shape spec (0 copies a dim unless allowzero, -1 is inferred)."""
    dims = [int(d) for d in np.asarray(spec).reshape(-1)]
    out = [in_shape[i] if (d == 0 and not allow_zero) else d for i, d in enumerate(dims)]
    total = int(np.prod(in_shape))
    if out.count(-1) > 1:
        raise GraphError(f"Reshape to {dims} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise GraphError(f"cannot reshape {list(in_shape)} to {dims}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise GraphError(f"cannot reshape {list(in_shape)} to {dims}")
    return tuple(out)


def _unsqueeze_shape(shape: Shape, axes: Sequence[int]) -> Shape:
    rank = len(shape) + len(axes)
    positions = sorted(_axis(int(a), rank) for a in axes)
    out = list(shape)
    for p in positions:
        out.insert(p, 1)
    return tuple(out)


def _squeeze_shape(shape: Shape, axes: Sequence[int] | None) -> Shape:
    if axes is None:
        return tuple(d for d in shape if d != 1)
    drop = {_axis(int(a), len(shape)) for a in axes}
    for a in drop:
        if shape[a] != 1:
            raise GraphError(f"Squeeze axis {a} has size {shape[a]}, not 1")
    return tuple(d for i, d in enumerate(shape) if i not in drop)


def _axes_of(inputs: Sequence[object], attrs: Attrs, what: str) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in _const(inputs[1], f"{what} axes").reshape(-1)]  # type: ignore[arg-type]
    axes = attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _shape_op(fn):
    """An op whose output is its input reshaped: infer and reference from one shape function."""

    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        x = inputs[0]
        assert x is not None
        return [(fn(x.shape, inputs, attrs), x.dtype)]

    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = ins[0]
        return [x.reshape(fn(x.shape, ins, attrs)).copy()]

    return infer, reference


_SHAPE_FNS = {
    "Flatten": (lambda s, i, a: _flatten_shape(s, a), (1, 1)),
    "Reshape": (
        lambda s, i, a: reshape_target(s, _const(i[1], "Reshape shape"), bool(a.get("allowzero", 0))),
        (2, 2),
    ),
    "Unsqueeze": (lambda s, i, a: _unsqueeze_shape(s, _axes_of(i, a, "Unsqueeze") or []), (1, 2)),
    "Squeeze": (lambda s, i, a: _squeeze_shape(s, _axes_of(i, a, "Squeeze")), (1, 2)),
}
for _name, (_fn, _arity) in _SHAPE_FNS.items():
    _infer, _ref = _shape_op(_fn)
    register(_name, infer=_infer, reference=_ref, flops=_no_flops, inputs=_arity)


def _perm(rank: int, attrs: Attrs) -> tuple[int, ...]:
    perm = attrs.get("perm")
    return tuple(reversed(range(rank))) if perm is None else tuple(int(p) for p in perm)


def _transpose_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    perm = _perm(len(x.shape), attrs)
    if sorted(perm) != list(range(len(x.shape))):
        raise GraphError(f"Transpose perm {list(perm)} is not a permutation of rank {len(x.shape)}")
    return [(tuple(x.shape[p] for p in perm), x.dtype)]


register(
    "Transpose",
    infer=_transpose_infer,
    reference=lambda ins, a: [np.ascontiguousarray(ins[0].transpose(_perm(ins[0].ndim, a)))],
    flops=_no_flops,
)


# --- Concat, Split, Slice ------------------------------------------------------------------

def _concat_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    present = [v for v in inputs if v is not None]
    rank = len(present[0].shape)
    axis = _axis(int(attrs["axis"]), rank)
    for v in present[1:]:
        if len(v.shape) != rank or any(
            v.shape[i] != present[0].shape[i] for i in range(rank) if i != axis
        ):
            raise GraphError(
                f"Concat inputs {[list(p.shape) for p in present]} differ outside axis {axis}"
            )
    shape = list(present[0].shape)
    shape[axis] = sum(v.shape[axis] for v in present)
    return [(tuple(shape), present[0].dtype)]


register(
    "Concat",
    infer=_concat_infer,
    reference=lambda ins, a: [np.concatenate([x for x in ins if x is not None], axis=int(a["axis"]))],
    flops=_no_flops,
    inputs=(1, 1 << 16),
)


def split_sizes(inputs: Sequence[object], attrs: Attrs, dim: int) -> list[int]:
    """Split's output sizes from the input, the attribute, or the import-time normalisation."""
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = [int(s) for s in _const(inputs[1], "Split sizes").reshape(-1)]  # type: ignore[arg-type]
    elif attrs.get("split") is not None:
        sizes = [int(s) for s in attrs["split"]]
    else:
        raise UnsupportedOpError("Split without explicit sizes was not normalised at import")
    if sum(sizes) != dim:
        raise GraphError(f"Split sizes {sizes} do not add up to dimension {dim}")
    return sizes


def _split_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    axis = _axis(int(attrs.get("axis", 0)), len(x.shape))
    out = []
    for size in split_sizes(inputs, attrs, x.shape[axis]):
        shape = list(x.shape)
        shape[axis] = size
        out.append((tuple(shape), x.dtype))
    return out


def _split(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    axis = int(attrs.get("axis", 0)) % x.ndim
    bounds = np.cumsum(split_sizes(ins, attrs, x.shape[axis]))[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


register("Split", infer=_split_infer, reference=_split, flops=_no_flops, inputs=(1, 2))


def slice_index(shape: Shape, inputs: Sequence[object]) -> tuple[slice, ...]:
    """The numpy index a Slice op takes, with ONNX's clamping made explicit.

    Python slices differ from ONNX in one case: a negative step with start below -dim,
    which ONNX clamps to 0 (one element) and Python to "before 0" (empty).
    """
    starts = _const(inputs[1], "Slice starts").reshape(-1)  # type: ignore[arg-type]
    ends = _const(inputs[2], "Slice ends").reshape(-1)  # type: ignore[arg-type]
    rank = len(shape)
    axes = (
        _const(inputs[3], "Slice axes").reshape(-1)  # type: ignore[arg-type]
        if len(inputs) > 3 and inputs[3] is not None
        else np.arange(len(starts))
    )
    steps = (
        _const(inputs[4], "Slice steps").reshape(-1)  # type: ignore[arg-type]
        if len(inputs) > 4 and inputs[4] is not None
        else np.ones(len(starts), np.int64)
    )
    index = [slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0:
            raise GraphError("Slice step must not be 0")
        axis = _axis(int(axis), rank)
        dim, start, end, step = shape[axis], int(start), int(end), int(step)
        start, end = (start + dim if start < 0 else start), (end + dim if end < 0 else end)
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return tuple(index)


def _slice_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    index = slice_index(x.shape, inputs)
    shape = tuple(len(range(*s.indices(d))) for s, d in zip(index, x.shape))
    return [(shape, x.dtype)]


register(
    "Slice",
    infer=_slice_infer,
    reference=lambda ins, a: [np.ascontiguousarray(ins[0][slice_index(ins[0].shape, ins)])],
    flops=_no_flops,
    inputs=(3, 5),
)


# --- shape-only ops, folded at import when their inputs are constant -------------------------

def _shape_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    n = len(range(*slice(start, None if end is None else int(end)).indices(len(x.shape))))
    return [((n,), "int64")]


def _shape(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    dims = ins[0].shape[start : None if end is None else int(end)]
    return [np.asarray(dims, np.int64)]


register("Shape", infer=_shape_infer, reference=_shape, flops=_no_flops, fold_only=True)


def _gather_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    data, indices = inputs[0], inputs[1]
    assert data is not None and indices is not None
    axis = _axis(int(attrs.get("axis", 0)), len(data.shape))
    shape = data.shape[:axis] + indices.shape + data.shape[axis + 1 :]
    return [(tuple(shape), data.dtype)]


register(
    "Gather",
    infer=_gather_infer,
    reference=lambda ins, a: [np.take(ins[0], ins[1].astype(np.int64), axis=int(a.get("axis", 0)))],
    flops=_no_flops,
    inputs=(2, 2),
)

# ONNX TensorProto data types hetero can cast to, by their enum value.
CAST_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def _cast_dtype(attrs: Attrs) -> str:
    to = int(attrs["to"])
    if to not in CAST_DTYPES:
        raise UnsupportedOpError(f"Cast to ONNX data type {to} is not supported")
    return CAST_DTYPES[to]


register(
    "Cast",
    infer=lambda ins, a: [(ins[0].shape, _cast_dtype(a))],  # type: ignore[union-attr]
    reference=lambda ins, a: [ins[0].astype(_cast_dtype(a))],
    flops=_no_flops,
)
register(
    "Size",
    infer=lambda ins, a: [((), "int64")],
    reference=lambda ins, a: [np.asarray(ins[0].size, np.int64)],
    flops=_no_flops,
    fold_only=True,
)
