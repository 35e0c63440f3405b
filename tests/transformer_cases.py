"""Random cases of the transformer ops for the device kernel tests (test_cpu_backend.py,
test_opencl.py): hypothesis strategies that draw one op with its inputs, and the comparison with
the numpy reference (float32 within 1e-5 relative of the output's largest magnitude, widened for
reductions over many elements to the float32 rounding such a sum can carry, 4 * sqrt(n) * eps;
integer and bool outputs exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from hypothesis import strategies as st

from hetero.backends.base import Device
from hetero.backends.reference import reference_op
from hetero.ir.graph import Op, TensorSpec, make_op

RTOL = 1e-5
EPS32 = float(np.finfo(np.float32).eps)


def reduced_count(op: Op, shape: Sequence[int]) -> int:
    """Elements one output value of a normalising op sums over (1 for the others)."""
    if op.type != "LayerNormalization" or not shape:
        return 1
    axis = int(op.attrs.get("axis", -1)) % len(shape)
    return int(np.prod(shape[axis:]))


def tolerance(op: Op, shape: Sequence[int]) -> float:
    """Relative tolerance against the reference: RTOL, or a long float32 sum's rounding."""
    return max(RTOL, 4.0 * float(np.sqrt(reduced_count(op, shape))) * EPS32)
UNARY = [("Erf", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Exp", {}), ("Log", {}), ("Sqrt", {}),
         ("Reciprocal", {}), ("Neg", {}), ("Tanh", {}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3}),
         ("HardSwish", {}), ("Softmax", {}), ("LogSoftmax", {}), ("Abs", {}), ("Sin", {}), ("Cos", {}),
         ("Softplus", {}), ("Floor", {}), ("Ceil", {})]
COMPARISONS = ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")


@dataclass(frozen=True)
class Case:
    """One op: its type, activations and constants by name, input order and attributes."""

    op_type: str
    activations: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    order: tuple[str, ...] | None = None
    outputs: int = 1
    attrs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> tuple[Op, list[np.ndarray]]:
        names = list(self.order) if self.order is not None else [*self.activations, *self.weights]
        specs = {n: TensorSpec(n, tuple(v.shape), str(v.dtype)) for n, v in self.activations.items()}
        op = make_op("node", self.op_type, names, [f"y{i}" for i in range(self.outputs)], self.attrs, specs,
                     self.weights)
        return op, [self.activations[n] for n in names if n in self.activations]


def check_case(dev: Device, case: Case) -> None:
    """The device runs the case (it claims it) and matches the reference."""
    op, values = case.build()
    assert dev.supports(op), dev.why_not(op)
    got = [dev.download(b) for b in dev.run(op, [dev.upload(v) for v in values])]
    want = reference_op(op, values)[: len(op.outputs)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.shape, g.dtype) == (w.shape, w.dtype), f"{op.type}: {g.shape} {g.dtype} != {w.shape} {w.dtype}"
        if np.issubdtype(w.dtype, np.floating):
            scale = float(np.abs(w).max()) if w.size else 0.0
            rtol = tolerance(op, values[0].shape if values else ())
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=f"{op.type} {op.signature()}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{op.type} {op.signature()}")


shapes = st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple)


def partner(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: leading dims dropped, some dims set to 1."""
    kept = shape[draw(st.integers(0, len(shape))):]
    return tuple(1 if draw(st.booleans()) else d for d in kept)


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**31)))


@st.composite
def unary_cases(draw: st.DrawFn) -> Case:
    op_type, attrs = draw(st.sampled_from(UNARY))
    rng, shape = _rng(draw), draw(shapes)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    if op_type == "Softplus":  # both tails: e^x overflows float32 past 88
        x = (rng.standard_normal(shape) * 40).astype(np.float32)
    if op_type in ("Log", "Sqrt", "Reciprocal"):
        x = rng.uniform(0.05, 20, shape).astype(np.float32)
    if op_type in ("Softmax", "LogSoftmax"):
        attrs = {"axis": draw(st.integers(-len(shape), len(shape) - 1))}
    if op_type == "Neg" and draw(st.booleans()):
        x = rng.integers(-1000, 1000, shape).astype(draw(st.sampled_from(["int32", "int64"])))
    return Case(op_type, {"x": x}, attrs=attrs)


@st.composite
def binary_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["Pow", "Mod", "Compare", "Logic", "Where"]))
    rng, shape = _rng(draw), draw(shapes)
    other = partner(draw, shape)
    if draw(st.booleans()):
        shape, other = other, shape
    if kind == "Pow":
        a = rng.uniform(0.1, 4, shape).astype(np.float32)
        if draw(st.booleans()):
            return Case("Pow", {"a": a}, {"b": np.asarray(draw(st.sampled_from([2, 3, 0.5, -1.0])),
                                                            draw(st.sampled_from(["float32", "int64"])))})
        return Case("Pow", {"a": a, "b": rng.uniform(-2, 2, other).astype(np.float32)})
    if kind == "Mod":
        fmod = draw(st.integers(0, 1))
        if draw(st.booleans()):
            dtype = draw(st.sampled_from(["int32", "int64"]))
            b = rng.integers(1, 9, other) * rng.choice([-1, 1], other)
            a = rng.integers(-50, 50, shape).astype(dtype)
            return Case("Mod", {"a": a, "b": b.astype(dtype)}, attrs={"fmod": fmod})
        b = (rng.uniform(0.5, 3, other) * rng.choice([-1, 1], other)).astype(np.float32)
        return Case("Mod", {"a": (rng.standard_normal(shape) * 5).astype(np.float32), "b": b}, attrs={"fmod": fmod})
    if kind == "Compare":
        dtype = draw(st.sampled_from(["float32", "int32", "int64"]))
        a, b = (rng.integers(-2, 3, s).astype(dtype) for s in (shape, other))
        return Case(draw(st.sampled_from(COMPARISONS)), {"a": a, "b": b})
    if kind == "Logic":
        a, b = (rng.random(s) < 0.5 for s in (shape, other))
        return Case(draw(st.sampled_from(["And", "Or", "Xor", "Equal"])), {"a": a, "b": b})
    dtype = draw(st.sampled_from(["float32", "int64", "bool", "uint8"]))
    x = rng.integers(-100, 100, shape).astype(dtype)
    if draw(st.booleans()):  # an attention mask: a constant fill where the condition holds
        fill = np.asarray(-1e9 if dtype == "float32" else 0, dtype)
        return Case("Where", {"c": rng.random(other) < 0.5, "y": x}, {"x": fill},
                    order=("c", "x", "y"))
    third = partner(draw, shape)
    return Case("Where", {"c": rng.random(other) < 0.5, "x": x, "y": rng.integers(-9, 9, third).astype(dtype)})


@st.composite
def norm_cases(draw: st.DrawFn) -> Case:
    rng = _rng(draw)
    shape = draw(st.lists(st.integers(1, 70), min_size=2, max_size=4).map(tuple))
    x = (rng.standard_normal(shape) * 2 + rng.uniform(-3, 3)).astype(np.float32)
    if draw(st.booleans()):
        c = shape[1]
        return Case("InstanceNormalization", {"x": x}, {"s": rng.standard_normal(c).astype(np.float32),
                                                        "b": rng.standard_normal(c).astype(np.float32)},
                    attrs={"epsilon": 1e-5})
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    norm_shape = shape[axis % len(shape):]
    param = norm_shape[draw(st.integers(0, len(norm_shape) - 1)):]  # the normalised dims or a trailing part
    weights = {"s": rng.standard_normal(param).astype(np.float32)}
    if draw(st.booleans()):
        weights["b"] = rng.standard_normal(param).astype(np.float32)
    return Case("LayerNormalization", {"x": x}, weights, outputs=draw(st.sampled_from([1, 3])),
                attrs={"axis": axis, "epsilon": draw(st.sampled_from([1e-5, 1e-6, 1e-12]))})


@st.composite
def reduce_cases(draw: st.DrawFn) -> Case:
    rng, shape = _rng(draw), draw(shapes)
    x = rng.standard_normal(shape).astype(np.float32)
    axes = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)))
    op_type = draw(st.sampled_from(["ReduceSum", "ReduceMax", "ReduceMean"]))
    attrs = {"keepdims": draw(st.integers(0, 1))}
    if not axes:
        return Case(op_type, {"x": x}, attrs=attrs)
    return Case(op_type, {"x": x}, {"axes": np.asarray(axes, np.int64)}, attrs=attrs)


@st.composite
def movement_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["Trilu", "Expand", "Tile", "Gather", "Transpose"]))
    rng = _rng(draw)
    dtype = draw(st.sampled_from(["float32", "int64", "bool"]))
    if kind == "Trilu":
        shape = draw(st.lists(st.integers(1, 7), min_size=2, max_size=4).map(tuple))
        x = rng.integers(-9, 9, shape).astype(dtype)
        k = draw(st.integers(-3, 3))
        weights = {"k": np.asarray(k, np.int64)} if draw(st.booleans()) else {}
        return Case("Trilu", {"x": x}, weights, attrs={"upper": draw(st.integers(0, 1))})
    shape = draw(shapes)
    if kind == "Expand":
        small = partner(draw, shape)
        return Case("Expand", {"x": rng.integers(-9, 9, small).astype(dtype)}, {"s": np.asarray(shape, np.int64)})
    if kind == "Tile":
        reps = tuple(draw(st.integers(1, 3)) for _ in shape)
        return Case("Tile", {"x": rng.integers(-9, 9, shape).astype(dtype)}, {"r": np.asarray(reps, np.int64)})
    if kind == "Gather":  # embeddings: a constant table, token ids as activations
        table = rng.standard_normal((draw(st.integers(2, 50)), draw(st.integers(1, 16)))).astype(np.float32)
        axis = draw(st.integers(0, 1))
        ids = rng.integers(0, table.shape[axis], draw(shapes)).astype(draw(st.sampled_from(["int32", "int64"])))
        return Case("Gather", {"ids": ids}, {"table": table}, order=("table", "ids"), attrs={"axis": axis})
    perm = tuple(draw(st.permutations(range(len(shape)))))
    return Case("Transpose", {"x": rng.integers(-9, 9, shape).astype(dtype)}, attrs={"perm": perm})


@st.composite
def matmul_cases(draw: st.DrawFn) -> Case:
    """Batched MatMul of rank 3-4 with broadcasting batch dims (attention's Q K^T and P V, or a
    projection by a constant 2-D weight)."""
    rng = _rng(draw)
    batch = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    m, k, n = draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    a = rng.standard_normal((*batch, m, k)).astype(np.float32)
    if draw(st.booleans()):
        return Case("MatMul", {"a": a}, {"b": rng.standard_normal((k, n)).astype(np.float32)})
    b_batch = partner(draw, batch)
    return Case("MatMul", {"a": a, "b": rng.standard_normal((*b_batch, k, n)).astype(np.float32)})


@st.composite
def position_cases(draw: st.DrawFn) -> Case:
    """What exported language models compute position ids and masks with: CumSum, integer
    Add/Sub/Mul/Clip, IsNaN."""
    kind = draw(st.sampled_from(["CumSum", "IsNaN", "Arith", "Clip"]))
    rng, shape = _rng(draw), draw(shapes)
    dtype = draw(st.sampled_from(["int32", "int64"]))
    if kind == "CumSum":
        dtype = draw(st.sampled_from(["float32", "int32", "int64"]))
        x = rng.integers(-9, 9, shape).astype(dtype) if dtype != "float32" else rng.standard_normal(shape).astype(dtype)
        axis = np.asarray(draw(st.integers(-len(shape), len(shape) - 1)), draw(st.sampled_from(["int32", "int64"])))
        return Case("CumSum", {"x": x}, {"axis": axis},
                    attrs={"exclusive": draw(st.integers(0, 1)), "reverse": draw(st.integers(0, 1))})
    if kind == "IsNaN":
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.3] = np.nan
        return Case("IsNaN", {"x": x})
    if kind == "Arith":
        other = partner(draw, shape)
        a, b = rng.integers(-1000, 1000, shape).astype(dtype), rng.integers(-1000, 1000, other).astype(dtype)
        return Case(draw(st.sampled_from(["Add", "Sub", "Mul"])), {"a": a, "b": b})
    x = rng.integers(-100, 100, shape).astype(dtype)
    low, high = sorted(int(v) for v in rng.integers(-120, 120, 2))
    bounds = draw(st.sampled_from([("lo", "hi"), ("lo", ""), ("", "hi")]))
    weights = {"lo": np.asarray(low, dtype), "hi": np.asarray(high, dtype)}
    return Case("Clip", {"x": x}, {n: weights[n] for n in bounds if n}, order=("x", *bounds))


def large_cases(seed: int = 0) -> list[Case]:
    """One case per kernel family over 77k elements: past the cpu kernels' serial cut-off
    (SERIAL_MAX), so their parallel drivers run too."""
    rng = np.random.default_rng(seed)
    shape = (300, 257)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    ints = rng.integers(-50, 50, shape)
    return [
        Case("Gelu", {"x": x}), Case("Erf", {"x": x}), Case("Sqrt", {"x": np.abs(x)}),
        Case("Neg", {"x": ints.astype(np.int32)}),
        Case("Not", {"x": x > 0}), Case("Pow", {"a": np.abs(x) + 0.1, "b": x[:1] / 3}),
        Case("Mod", {"a": ints, "b": rng.integers(1, 7, (300, 1)) * rng.choice([-1, 1], (300, 1))}, attrs={"fmod": 1}),
        Case("Less", {"a": x, "b": x[0]}), Case("Where", {"c": x[:, :1] > 0, "x": x, "y": -x}),
        Case("LayerNormalization", {"x": x}, {"s": x[0], "b": x[1]}, outputs=3),
        Case("LogSoftmax", {"x": x}, attrs={"axis": 0}),
    ]


def cases_by_kind() -> dict[str, Any]:
    return {"unary": unary_cases(), "binary": binary_cases(), "norm": norm_cases(), "reduce": reduce_cases(),
            "movement": movement_cases(), "matmul": matmul_cases(), "position": position_cases()}


__all__: Sequence[str] = ["Case", "check_case", "cases_by_kind", "large_cases"]
