"""Post-training static quantization: a QDQ ONNX model from a Graph and a calibration set.

:func:`quantize_model` takes the Graph it is given (imported once by the caller, with hetero's
importer: BN folded, constants folded), calibrates it (:mod:`hetero.quant.calibrate`) and writes
a standard QDQ graph with the math of :mod:`hetero.quant.math`: a QuantizeLinear ->
DequantizeLinear pair on every float tensor that a quantizable op reads or writes (graph inputs
included), int8 per-channel weights and int32 biases behind DequantizeLinear, and float I/O
with the original names. A Relu, or a Clip whose bounds the output range implies, right after
a quantized Conv/Gemm/MatMul/Add/pool/Concat is removed: the producer's output takes the
activation's calibrated range, whose quantization saturates exactly as the activation would
(onnxruntime's quantizer does the same). Data-movement ops (MaxPool, Reshape, Flatten, ...)
reuse their input's scale and zero point so the integer lowering can drop their QDQ pair.
Every other op stays in float between DQ and Q: in a transformer, LayerNormalization,
Softmax, GELU (Erf or Gelu), the attention scale Mul, Where; MatMul of two activations
(attention's Q K^T and A V) gets per-tensor QDQ on both inputs. A tensor that holds an
attention mask's infinities (see :mod:`hetero.quant.calibrate`) is never quantized, and the
ops on it stay float. A tensor that is 0 on every calibration input, or whose range is below
the scale floor, is quantized with a warning naming it.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetero.errors import InputError, UnsupportedOpError
from hetero.ir.graph import Graph, Op
from hetero.ir.models import IR_VERSION, OPSET_VERSION
from hetero.quant.calibrate import Range, calibrate
from hetero.quant.math import (
    SCALE_FLOOR,
    activation_bounds,
    activation_params,
    bias_weight_scales,
    check_activation_dtype,
    quantize_array,
    quantize_bias,
    range_problem,
    weight_params,
)

log = logging.getLogger(__name__)

COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "Add", "AveragePool", "GlobalAveragePool", "Concat"}
MOVE_OPS = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Identity"}


# ----------------------------------------------------------------------------- what to quantize


def _is_float(op: Op, tensor: str) -> bool:
    spec = dict(zip(op.inputs, op.input_specs)).get(tensor)
    return spec is not None and spec.dtype == "float32"


def _quantizable(op: Op) -> bool:
    """Whether the op gets DQ inputs and Q outputs (its integer form exists)."""
    if not op.inputs or op.inputs[0] in op.weights or not _is_float(op, op.inputs[0]):
        return False
    weight = op.weights.get(op.inputs[1]) if len(op.inputs) > 1 else None
    bias = op.inputs[2] if len(op.inputs) > 2 and op.inputs[2] else None
    if op.type in MOVE_OPS or op.type in ("AveragePool", "GlobalAveragePool"):
        return True
    if op.type == "Conv":
        return weight is not None and weight.ndim == 4 and (bias is None or bias in op.weights)
    if op.type == "Gemm":
        if weight is None or weight.ndim != 2:
            return False
        columns = weight.shape[0] if op.attrs.get("transB", 0) else weight.shape[1]
        return bias is None or (bias in op.weights and op.weights[bias].size == columns and op.weights[bias].ndim <= 2)
    if op.type == "MatMul":
        return (weight is not None and weight.ndim == 2) or (weight is None and _is_float(op, op.inputs[1]))
    if op.type in ("Add", "Concat"):
        return all(_is_float(op, t) for t in op.inputs if t)
    return False


def _implied(op: Op, params: tuple[np.float32, np.integer]) -> bool:
    """Whether quantizing with ``params`` saturates exactly where this Relu/Clip would clip."""
    info = np.iinfo(params[1].dtype)
    return activation_bounds(op, float(params[0]), int(params[1]), str(params[1].dtype)) == (info.min, info.max)


def quantized_inputs(op: Op) -> list[str]:
    """The activation inputs of a quantizable op that get a DequantizeLinear."""
    if op.type in MOVE_OPS:
        return [op.inputs[0]]
    return [t for t in op.activation_inputs if _is_float(op, t)]


class _Plan:
    """Which activations fold into their producer and the (scale, zero point) of each quantized tensor."""

    def __init__(self, graph: Graph, ranges: Mapping[str, Range], dtype: str) -> None:
        self.ops = list(graph.ops_in_order())
        infinite = {t for t, (low, high) in ranges.items() if not (np.isfinite(low) and np.isfinite(high))}
        self.quantizable = {
            op.name for op in self.ops
            if _quantizable(op) and not infinite.intersection([*quantized_inputs(op), *op.outputs])
        }
        if infinite:
            log.info("quantizing %s: %d tensors hold a mask's infinities; the ops on them stay float: %s",
                     graph.name, len(infinite), ", ".join(sorted(infinite)[:5]))
        self.rename: dict[str, str] = {}
        self.fused: set[str] = set()
        self.params: dict[str, tuple[np.float32, np.integer]] = {}
        self.ranges = ranges
        producer = {t: op for op in self.ops for t in op.outputs}
        consumers = Counter(t for op in self.ops for t in op.activation_inputs)
        outputs = {s.name for s in graph.outputs}

        def params_of(tensor: str) -> tuple[np.float32, np.integer]:
            if tensor not in ranges:
                raise UnsupportedOpError(f"tensor '{tensor}' of model {graph.name} was never seen in calibration")
            return activation_params(*ranges[tensor], dtype=dtype)

        for op in self.ops:
            if op.type not in ("Relu", "Clip") or op.inputs[0] in op.weights:
                continue
            source = producer.get(op.inputs[0])
            if (
                source is not None
                and source.name in self.quantizable
                and source.type in COMPUTE_OPS
                and consumers[op.inputs[0]] == 1
                and op.inputs[0] not in outputs
                and _implied(op, params_of(op.outputs[0]))
            ):
                self.rename[op.inputs[0]] = op.outputs[0]
                self.fused.add(op.name)
        calibrated: list[str] = []
        for op in self.ops:
            if op.name not in self.quantizable:
                continue
            for tensor in quantized_inputs(op):
                if tensor not in self.params:
                    self.params[tensor] = params_of(tensor)
                    calibrated.append(tensor)
            for tensor in op.outputs:
                final = self.final(tensor)
                self.params[final] = self.params[op.inputs[0]] if op.type in MOVE_OPS else params_of(final)
                if op.type not in MOVE_OPS:
                    calibrated.append(final)
        _warn_degenerate(graph.name, {t: ranges[t] for t in calibrated}, dtype)

    def final(self, tensor: str) -> str:
        """The tensor's name once fused activations are gone."""
        return self.rename.get(tensor, tensor)


def _warn_degenerate(model: str, ranges: Mapping[str, Range], dtype: str) -> None:
    """One warning per kind of degenerate calibrated range, naming the tensors (the first five)."""
    found: dict[str, list[str]] = {"zero": [], "tiny": []}
    for tensor, (low, high) in ranges.items():
        problem = range_problem(low, high, dtype)
        if problem == "zero":
            found["zero"].append(f"'{tensor}'")
        elif problem == "tiny":
            found["tiny"].append(f"'{tensor}' [{low:.3g}, {high:.3g}]")
    what = {
        "zero": "0 on every calibration input, quantized with scale 1",
        "tiny": f"a range below {SCALE_FLOOR * 255:.3g}, quantized with the floor scale {SCALE_FLOOR:.3g} to few levels",
    }
    for problem, tensors in found.items():
        if tensors:
            shown = ", ".join(tensors[:5]) + (f" and {len(tensors) - 5} more" if len(tensors) > 5 else "")
            log.warning("quantizing %s: %s: %s (check the calibration data)", model, what[problem], shown)


# ----------------------------------------------------------------------------- the QDQ writer


def _onnx_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Op attributes as helper.make_node takes them."""

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return numpy_helper.from_array(value)
        return list(value) if isinstance(value, tuple) else value

    return {key: convert(value) for key, value in attrs.items()}


class _Writer:
    """Emits the QDQ ONNX nodes and initializers of a planned graph, in topological order."""

    def __init__(self, graph: Graph, plan: _Plan, opset: int, dtype: str) -> None:
        self.graph, self.plan, self.opset, self.dtype = graph, plan, opset, dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.read: dict[str, str] = {}  # quantized tensor -> the DequantizeLinear output its consumers read
        self.weight_scales: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}  # op -> scales, zero points, axis
        self.outputs = {spec.name for spec in graph.outputs}
        self.used = {spec.name for spec in graph.inputs}
        for op in plan.ops:
            self.used.update([op.name, *op.inputs, *op.outputs])

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def constant(self, base: str, array: np.ndarray, exact: bool = False) -> str:
        name = base if exact else self.fresh(base)
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def qdq(self, tensor: str, source: str) -> None:
        """QuantizeLinear -> DequantizeLinear on a tensor, with its planned scale and zero point."""
        scale, zero_point = self.plan.params[tensor]
        s = self.constant(f"{tensor}_scale", np.asarray(scale, np.float32))
        z = self.constant(f"{tensor}_zero_point", np.asarray(zero_point))
        q = self.fresh(f"{tensor}_quantized")
        dq = tensor if tensor in self.outputs else self.fresh(f"{tensor}_dequantized")
        for op_type, inputs, output in (("QuantizeLinear", [source, s, z], q), ("DequantizeLinear", [q, s, z], dq)):
            self.nodes.append(helper.make_node(op_type, inputs, [output], name=self.fresh(f"{tensor}_{op_type}")))
        self.read[tensor] = dq

    def dequantized_constant(
        self, base: str, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None
    ) -> str:
        """An integer initializer behind a DequantizeLinear; returns the float tensor's name."""
        names = [
            self.constant(f"{base}_quantized", q),
            self.constant(f"{base}_scale", np.asarray(scale, np.float32)),
            self.constant(f"{base}_zero_point", zero_point),
        ]
        out = self.fresh(f"{base}_dequantized")
        attrs = {} if axis is None else {"axis": axis}
        name = self.fresh(f"{base}_DequantizeLinear")
        self.nodes.append(helper.make_node("DequantizeLinear", names, [out], name=name, **attrs))
        return out

    def bias_of(self, op: Op) -> np.ndarray | None:
        """The float bias a Conv/Gemm adds (a Gemm's times its beta), or None."""
        name = op.inputs[2] if op.type in ("Conv", "Gemm") and len(op.inputs) > 2 else ""
        if not name:
            return None
        bias = np.asarray(op.weights[name], np.float32)
        if op.type == "Gemm":
            bias = bias.reshape(bias.shape or (1,)) * np.float32(op.attrs.get("beta", 1.0))
        return bias

    def scales_for(self, op: Op) -> tuple[np.ndarray, np.ndarray, int]:
        """(scales, zero points, axis) of an op's int8 weight, raised where its int32 bias needs it."""
        if op.name in self.weight_scales:
            return self.weight_scales[op.name]
        w = op.weights[op.inputs[1]]
        axis = 0 if op.type == "Conv" or op.attrs.get("transB", 0) else 1
        scales, zero_points = weight_params(w, axis)
        bias = self.bias_of(op)
        if bias is not None:
            x = op.inputs[0]
            reduction = int(np.prod(w.shape[1:])) if op.type == "Conv" else w.shape[1 - axis]
            raised = bias_weight_scales(bias, self.plan.params[x][0], scales, reduction)
            changed = raised != scales
            if not np.isfinite(raised).all():
                raise InputError(f"node {op.name}: bias '{op.inputs[2]}' is too large to quantize against input '{x}' "
                                 f"(scale {self.plan.params[x][0]:.3g}); check the model's weights")
            if changed.any():
                x_max = max(abs(v) for v in self.plan.ranges[x])
                w_max = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis)).reshape(-1)
                share = reduction * x_max * w_max[changed]
                ratio = np.abs(bias.reshape(-1)[changed]) / np.where(share > 0, share, np.finfo(np.float64).tiny)
                log.warning(
                    "quantizing %s: the int32 bias '%s' of %s '%s' would saturate at the scale of its input '%s' "
                    "(range [%.3g, %.3g]): raised the weight scale of %d of %d channels until it fits; there the bias "
                    "is at least %.3g times the largest input contribution",
                    self.graph.name, op.inputs[2], op.type, op.name, x, *self.plan.ranges[x],
                    int(changed.sum()), changed.size, float(ratio.min()),
                )
            scales = raised
        self.weight_scales[op.name] = (scales, zero_points, axis)
        return self.weight_scales[op.name]

    def weight(self, op: Op, slot: int, tensor: str, array: np.ndarray, attrs: dict[str, Any]) -> str:
        """The float input of a quantizable op for a constant: int8 weights, int32 bias or uint8/int8 data."""
        if (op.type, slot) in (("Conv", 1), ("Gemm", 1), ("MatMul", 1)):
            scales, zero_points, axis = self.scales_for(op)
            q = quantize_array(array, scales, zero_points, axis)
            return self.dequantized_constant(tensor, q, scales, zero_points, axis)
        if (op.type, slot) in (("Conv", 2), ("Gemm", 2)):
            bias = self.bias_of(op)
            assert bias is not None
            if op.type == "Gemm":
                attrs["beta"] = 1.0
            q, scales = quantize_bias(bias, self.plan.params[op.inputs[0]][0], self.scales_for(op)[0])
            return self.dequantized_constant(tensor, q, scales, np.zeros(scales.shape, np.int32), q.ndim - 1)
        scale, zero_point = activation_params(float(array.min()), float(array.max()), self.dtype)
        q = quantize_array(array, scale, zero_point)
        return self.dequantized_constant(tensor, q, np.asarray(scale), np.asarray(zero_point), None)

    def write(self) -> None:
        for spec in self.graph.inputs:
            if spec.name in self.plan.params:
                self.qdq(spec.name, spec.name)
        for op in self.plan.ops:
            if op.name not in self.plan.fused:
                self.write_op(op)

    def write_op(self, op: Op) -> None:
        attrs = dict(op.attrs)
        quantizable = op.name in self.plan.quantizable
        inputs = []
        for slot, tensor in enumerate(op.inputs):
            array = op.weights.get(tensor) if tensor else None
            if not tensor:
                inputs.append("")
            elif array is None:
                inputs.append(self.read.get(tensor, tensor))
            elif quantizable and array.dtype == np.float32 and op.type not in MOVE_OPS:
                inputs.append(self.weight(op, slot, tensor, array, attrs))
            else:
                inputs.append(self.constant(tensor, array, exact=True))
        if op.type == "Split" and "split" in attrs and self.opset >= 13:
            inputs = [inputs[0], self.constant(f"{op.name}_split", np.asarray(attrs.pop("split"), np.int64))]
        finals = [self.plan.final(t) for t in op.outputs]
        written = [self.fresh(f"{t}_float") if t in self.plan.params and t in self.outputs else t for t in finals]
        self.nodes.append(helper.make_node(op.type, inputs, written, name=op.name, **_onnx_attrs(attrs)))
        for final, name in zip(finals, written):
            if final in self.plan.params:
                self.qdq(final, name)


def quantize_model(
    graph: Graph,
    calibration: Any,
    method: str = "minmax",
    percentile: float = 99.99,
    activation_dtype: str = "uint8",
    source: str = "calibration data",
) -> onnx.ModelProto:
    """A QDQ ONNX model of ``graph`` (an imported fp32 model): int8 per-channel weights,
    activations calibrated on ``calibration``.

    ``calibration`` is an array of samples (N x input shape) or a list of feed dicts; ``source``
    names it in errors (the file it was read from, say). The model declares the opset and IR
    version the graph was imported from (hetero's builders' for a graph built by hand).
    """
    check_activation_dtype(activation_dtype)
    plan = _Plan(graph, calibrate(graph, calibration, method, percentile, source), activation_dtype)
    opset = int(graph.graph.get("opset", OPSET_VERSION))
    writer = _Writer(graph, plan, opset, activation_dtype)
    writer.write()
    io = [
        [helper.make_tensor_value_info(s.name, helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)), s.shape)
         for s in specs]
        for specs in (graph.inputs, graph.outputs)
    ]
    qdq_graph = helper.make_graph(writer.nodes, graph.name, *io, initializer=list(writer.initializers.values()))
    result = helper.make_model(qdq_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hetero.quant.qdq")
    result.ir_version = int(graph.graph.get("ir_version", IR_VERSION))
    log.info(
        "quantized %s: %d of %d ops quantized, %d activations fused, %d tensors with QDQ (%s, %s)",
        graph.name, len(plan.quantizable), len(plan.ops), len(plan.fused), len(plan.params), activation_dtype, method,
    )
    return result
