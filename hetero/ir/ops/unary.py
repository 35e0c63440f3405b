"""Unary math ops (Neg, Exp, Log, Sqrt, Erf, Gelu, the ReLU family, ...), computed in float64
and rounded once to the input dtype, so float16 and float32 results are correctly rounded."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import special

from hetero.errors import UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, mlas, register

FLOAT = ("float16", "float32", "float64")


def _same(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return [(x.shape, x.dtype)]


def _cost(per_element: int):
    def flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
        return per_element * int(sum(int(np.prod(s)) for s in outputs))

    return flops


def _float_only(name: str):
    def infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
        x = inputs[0]
        assert x is not None
        if x.dtype not in FLOAT:
            raise UnsupportedOpError(f"{name} on {x.dtype} is not supported (float16/32/64 only)")
        return [(x.shape, x.dtype)]

    return infer


def unary(name: str, fn: Callable[[np.ndarray, Attrs], np.ndarray], flops: int = 1, float_only: bool = True,
          out_dtype: str | None = None, float32: Callable[[np.ndarray, Attrs], np.ndarray] | None = None) -> None:
    """Register an elementwise op ``fn`` (numpy, float64 for float inputs); ``float32``, where
    given, computes float32 inputs instead (as onnxruntime rounds them)."""

    def reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
        x = ins[0]
        if float32 is not None and x.dtype == np.float32:
            return [float32(x, attrs)]
        wide = x.astype(np.float64) if x.dtype.kind == "f" else x
        dtype = out_dtype or x.dtype
        return [np.asarray(fn(wide, attrs)).astype(dtype)]

    if out_dtype is not None:
        infer = lambda ins, a: [(ins[0].shape, out_dtype)]  # noqa: E731
    else:
        infer = _float_only(name) if float_only else _same
    register(name, infer=infer, reference=reference, flops=_cost(flops))


def _f(attrs: Attrs, key: str, default: float) -> float:
    return float(attrs.get(key, default))


def _gelu(x: np.ndarray, attrs: Attrs) -> np.ndarray:
    mode = attrs.get("approximate", "none")
    if mode == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def _gelu_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    if attrs.get("approximate", "none") not in ("none", "tanh"):
        raise UnsupportedOpError(f"Gelu attribute approximate={attrs['approximate']!r} is not supported (none, tanh)")
    return _float_only("Gelu")(inputs, attrs)


def _signed(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray, Attrs], np.ndarray]:
    def apply(x: np.ndarray, attrs: Attrs) -> np.ndarray:
        if x.dtype.kind == "u" and name == "Neg":
            raise UnsupportedOpError("Neg of an unsigned integer is not supported")
        return fn(x)

    return apply


# float ops
for _name, _fn, _flops in (
    ("Exp", lambda x, a: np.exp(x), 4),
    ("Log", lambda x, a: np.log(x), 4),
    ("Sqrt", lambda x, a: np.sqrt(x), 2),
    ("Reciprocal", lambda x, a: 1.0 / x, 1),
    ("Floor", lambda x, a: np.floor(x), 1),
    ("Ceil", lambda x, a: np.ceil(x), 1),
    ("Round", lambda x, a: np.round(x), 1),
    ("Sin", lambda x, a: np.sin(x), 4),
    ("Cos", lambda x, a: np.cos(x), 4),
    ("Tan", lambda x, a: np.tan(x), 4),
    ("Asin", lambda x, a: np.arcsin(x), 4),
    ("Acos", lambda x, a: np.arccos(x), 4),
    ("Atan", lambda x, a: np.arctan(x), 4),
    ("Sinh", lambda x, a: np.sinh(x), 4),
    ("Cosh", lambda x, a: np.cosh(x), 4),
    ("Asinh", lambda x, a: np.arcsinh(x), 4),
    ("Acosh", lambda x, a: np.arccosh(x), 4),
    ("Atanh", lambda x, a: np.arctanh(x), 4),
    ("Softplus", lambda x, a: np.logaddexp(0, x), 4),
    ("Softsign", lambda x, a: x / (1 + np.abs(x)), 3),
    ("Mish", lambda x, a: x * np.tanh(np.logaddexp(0, x)), 8),
    ("Swish", lambda x, a: x * special.expit(_f(a, "alpha", 1.0) * x), 5),
    ("Elu", lambda x, a: np.where(x > 0, x, _f(a, "alpha", 1.0) * np.expm1(x)), 4),
    ("Celu", lambda x, a: np.maximum(0, x) + np.minimum(0, _f(a, "alpha", 1.0) * np.expm1(x / _f(a, "alpha", 1.0))), 5),
    ("Selu", lambda x, a: _f(a, "gamma", 1.0507009873554805) * np.where(x > 0, x, _f(a, "alpha", 1.6732632423543772) * np.expm1(x)), 5),
    ("LeakyRelu", lambda x, a: np.where(x >= 0, x, _f(a, "alpha", 0.01) * x), 2),
    ("ThresholdedRelu", lambda x, a: np.where(x > _f(a, "alpha", 1.0), x, 0), 1),
    ("Shrink", lambda x, a: np.where(x < -_f(a, "lambd", 0.5), x + _f(a, "bias", 0.0),
                                     np.where(x > _f(a, "lambd", 0.5), x - _f(a, "bias", 0.0), 0)), 2),
):
    unary(_name, _fn, _flops)

# float32 Erf and Gelu as onnxruntime's MLAS computes them (a QuantizeLinear after them then agrees)
unary("Erf", lambda x, a: special.erf(x), 8, float32=lambda x, a: mlas.erf(x))


def _gelu_reference(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0]
    if x.dtype == np.float32:
        return [mlas.gelu(x, str(attrs.get("approximate", "none")))]
    return [_gelu(x.astype(np.float64), attrs).astype(x.dtype)]


register("Gelu", infer=_gelu_infer, reference=_gelu_reference, flops=_cost(10))

# any numeric type
unary("Neg", _signed("Neg", np.negative), float_only=False)
unary("Abs", lambda x, a: np.abs(x), float_only=False)
unary("Sign", lambda x, a: np.sign(x), float_only=False)
unary("IsNaN", lambda x, a: np.isnan(x), out_dtype="bool")
unary("IsInf", lambda x, a: np.isinf(x) & (((x > 0) & bool(a.get("detect_positive", 1))) | ((x < 0) & bool(a.get("detect_negative", 1)))), out_dtype="bool")
unary("Not", lambda x, a: np.logical_not(x), float_only=False)
unary("BitwiseNot", lambda x, a: np.invert(x), float_only=False)
