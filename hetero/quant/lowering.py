"""QDQ Graph -> integer Graph: fuse DequantizeLinear -> op -> QuantizeLinear groups into QLinear ops.

The patterns are the ones onnxruntime's CPU QDQ transformers fuse, so that the integer graph's
numpy reference reproduces onnxruntime on the same QDQ model. Below, DQ(x) is a
DequantizeLinear of an integer activation, DQ(w) one of an integer constant, Q a
QuantizeLinear with constant scalar scale and zero point, and "one Q" means the op's output
feeds exactly that Q and is not a graph output.

1. Redundant activations: Relu -> Q when Q's zero point is its type's minimum, and
   Clip -> Q when round(min / s) + z <= qmin and round(max / s) + z >= qmax, are removed
   (Q's saturation clips the same). Where such an activation sat between a fused op and
   its Q, the QLinear op records it as ``qmin``/``qmax`` (rule 3 of hetero.ir.ops.qlinear; here
   always the type's range). A Relu/Clip the Q does not imply stays in float, and so does
   the op before it, as in onnxruntime.
2. DQ(x), DQ(w) [, bias] -> Conv -> one Q  =>  QLinearConv
   (x and y of one type; int8 x needs int8 w; w per tensor or per output channel).
3. DQ(a), DQ(b) [, bias, beta = 1] -> Gemm -> one Q  =>  QGemm (b per tensor or per output column).
   A bias is a DQ of an int32 constant, or a 1-D float constant that is quantized first as
   onnxruntime's WeightBiasQuantization does: int32(round(float32(b / float32(sx * sw)))).
4. DQ(a), DQ(b) -> MatMul -> one Q  =>  QLinearMatMul.
5. DQ(a), DQ(b) -> Add | Mul -> one Q  =>  QLinearAdd | QLinearMul (a, b, y of one type,
   per tensor; either may be a constant DQ, as onnxruntime's quantizer writes a Mul's scalar).
6. DQ(x) -> AveragePool | GlobalAveragePool -> one Q  =>  QLinearAveragePool | QLinearGlobalAveragePool;
   DQ(x) -> Softmax -> one Q  =>  QLinearSoftmax (x and y of one type; opset >= 13 on any axis,
   older opsets on the last axis only, where the two definitions agree).
7. DQ(x)... -> Concat -> one Q  =>  QLinearConcat (all of one type).
8. DQ(x) -> MaxPool | Reshape | Flatten | Transpose | Squeeze | Unsqueeze | Slice | Gather |
   Identity -> one Q with the same scale, zero point and type (MaxPool: positive scale)  =>
   the same op on the integer tensor; Split likewise when every output has such a Q.

Constant weight DQs are absorbed: their integer array, scales and zero points become constant
inputs of the QLinear op; the int32 bias passes through as is (onnxruntime ignores its DQ's
scale). A DQ shared by several consumers serves each on its own (as onnxruntime's
EnsureUniqueDQForNodeUnit makes it). Everything else is left as it was: the graph input's Q
(fp32 -> int), the graph output's DQ, and DQ -> fp32 op -> Q around any op not matched above
(for example a Conv with float weights). onnxruntime also fuses some groups hetero has no
integer op for, which therefore stay DQ -> fp32 op -> Q here and may round differently:
Sigmoid and LeakyRelu, and a Gemm or MatMul with no Q after it (onnxruntime's
MatMulIntegerToFloat). LayerNormalization, Erf, Div, Gelu, ReduceMean and the rest stay in
float between DQ and Q in onnxruntime as here. MatMul of two activations (attention's Q K^T
and A V) fuses like MatMul with a weight: batched and broadcasting, both inputs per tensor.

A ``quantize_dynamic`` model (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul by
a_scale * b_scale [-> Add bias]) needs no lowering: its integer ops run as they are, and
onnxruntime's fusion of it into DynamicQuantizeMatMul / MatMulIntegerToFloat computes the
same float32 products (float32(acc) * float32(sa * sb[c]), then the bias). Its float ops get
onnxruntime's float fusions and marks at import (hetero.ir.ops.fused).

A Q or DQ whose constant scale is not finite is refused with the node's name: onnxruntime's
quantize_static writes scale inf for a causal mask's -inf, and no run of that model means
anything. (Patterns and kernels checked against onnxruntime 1.32's CPU EP:
tests/test_lowering.py, tests/test_quant_transformer.py.)

With int8 activations, x86 onnxruntime by default fuses Conv and MatMul only where its
QDQS8ToU8Transformer retypes their int8 Q/DQ pairs to uint8; ``lower_qdq(int8_allowed=False)``
reproduces those decisions (see :func:`lower_qdq`).

:func:`fold_constant_dequantize` is the other way to run a QDQ graph: in float, each weight's
DequantizeLinear folded into the float constant it computes (hetero's fp32 of a QDQ model).
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from hetero.errors import InputError
from hetero.ir.graph import Graph, Op, TensorSpec, make_op
from hetero.ir.ops import mlas
from hetero.quant.math import activation_bounds
from hetero.quant.qgroups import QuantParams, Rewrite, quant_params
from hetero.quant.rules import RULES

log = logging.getLogger(__name__)

class Lowering:
    def __init__(self, graph: Graph, int8_allowed: bool) -> None:
        self.graph = graph
        self.int8_allowed = int8_allowed
        self.ops = list(graph.ops_in_order())
        self.producer = {t: op for op in self.ops for t in op.outputs}
        self.consumers: dict[str, list[Op]] = defaultdict(list)
        for op in self.ops:
            for tensor in dict.fromkeys(op.activation_inputs):
                self.consumers[tensor].append(op)
        self.outputs = {spec.name for spec in graph.outputs}
        self.specs: dict[str, TensorSpec] = {s.name: s for s in graph.inputs}
        for op in self.ops:
            self.specs.update({s.name: s for s in op.output_specs})
        self.replaced: dict[str, Op] = {}  # op name -> its replacement (a Q reading past a removed activation)
        self.removed: set[str] = set()
        self.clamp: dict[str, tuple[int, int]] = {}  # Q name -> qmin/qmax of the activation removed before it
        self.as_uint8: set[str] = set() if int8_allowed else self.s8_to_u8()

    # --- helpers ---------------------------------------------------------------------------

    def s8_to_u8(self) -> set[str]:
        """The int8 Q and DQ ops onnxruntime's x86 QDQS8ToU8Transformer retypes to uint8.

        A Q -> DQ pair is retyped when the Q feeds only that DQ and the DQ feeds one input (or
        only a graph output), after onnxruntime gives every consumer its own DQ; constant DQs
        keep int8. Retyping shifts values and zero points by 128, which changes no result,
        only which groups fuse.
        """
        slots = Counter(t for op in self.ops for t in op.inputs if t and t not in op.weights)

        def int8_zero_point(op: Op) -> int | None:
            zero_point = op.weights.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] else None
            ok = zero_point is not None and zero_point.dtype == np.int8 and zero_point.size == 1
            return int(zero_point.reshape(-1)[0]) if ok else None

        retyped: set[str] = set()
        for op in self.ops:
            if op.type != "QuantizeLinear" or op.outputs[0] in self.outputs or slots[op.outputs[0]] != 1:
                continue
            dq = self.consumers[op.outputs[0]][0]
            out = dq.outputs[0]
            unique = slots[out] <= 1 if out not in self.outputs else slots[out] == 0
            if dq.type == "DequantizeLinear" and unique and int8_zero_point(op) == int8_zero_point(dq) is not None:
                retyped.update((op.name, dq.name))
        return retyped

    def quant(self, op: Op, dtype: str) -> QuantParams | None:
        return quant_params(op, dtype, "uint8" if op.name in self.as_uint8 else dtype)

    def dq(self, tensor: str) -> QuantParams | None:
        op = self.producer.get(tensor)
        if op is None or op.type != "DequantizeLinear" or op.name in self.removed:
            return None
        return self.quant(op, op.input_specs[0].dtype)

    def single_q(self, tensor: str) -> tuple[Op, QuantParams] | None:
        """The one Q reading ``tensor`` when nothing else reads it and it is not a graph output."""
        readers = self.consumers.get(tensor, [])
        if tensor in self.outputs or len(readers) != 1 or readers[0].type != "QuantizeLinear":
            return None
        q_op = self.replaced.get(readers[0].name, readers[0])
        quant = self.quant(q_op, q_op.output_specs[0].dtype)
        return None if quant is None or not quant.per_tensor else (q_op, quant)

    def rank(self, quant: QuantParams) -> int:
        """Rank of a DQ's integer tensor."""
        return quant.consts[quant.tensor].ndim if quant.constant else len(self.specs[quant.tensor].shape)

    # --- rule 1: activations made redundant by the Q after them -------------------------------

    def remove_redundant_activations(self) -> None:
        for op in self.ops:
            if op.type not in ("Relu", "Clip") or op.inputs[0] in op.weights:
                continue
            found = self.single_q(op.outputs[0])
            if found is None:
                continue
            q_op, quant = found
            info = np.iinfo(quant.dtype)
            scale, zero_point = float(quant.scale_array.reshape(())), int(quant.consts[quant.zero_point].reshape(()))
            clamp = activation_bounds(op, scale, zero_point, quant.dtype)
            if clamp != (info.min, info.max):
                continue
            inputs = [op.inputs[0], *q_op.inputs[1:]]
            specs = {op.inputs[0]: self.specs[op.inputs[0]]}
            new_q = make_op(q_op.name, "QuantizeLinear", inputs, q_op.outputs, q_op.attrs, specs, q_op.weights)
            self.replaced[q_op.name] = new_q
            self.removed.add(op.name)
            self.clamp[q_op.name] = clamp
            source = op.inputs[0]
            self.consumers[source] = [new_q if c is op else c for c in self.consumers[source]]
            log.debug("removed %s: the Q %s after it saturates the same", op.name, q_op.name)

    # --- rules 2-8 ---------------------------------------------------------------------------

    def match(self, op: Op) -> Rewrite | None:
        rule = RULES.get(op.type)
        if rule is None or len(op.outputs) != 1 and op.type != "Split":
            return None
        return rule(self, op)

    def output_q(self, op: Op) -> tuple[Op, QuantParams, dict[str, Any]] | None:
        found = self.single_q(op.outputs[0])
        if found is None:
            return None
        q_op, quant = found
        attrs = dict(op.attrs)
        if q_op.name in self.clamp:
            attrs["qmin"], attrs["qmax"] = self.clamp[q_op.name]
        return q_op, quant, attrs

    def run(self) -> Graph:
        self.remove_redundant_activations()
        rewrites: dict[str, Rewrite] = {}
        for op in self.ops:
            if op.name in self.removed or op.type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            rewrite = self.match(op)
            if rewrite is not None:
                rewrites[op.name] = rewrite
                self.removed.update(q.name for q in rewrite.absorbed)
        return self.build(rewrites)

    def build(self, rewrites: dict[str, Rewrite]) -> Graph:
        drafts: list[Op | Rewrite] = []
        for op in self.ops:
            if op.name in rewrites:
                drafts.append(rewrites[op.name])
            elif op.name not in self.removed:
                drafts.append(self.replaced.get(op.name, op))
        read = {t for d in drafts for t in (d.inputs if isinstance(d, Rewrite) else d.activation_inputs)}
        read |= self.outputs
        built: list[Op] = []
        for draft in drafts:
            if isinstance(draft, Op):
                if draft.type == "DequantizeLinear" and draft.outputs[0] not in read:
                    continue  # every reader now takes the integer tensor
                built.append(draft)
                continue
            d = draft
            built.append(make_op(d.name, d.op_type, d.inputs, d.outputs, d.attrs, self.specs, d.weights))
        built = _mark_float_ops_before_quantize(built)
        lowered = Graph.build(built, self.graph.inputs, [s.name for s in self.graph.outputs], name=self.graph.name)
        log.info("lowered %s: %d ops fused into integer ops, %d ops in all", self.graph.name, len(rewrites), len(built))
        return lowered


def _mark_float_ops_before_quantize(ops: list[Op]) -> list[Op]:
    """Tag (attribute ``mlas.FEEDS_QUANTIZE``) each float op whose output a QuantizeLinear reads
    and whose float32 bits may differ between devices (reductions, transcendentals, division):
    a device that cannot give the reference's bits for it must treat it as a capability gap, or
    partitioned int8 runs would round differently from single-device ones."""
    quantized = {op.inputs[0] for op in ops if op.type == "QuantizeLinear"}
    marked: list[Op] = []
    for op in ops:
        floats = [s for s in op.output_specs if s.dtype in ("float32", "float16", "float64")]
        if (floats and op.type not in mlas.SAME_BITS_EVERYWHERE and op.type not in ("QuantizeLinear", "DequantizeLinear")
                and any(t in quantized for t in op.outputs)):
            op = dataclasses.replace(op, attrs=types.MappingProxyType({**op.attrs, mlas.FEEDS_QUANTIZE: 1}))
        marked.append(op)
    return marked


# ----------------------------------------------------------------------------- the rules
def lower_qdq(graph: Graph, int8_allowed: bool = True) -> Graph:
    """The integer form of a QDQ graph: QDQ groups fused into QLinear ops (see the module docstring).

    ``int8_allowed`` mirrors onnxruntime's session option ``session.qdqisint8allowed``: True
    (its ARM default, and hetero's) fuses int8 activations like uint8 ones; False (its x86-64
    default) reproduces which groups x86 onnxruntime fuses: Conv and MatMul only with uint8
    activations, after retyping to uint8 the int8 QDQ pairs it retypes.
    """
    _check_scales(graph)
    return Lowering(graph, int8_allowed).run()


def _check_scales(graph: Graph) -> None:
    """Refuse a Q/DQ whose constant scale is not finite: its integers mean
    nothing (onnxruntime's quantize_static writes scale inf for a tensor that holds a causal
    mask's -inf, and its own run of such a model is garbage too)."""
    for op in graph.ops_in_order():
        if op.type not in ("QuantizeLinear", "DequantizeLinear") or op.inputs[1] not in op.weights:
            continue
        scale = np.asarray(op.weights[op.inputs[1]], np.float32)
        if not np.isfinite(scale).all():
            raise InputError(
                f"model {graph.name}: node {op.name} has scale {scale.reshape(-1)[:3].tolist()} for tensor "
                f"'{op.inputs[0]}': not finite (a calibrated range that held an infinity, "
                f"such as an attention mask's -inf?); quantize that tensor's ops in float (onnxruntime: "
                f"nodes_to_exclude) or quantize the fp32 model with hetero quantize"
            )


def fold_constant_dequantize(graph: Graph) -> Graph:
    """The QDQ graph in float: every DequantizeLinear of a constant (a weight, a bias) becomes the
    float constant it computes, exactly as the reference computes it; activations keep their
    QuantizeLinear -> DequantizeLinear pairs. Devices whose float kernels need constant weights
    (cpu Conv, say) can then run a QDQ model at fp32."""
    from hetero.backends.reference import reference_op

    outputs = {spec.name for spec in graph.outputs}
    folded: dict[str, np.ndarray] = {}
    specs: dict[str, TensorSpec] = {s.name: s for s in graph.inputs}
    built: list[Op] = []
    for op in graph.ops_in_order():
        if op.type == "DequantizeLinear" and not op.activation_inputs and op.outputs[0] not in outputs:
            folded[op.outputs[0]] = reference_op(op, [])[0]
            continue
        if any(t in folded for t in op.inputs):
            weights = {**op.weights, **{t: folded[t] for t in op.inputs if t in folded}}
            op = make_op(op.name, op.type, op.inputs, op.outputs, op.attrs, specs, weights)
        specs.update({s.name: s for s in op.output_specs})
        built.append(op)
    if not folded:
        return graph
    log.info("%s: %d constant DequantizeLinear ops folded into float weights", graph.name, len(folded))
    return Graph.build(built, graph.inputs, [s.name for s in graph.outputs], name=graph.name)
