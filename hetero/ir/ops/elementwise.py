"""Elementwise ops: binary arithmetic with numpy broadcasting and unary activations."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from hetero.ir.ops import Attrs, Shape, Value, mlas, register
from hetero.errors import GraphError


def _broadcast(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    try:
        shape = tuple(int(d) for d in np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        raise GraphError(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None
    return [(shape, a.dtype)]


def _same(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(x.shape, x.dtype)]


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        return [fn(a, b).astype(a.dtype, copy=False)]

    return reference


def _unary(fn: Callable[[np.ndarray, Attrs], np.ndarray]):
    def reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = inputs[0]
        return [np.asarray(fn(x, attrs)).astype(x.dtype, copy=False)]

    return reference


def _cost(per_element: int):
    def flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
        return per_element * int(sum(int(np.prod(s)) for s in outputs))

    return flops


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b)
    return a / b


for _name, _fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", _divide)):
    register(_name, infer=_broadcast, reference=_binary(_fn), inputs=(2, 2))


def clip_bounds(inputs: Sequence[object], attrs: Attrs) -> tuple[float, float]:
    """Clip's (min, max) from opset >= 11 inputs or the older attributes; +-inf when absent."""
    low = attrs.get("min", -np.inf)
    high = attrs.get("max", np.inf)
    if len(inputs) > 1 and inputs[1] is not None:
        low = float(np.asarray(inputs[1]).reshape(()))
    if len(inputs) > 2 and inputs[2] is not None:
        high = float(np.asarray(inputs[2]).reshape(()))
    return float(low), float(high)


def _clip(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = inputs[0]
    low, high = clip_bounds(inputs, attrs)
    if np.issubdtype(x.dtype, np.integer):  # an absent bound is +-inf, which no integer type holds
        info = np.iinfo(x.dtype)
        low, high = max(low, info.min), min(high, info.max)
    return [np.minimum(np.maximum(x, x.dtype.type(low)), x.dtype.type(high))]


def _sigmoid(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    """float32: MLAS's logistic, onnxruntime's Sigmoid bit for bit (hetero.ir.ops.mlas.logistic);
    other float types 1 / (1 + exp(-x))."""
    if x.dtype == np.float32:
        return mlas.logistic(x)
    return 1.0 / (1.0 + np.exp(-x))


def _hard_sigmoid(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    alpha = np.float32(attrs.get("alpha", 0.2))
    beta = np.float32(attrs.get("beta", 0.5))
    return np.clip(alpha * x + beta, 0, 1)


def _hard_swish(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    return x * np.clip(x * np.float32(1.0 / 6.0) + np.float32(0.5), 0, 1)


register("Relu", infer=_same, reference=_unary(lambda x, a: np.maximum(x, 0)))
register("Clip", infer=_same, reference=_clip, flops=_cost(2), inputs=(1, 3))
register("Sigmoid", infer=_same, reference=_unary(_sigmoid), flops=_cost(4))
register("HardSigmoid", infer=_same, reference=_unary(_hard_sigmoid), flops=_cost(3))
register("HardSwish", infer=_same, reference=_unary(_hard_swish), flops=_cost(4))
register("Tanh", infer=_same, reference=_unary(lambda x, a: mlas.tanh(x) if x.dtype == np.float32 else np.tanh(x)),
         flops=_cost(4))
register("Identity", infer=_same, reference=_unary(lambda x, a: x.copy()), flops=_cost(0))
