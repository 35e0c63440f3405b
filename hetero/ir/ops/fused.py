"""onnxruntime's float fusions of a ``quantize_dynamic`` graph, so hetero computes its float ops
with onnxruntime's bits: the ops FusedMatMul and SkipLayerNormalization (com.microsoft), and
:func:`fuse_like_onnxruntime`, the graph pass that forms them (and Gelu) where onnxruntime's CPU
session, at its default optimisation level, does.

onnxruntime fuses, in a model whose weights MatMuls quantize_dynamic made integer:

- MatMulScaleFusion: a MatMul with a Mul or Div by a scalar constant on its output, or on an
  input, whose intermediate has no other reader, becomes FusedMatMul with ``alpha`` the product
  of the scales (1 / c for a Div by c). Every other float MatMul runs on MLAS's SGEMM too.
  Both are :func:`hetero.ir.ops.mlas.sgemm` here: an FMA chain over k, then times alpha.
- GeluFusion: Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5 (any operand order) becomes Gelu,
  which computes erf(x * M_SQRT1_2): not x / sqrt 2.
- QuickGeluFusion: x * Sigmoid(x) (SiLU), or x * Sigmoid(alpha x), becomes QuickGelu: x times
  MLAS's logistic of alpha x (:func:`hetero.ir.ops.mlas.quick_gelu`).
- SkipLayerNormFusion: Add of two activations of the same rank-3 shape, read only by a
  LayerNormalization over the last axis with constant scale and bias, becomes
  SkipLayerNormalization (the sum, then the normalisation: onnxruntime's SkipLayerNormalization
  runs the float32 Welford loop, not LayerNormalization's lanes).
- Pow by a scalar 3 (not a fusion, in every graph): x * x * x (hetero.ir.ops.binary).

The pass runs at import on graphs holding a DynamicQuantizeLinear (hetero.ir.onnx_import); fp32
and QDQ graphs are left as they are.
"""

from __future__ import annotations

import logging
import types
from typing import TYPE_CHECKING, Sequence

import numpy as np

from hetero.errors import GraphError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops import mlas
from hetero.ir.ops.nn import _matmul_shape

if TYPE_CHECKING:
    from hetero.ir.graph import Graph, Op

log = logging.getLogger(__name__)

SQRT2 = np.float32(np.sqrt(2.0))
# (de)quantization ops: exact integer steps and one float32 product per element on every device
# hetero's attribute on a FusedMatMul whose B is a constant: onnxruntime packs it, and sums k in blocks of 256
PACKED_B = "packed_b"
EXACT_QUANTIZATION = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def _transposed(shape: Shape, flag: object) -> Shape:
    return (*shape[:-2], shape[-1], shape[-2]) if flag and len(shape) >= 2 else shape


def _fused_matmul_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    if a.dtype != "float32" or b.dtype != "float32":
        raise GraphError(f"FusedMatMul takes float32, got {a.dtype} and {b.dtype}")
    shape = _matmul_shape(_transposed(a.shape, attrs.get("transA", 0)), _transposed(b.shape, attrs.get("transB", 0)))
    return [(shape, "float32")]


def _fused_matmul_reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    a = np.swapaxes(a, -1, -2) if attrs.get("transA", 0) else a
    b = np.swapaxes(b, -1, -2) if attrs.get("transB", 0) else b
    return [mlas.sgemm(a, b, float(attrs.get("alpha", 1.0)), bool(attrs.get(PACKED_B, 0)))]


def _fused_matmul_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    a = inputs[0]
    assert a is not None
    k = a.shape[-2] if attrs.get("transA", 0) else a.shape[-1]
    return 2 * int(np.prod(outputs[0])) * int(k)


register("FusedMatMul", infer=_fused_matmul_infer, reference=_fused_matmul_reference, flops=_fused_matmul_flops,
         inputs=(2, 2))


def _skip_ln_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, skip = inputs[0], inputs[1]
    assert x is not None and skip is not None
    if x.shape != skip.shape or x.dtype != "float32":
        raise GraphError(f"SkipLayerNormalization needs two float32 inputs of one shape, got {list(x.shape)} "
                         f"{x.dtype} and {list(skip.shape)} {skip.dtype}")
    return [(x.shape, "float32"), (x.shape[:-1] + (1,), "float32"), (x.shape[:-1] + (1,), "float32"),
            (x.shape, "float32")]


def _skip_ln_reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x, skip, gamma = inputs[0], inputs[1], inputs[2]
    beta = inputs[3] if len(inputs) > 3 else None
    bias = inputs[4] if len(inputs) > 4 else None
    assert x is not None and skip is not None and gamma is not None
    y, s = mlas.skip_layer_norm(x, skip, gamma, beta, bias, float(attrs.get("epsilon", 1e-12)))
    # outputs 1 and 2 (mean, inverse std) are never read in graphs the fusion builds
    stats = np.zeros(x.shape[:-1] + (1,), np.float32)
    return [y, stats, stats.copy(), s]


register("SkipLayerNormalization", infer=_skip_ln_infer, reference=_skip_ln_reference, flops=lambda i, o, a: 8 * int(np.prod(o[0])),
         inputs=(3, 5), optional_outputs=True)


def _quick_gelu_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    if x.dtype != "float32":
        raise GraphError(f"QuickGelu takes float32, got {x.dtype}")
    return [(x.shape, "float32")]


register("QuickGelu", infer=_quick_gelu_infer, flops=lambda i, o, a: 20 * int(np.prod(o[0])),
         reference=lambda ins, attrs: [mlas.quick_gelu(ins[0], float(attrs.get("alpha", 1.0)))])


# ----------------------------------------------------------------------------- the pass


def _scalar(op: "Op") -> np.float32 | None:
    """The float32 scalar constant of a two-input Mul or Div (the divisor for Div), if any."""
    if op.type not in ("Mul", "Div") or len(op.inputs) != 2:
        return None
    candidates = [op.inputs[1]] if op.type == "Div" else list(op.inputs)
    for name in candidates:
        value = op.weights.get(name)
        if value is not None and value.size == 1 and value.dtype == np.float32:
            return np.float32(value.reshape(()))
    return None


def _activation(op: "Op") -> str:
    return next(t for t in op.activation_inputs)


def _near(value: np.ndarray | None, target: float) -> bool:
    return value is not None and value.size == 1 and abs(float(value.reshape(())) - target) <= 1e-4 * abs(target)


def fuse_like_onnxruntime(graph: "Graph") -> "Graph":
    """The graph with onnxruntime's float fusions (see the module docstring) applied."""
    from hetero.ir.graph import Graph, make_op

    order = list(graph.ops_in_order())
    if not any(op.type == "DynamicQuantizeLinear" for op in order):
        return graph
    readers: dict[str, list["Op"]] = {}
    for op in order:
        for t in op.activation_inputs:
            readers.setdefault(t, []).append(op)
    producer = {t: op for op in order for t in op.outputs}
    outputs = {s.name for s in graph.outputs}

    def only_reader(tensor: str) -> "Op | None":
        found = readers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in outputs else None

    removed: set[str] = set()
    replaced: dict[str, tuple[str, str, list[str], list[str], dict, dict]] = {}  # op name -> new node

    for op in order:  # Gelu: Div(x, sqrt2) -> Erf -> Add 1 -> Mul x -> Mul 0.5
        if op.type != "Div" or op.name in removed or not _near(op.weights.get(op.inputs[1]), float(SQRT2)):
            continue
        x = op.inputs[0]
        erf = only_reader(op.outputs[0])
        add = erf and erf.type == "Erf" and only_reader(erf.outputs[0])
        one = add and add.type == "Add" and any(_near(add.weights.get(t), 1.0) for t in add.inputs)
        mul = one and only_reader(add.outputs[0])
        if not (mul and mul.type == "Mul" and x in mul.inputs and len(mul.activation_inputs) == 2):
            continue
        half = only_reader(mul.outputs[0])
        if not (half and half.type == "Mul" and any(_near(half.weights.get(t), 0.5) for t in half.inputs)):
            continue
        removed.update({erf.name, add.name, mul.name, half.name})
        replaced[op.name] = (op.name, "Gelu", [x], list(half.outputs), {}, {})

    for op in order:
        if op.type != "MatMul" or op.name in removed or op.output_specs[0].dtype != "float32":
            continue
        inputs, alpha, first, last = list(op.inputs), np.float32(1.0), op, op
        for slot in (0, 1):
            source = producer.get(inputs[slot])
            if source is None or source.name in removed or inputs[slot] in op.weights:
                continue
            scale = _scalar(source)
            if scale is not None and only_reader(source.outputs[0]) is op and len(source.activation_inputs) == 1:
                alpha = np.float32(alpha * (np.float32(1.0) / scale if source.type == "Div" else scale))
                inputs[slot] = _activation(source)
                removed.add(source.name)
        after = only_reader(op.outputs[0])
        if (after is not None and after.name not in removed and _scalar(after) is not None
                and len(after.activation_inputs) == 1):
            scale = _scalar(after)
            alpha = np.float32(alpha * (np.float32(1.0) / scale if after.type == "Div" else scale))
            removed.add(after.name)
            last = after
        weights = {t: op.weights[t] for t in inputs if t in op.weights}
        attrs = {"alpha": float(alpha), **({PACKED_B: 1} if inputs[1] in weights else {})}
        replaced[first.name] = (op.name, "FusedMatMul", inputs, list(last.outputs), attrs, weights)

    for op in order:  # QuickGelu: x * Sigmoid(x), or x * Sigmoid(x * alpha)
        if op.type != "Sigmoid" or op.name in removed:
            continue
        scaled = producer.get(op.inputs[0])
        x, alpha, first = op.inputs[0], 1.0, op
        if (scaled is not None and scaled.name not in removed and _scalar(scaled) is not None and scaled.type == "Mul"
                and only_reader(scaled.outputs[0]) is op and len(scaled.activation_inputs) == 1):
            x, alpha, first = _activation(scaled), float(_scalar(scaled)), scaled
        mul = only_reader(op.outputs[0])
        if not (mul and mul.type == "Mul" and mul.name not in removed and set(mul.inputs) == {x, op.outputs[0]}):
            continue
        removed.update({op.name, mul.name} - {first.name})
        replaced[first.name] = (first.name, "QuickGelu", [x], list(mul.outputs), {"alpha": alpha}, {})

    for op in order:  # SkipLayerNormalization: Add of two activations -> LayerNormalization
        if op.type != "LayerNormalization" or op.name in removed or len(op.inputs) < 3:
            continue
        source = producer.get(op.inputs[0])
        axis = int(op.attrs.get("axis", -1))
        rank = len(op.input_specs[0].shape)
        if (source is None or source.type != "Add" or source.name in removed or source.name in replaced
                or len(source.activation_inputs) != 2 or only_reader(source.outputs[0]) is not op
                or axis not in (-1, rank - 1) or rank != 3 or op.inputs[1] not in op.weights
                or op.inputs[2] not in op.weights or len(op.outputs) > 1):
            continue
        a, b = source.input_specs
        if a is None or b is None or a.shape != b.shape:
            continue
        removed.add(source.name)
        replaced[op.name] = (op.name, "SkipLayerNormalization", [*source.inputs, op.inputs[1], op.inputs[2]],
                             list(op.outputs), {"epsilon": float(op.attrs.get("epsilon", 1e-5))},
                             {t: op.weights[t] for t in op.inputs[1:3]})

    specs = {s.name: s for s in graph.inputs}
    built: list["Op"] = []
    for op in order:
        if op.name in replaced:
            name, kind, inputs, outs, attrs, weights = replaced[op.name]
            built.append(make_op(name, kind, inputs, outs, attrs, specs, weights))
        elif op.name not in removed:
            built.append(op)
        else:
            continue
        specs.update({s.name: s for s in built[-1].output_specs})
    built = mark_float_ops_before_dynamic_quantize(built)
    log.info("%s: %d onnxruntime float fusions (FusedMatMul, Gelu, QuickGelu, SkipLayerNormalization), %d float ops "
             "marked %s", graph.name, len(replaced), sum(mlas.feeds_quantize(op) for op in built), mlas.FEEDS_QUANTIZE)
    return Graph.build(built, graph.inputs, [s.name for s in graph.outputs], name=graph.name)


def mark_float_ops_before_dynamic_quantize(ops: list["Op"]) -> list["Op"]:
    """Tag (``mlas.FEEDS_QUANTIZE``) every float op a DynamicQuantizeLinear's input depends on
    through float tensors, bar those every device computes with the same bits
    (``mlas.SAME_BITS_EVERYWHERE``, and the (de)quantization ops): DynamicQuantizeLinear picks its scale from the whole
    tensor's range, so any float op upstream, not just the last, decides its integers; a device
    that cannot give the reference's bits for one must refuse it, or partitioned runs would
    quantize differently from single-device ones."""
    import dataclasses

    producer = {t: op for op in ops for t in op.outputs}
    floats = ("float32", "float16", "float64")
    pending = [op.inputs[0] for op in ops if op.type == "DynamicQuantizeLinear"]
    seen: set[str] = set()
    marked: set[str] = set()
    while pending:
        tensor = pending.pop()
        source = producer.get(tensor)
        if tensor in seen or source is None:
            continue
        seen.add(tensor)
        spec = next(s for s in source.output_specs if s.name == tensor)
        if spec.dtype not in floats:
            continue
        if source.type not in mlas.SAME_BITS_EVERYWHERE and source.type not in EXACT_QUANTIZATION:
            marked.add(source.name)
        pending.extend(source.activation_inputs)
    return [dataclasses.replace(op, attrs=types.MappingProxyType({**op.attrs, mlas.FEEDS_QUANTIZE: 1}))
            if op.name in marked and not mlas.feeds_quantize(op) else op for op in ops]
