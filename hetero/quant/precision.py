"""From a MODEL argument to the graph a device runs, in fp32 or int8.

The precision, when not given, is the model's own: int8 for a model that holds
QuantizeLinear/DequantizeLinear or QLinear* nodes, fp32 otherwise.

int8: a quantized model is lowered as it is; an fp32 model is quantized first (on the
calibration data the model registry names: the digits for the seed model, seeded random inputs
otherwise), then its QDQ graph is lowered to the integer QLinear ops. The MODEL is imported
once either way.

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


def quantized_onnx(spec: str, model: onnx.ModelProto | None = None, graph: Graph | None = None) -> onnx.ModelProto:
    """The QDQ model for a MODEL argument: as it is if already quantized, else calibrated (on the
    data the model registry names for it) and quantized. ``model`` and ``graph``, when given, are
    the MODEL's ONNX and imported graph, so that neither is loaded again."""
    from hetero.quant.calibrate import calibration_for
    from hetero.quant.qdq import quantize_model

    model = model if model is not None else load_onnx(spec)
    if has_qdq(model):
        return model
    graph = graph if graph is not None else import_onnx(model, label=spec)
    return quantize_model(graph, calibration_for(spec, graph))


def load_with_precision(spec: str, precision: str | None = None) -> tuple[Graph, str]:
    """The graph to run and its precision (the model's own when ``precision`` is None): fp32 as
    imported (a QDQ graph with its weights dequantized), or int8 lowered to integer ops. The
    MODEL is loaded and imported once; an fp32 model asked at int8 is quantized from that graph,
    and its QDQ model imported to be lowered."""
    model = load_onnx(spec)
    precision = resolve_precision(spec, model, precision)
    from hetero.quant.lowering import fold_constant_dequantize, lower_qdq

    if has_qdq(model):
        graph = import_onnx(model, label=spec)
        if precision == "int8":
            return lower_qdq(graph), precision
        log.info("%s is quantized; running its QDQ graph in float semantics", spec)
        return fold_constant_dequantize(graph), precision
    if precision == "fp32":
        return import_onnx(model, label=spec), precision
    qdq = quantized_onnx(spec, model, import_onnx(model, label=spec))
    return lower_qdq(import_onnx(qdq, label=spec)), precision


def load_for_precision(spec: str, precision: str | None = None) -> Graph:
    """The graph to run at ``precision`` (the model's own when None); see :func:`load_with_precision`."""
    return load_with_precision(spec, precision)[0]
