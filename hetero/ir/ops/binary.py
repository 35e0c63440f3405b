"""Broadcasting ops beyond Add/Sub/Mul/Div: Pow, Mod, comparisons, logic, bitwise, PRelu,
the variadic Min/Max/Sum/Mean, and Where."""

from __future__ import annotations

from functools import reduce
from typing import Callable, Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register


def broadcast_shape(shapes: Sequence[Shape]) -> Shape:
    """numpy/ONNX multidirectional broadcasting, or GraphError naming the shapes."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise GraphError(f"shapes {[list(s) for s in shapes]} do not broadcast") from None


def _infer(out_dtype: str | None = None, same_types: bool = True):
    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        present = [v for v in inputs if v is not None]
        if same_types and len({v.dtype for v in present}) > 1:
            raise GraphError(f"input types {[v.dtype for v in present]} differ")
        return [(broadcast_shape([v.shape for v in present]), out_dtype or present[0].dtype)]

    return infer


def _flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    n = max(1, sum(v is not None for v in inputs) - 1)
    return n * int(sum(int(np.prod(s)) for s in outputs))


def binary(name: str, fn: Callable[[np.ndarray, np.ndarray, Attrs], np.ndarray], out_dtype: str | None = None,
           same_types: bool = True) -> None:
    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        a, b = ins[0], ins[1]
        return [np.asarray(fn(a, b, attrs)).astype(out_dtype or a.dtype, copy=False)]

    register(name, infer=_infer(out_dtype, same_types), reference=reference, flops=_flops, inputs=(2, 2))


def _pow(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    if a.dtype == np.float32 and b.size == 1 and float(b.reshape(())) == 3.0:
        return (a * a).astype(np.float32) * a  # onnxruntime's Pow by a scalar 3: x * x * x in float32
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.power(a.astype(np.float64), b.astype(np.float64))
    if np.any(b < 0):
        raise UnsupportedOpError("Pow of integers with a negative exponent is not supported")
    return np.power(a.astype(np.int64), b.astype(np.int64))


def _mod(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    if attrs.get("fmod", 0):
        return np.fmod(a, b)
    return np.mod(a, b)  # the sign of the divisor, as Python's %


def _bitshift(a: np.ndarray, b: np.ndarray, attrs: Attrs) -> np.ndarray:
    direction = attrs.get("direction")
    if direction == "LEFT":
        return np.left_shift(a, b)
    if direction == "RIGHT":
        return np.right_shift(a, b)
    raise UnsupportedOpError(f"BitShift attribute direction={direction!r} is not supported (LEFT, RIGHT)")


register("Pow", infer=_infer(same_types=False), flops=_flops, inputs=(2, 2),
         reference=lambda ins, a: [np.asarray(_pow(ins[0], ins[1], a)).astype(ins[0].dtype)])
register("Mod", infer=_infer(), flops=_flops, inputs=(2, 2),
         reference=lambda ins, a: [np.asarray(_mod(ins[0], ins[1], a)).astype(ins[0].dtype)])
binary("BitShift", _bitshift)
for _name, _fn in (
    ("Equal", np.equal), ("Less", np.less), ("Greater", np.greater),
    ("LessOrEqual", np.less_equal), ("GreaterOrEqual", np.greater_equal),
    ("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor),
):
    binary(_name, lambda a, b, attrs, fn=_fn: fn(a, b), out_dtype="bool")
for _name, _fn in (("BitwiseAnd", np.bitwise_and), ("BitwiseOr", np.bitwise_or), ("BitwiseXor", np.bitwise_xor)):
    binary(_name, lambda a, b, attrs, fn=_fn: fn(a, b))
binary("PRelu", lambda x, s, attrs: np.where(x < 0, x * s, x))


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool = False):
    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        xs = [x for x in ins if x is not None]
        wide = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
        out = reduce(fn, wide)
        if mean:
            out = out / len(xs)
        shape = broadcast_shape([x.shape for x in xs])
        return [np.broadcast_to(np.asarray(out), shape).astype(xs[0].dtype)]

    return reference


for _name, _fn in (("Max", np.maximum), ("Min", np.minimum), ("Sum", np.add)):
    register(_name, infer=_infer(), reference=_variadic(_fn), flops=_flops, inputs=(1, 1 << 16))
register("Mean", infer=_infer(), reference=_variadic(np.add, mean=True), flops=_flops, inputs=(1, 1 << 16))


def _where_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    cond, x, y = inputs
    assert cond is not None and x is not None and y is not None
    if x.dtype != y.dtype:
        raise GraphError(f"Where branches are {x.dtype} and {y.dtype}")
    return [(broadcast_shape([cond.shape, x.shape, y.shape]), x.dtype)]


register("Where", infer=_where_infer, inputs=(3, 3),
         reference=lambda ins, a: [np.where(ins[0].astype(bool), ins[1], ins[2]).astype(ins[1].dtype)])


def _swiglu_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if a.shape != b.shape or a.dtype != b.dtype:
        raise GraphError(f"SwiGLU gate {list(a.shape)} {a.dtype} and value {list(b.shape)} {b.dtype} must match "
                         "(SwiGLU does not broadcast)")
    if a.dtype not in ("float16", "float32", "float64"):
        raise UnsupportedOpError(f"SwiGLU on {a.dtype} tensors is not supported")
    return [(a.shape, a.dtype)]


def _swiglu(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    """Y = A * sigmoid(alpha * A) * B (opset 28), computed in float64."""
    a, b = ins[0].astype(np.float64), ins[1].astype(np.float64)
    alpha = float(attrs.get("alpha", 1.0))
    return [(a / (1.0 + np.exp(-alpha * a)) * b).astype(ins[0].dtype)]


register("SwiGLU", infer=_swiglu_infer, reference=_swiglu, flops=lambda i, o, a: 6 * int(np.prod(o[0])), inputs=(2, 2))
