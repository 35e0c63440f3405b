"""From a MODEL argument to the graph a device runs, in fp32 or int8.

int8: a model that already holds QuantizeLinear/DequantizeLinear nodes is lowered as it is;
an fp32 model is quantized first (on the digits for the seed model, on seeded random inputs
otherwise), then its QDQ graph is lowered to the integer QLinear ops.
"""

from __future__ import annotations

import logging

import onnx

from hetero.errors import InputError
from hetero.graph import Graph
from hetero.model_source import load_onnx
from hetero.onnx_import import import_onnx

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


def has_qdq(model: onnx.ModelProto) -> bool:
    """Whether the model is already quantized (QDQ or QLinear form)."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def quantized_onnx(spec: str, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The QDQ model for a MODEL argument: as it is if already quantized, else calibrated and quantized."""
    from hetero.quant import calibration_for, quantize_model

    model = model if model is not None else load_onnx(spec)
    if has_qdq(model):
        return model
    graph = import_onnx(model, label=spec)
    calibration = calibration_for(spec, graph)
    return quantize_model(model, calibration)


def load_for_precision(spec: str, precision: str) -> Graph:
    """The graph to run: fp32 as imported, or int8 lowered to integer ops."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}' (use {' or '.join(PRECISIONS)})")
    model = load_onnx(spec)
    if precision == "fp32":
        if has_qdq(model):
            log.info("%s is quantized; running its QDQ graph in float semantics", spec)
        return import_onnx(model, label=spec)
    from hetero.lowering import lower_qdq

    return lower_qdq(import_onnx(quantized_onnx(spec, model), label=spec))
