"""From a MODEL argument to the graph a device runs, in fp32 or int8.

The precision, when not given, is the model's own: int8 for a model that holds
QuantizeLinear/DequantizeLinear or QLinear* nodes, fp32 otherwise.

int8: a quantized model is lowered as it is; an fp32 model is quantized first (on the digits
for the seed model, on seeded random inputs otherwise), then its QDQ graph is lowered to the
integer QLinear ops.

fp32 asked of a QDQ model runs its QDQ graph in float: each weight's DequantizeLinear is folded
into a float constant and every activation still passes through QuantizeLinear ->
DequantizeLinear, which is what onnxruntime computes for it with graph rewrites off. A model in
integer form (QLinear* ops) has no float graph, and fp32 asked of it is refused.
"""

from __future__ import annotations

import logging

import onnx

from hetero.errors import InputError
from hetero.ir.graph import Graph
from hetero.ir.source import load_onnx, quantized_form
from hetero.ir.onnx_import import import_onnx

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


def has_qdq(model: onnx.ModelProto) -> bool:
    """Whether the model is already quantized (QDQ or QLinear form)."""
    return quantized_form(model) is not None


def model_precision(model: onnx.ModelProto) -> str:
    """The precision a model runs at when none is asked: int8 if it is quantized, else fp32."""
    return "int8" if has_qdq(model) else "fp32"


def resolve_precision(spec: str, model: onnx.ModelProto, precision: str | None = None) -> str:
    """The precision to run MODEL at: the one asked, else the model's own; refuses fp32 for an integer model."""
    if precision is None:
        precision = model_precision(model)
        log.info("%s: running at %s (the model's own precision; pass --precision to choose)", spec, precision)
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    if precision == "fp32" and quantized_form(model) == "integer":
        raise InputError(
            f"{spec} is in integer form (QLinear* ops) and has no float graph to run at fp32; "
            "drop --precision fp32 (int8 is inferred) or pass the fp32 model"
        )
    return precision


def quantized_onnx(spec: str, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The QDQ model for a MODEL argument: as it is if already quantized, else calibrated and quantized."""
    from hetero.quant.qdq import calibration_for, quantize_model

    model = model if model is not None else load_onnx(spec)
    if has_qdq(model):
        return model
    graph = import_onnx(model, label=spec)
    calibration = calibration_for(spec, graph)
    return quantize_model(model, calibration)


def load_with_precision(spec: str, precision: str | None = None) -> tuple[Graph, str]:
    """The graph to run and its precision (the model's own when ``precision`` is None): fp32 as
    imported (a QDQ graph with its weights dequantized), or int8 lowered to integer ops."""
    model = load_onnx(spec)
    precision = resolve_precision(spec, model, precision)
    from hetero.quant.lowering import fold_constant_dequantize, lower_qdq

    if precision == "fp32":
        graph = import_onnx(model, label=spec)
        if has_qdq(model):
            log.info("%s is quantized; running its QDQ graph in float semantics", spec)
            graph = fold_constant_dequantize(graph)
        return graph, precision
    return lower_qdq(import_onnx(quantized_onnx(spec, model), label=spec)), precision


def load_for_precision(spec: str, precision: str | None = None) -> Graph:
    """The graph to run at ``precision`` (the model's own when None); see :func:`load_with_precision`."""
    return load_with_precision(spec, precision)[0]
