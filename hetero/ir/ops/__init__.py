"""The op registry: one table from ONNX op type to shape inference, cost and numpy reference.

Each entry (an :class:`OpDef`) knows how to infer output shapes and dtypes from input specs
(and constant inputs where the shape depends on a value, as for Reshape), how many FLOPs an op
performs (a multiply-add counts as 2), and how to compute it in numpy fp32. The numpy reference
is the correctness oracle for every backend. Backends register kernels per op type elsewhere; an
op type with no kernel on a device is a capability gap the scheduler respects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetero.errors import UnsupportedOpError

Attrs = Mapping[str, Any]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Value:
    """What shape inference knows about one input: shape, dtype, and the array when constant."""

    shape: Shape
    dtype: str
    const: np.ndarray | None = None


InferFn = Callable[[Sequence[Value | None], Attrs], list[tuple[Shape, str]]]
ReferenceFn = Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]]
FlopsFn = Callable[[Sequence[Value | None], Sequence[Shape], Attrs], int]


def _numel_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    return int(sum(int(np.prod(shape)) for shape in outputs))


@dataclass(frozen=True)
class OpDef:
    """Everything hetero knows about one op type independent of any device."""

    type: str
    infer: InferFn
    reference: ReferenceFn
    flops: FlopsFn = _numel_flops
    fold_only: bool = False  # only ever evaluated on constants at import (Shape, Gather, ...)
    min_inputs: int = 1
    max_inputs: int = 1
    optional_outputs: bool = False  # infer/reference give every output; a node may use a prefix


REGISTRY: dict[str, OpDef] = {}

# numpy's own element types; bfloat16, float8, int4 and strings are refused at shape inference
DTYPES = frozenset(
    "bool int8 uint8 int16 uint16 int32 uint32 int64 uint64 float16 float32 float64".split()
)


def _checking_dtypes(op_type: str, infer: InferFn) -> InferFn:
    def checked(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        for value in inputs:
            if value is not None and value.dtype not in DTYPES:
                raise UnsupportedOpError(f"operator {op_type} on {value.dtype} tensors is not supported")
        return infer(inputs, attrs)

    return checked


def register(
    op_type: str,
    *,
    infer: InferFn,
    reference: ReferenceFn,
    flops: FlopsFn | None = None,
    fold_only: bool = False,
    inputs: tuple[int, int] = (1, 1),
    optional_outputs: bool = False,
) -> None:
    """Add an op type to the registry (each type once)."""
    if op_type in REGISTRY:
        raise ValueError(f"op type {op_type} registered twice")
    REGISTRY[op_type] = OpDef(
        type=op_type,
        infer=_checking_dtypes(op_type, infer),
        reference=reference,
        flops=flops or _numel_flops,
        fold_only=fold_only,
        min_inputs=inputs[0],
        max_inputs=inputs[1],
        optional_outputs=optional_outputs,
    )


def get(op_type: str) -> OpDef:
    """The definition of an op type, or UnsupportedOpError listing what is supported."""
    try:
        return REGISTRY[op_type]
    except KeyError:
        raise UnsupportedOpError(
            f"operator {op_type} is not supported (supported: {', '.join(sorted(supported_ops()))})"
        ) from None


def supported_ops() -> list[str]:
    """Op types a graph may contain after import (fold-only types excluded)."""
    return sorted(name for name, op in REGISTRY.items() if not op.fold_only)


# The modules below register their op types on import.
from hetero.ir.ops import elementwise, nn, pool, qlinear, quantize, tensor  # noqa: E402,F401
from hetero.ir.ops import attention, binary, indexing, losses, norm, reduce, resize, spatial, unary  # noqa: E402,F401
from hetero.ir.ops import fused, integer, qlinear_softmax  # noqa: E402,F401
