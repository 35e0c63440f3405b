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
from typing import Mapping

import numpy as np
import onnx

from hetero.errors import InputError
from hetero.ir.graph import Graph
from hetero.ir.source import load_onnx, quantized_form
from hetero.ir.onnx_file import check_fixed_dims
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


def quantized_onnx(spec: str, model: onnx.ModelProto | None = None, graph: Graph | None = None,
                   input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> onnx.ModelProto:
    """The QDQ model for a MODEL argument: as it is if already quantized, else calibrated (on the
    data the model registry names for it) and quantized. ``model`` and ``graph``, when given, are
    the MODEL's ONNX and imported graph, so that neither is loaded again."""
    from hetero.quant.calibrate import calibration_for
    from hetero.quant.qdq import quantize_model

    model = model if model is not None else load_onnx(spec)
    if has_qdq(model):
        return model
    graph = graph if graph is not None else import_onnx(model, input_shapes=input_shapes, label=spec)
    return quantize_model(graph, calibration_for(spec, graph))


def load_with_precision(spec: str, precision: str | None = None,
                        input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> tuple[Graph, str]:
    """The graph to run and its precision (the model's own when ``precision`` is None): fp32 as
    imported (a QDQ graph with its weights dequantized), or int8 lowered to integer ops. The
    MODEL is loaded and imported once; an fp32 model asked at int8 is quantized from that graph,
    and its QDQ model imported to be lowered. ``input_shapes`` fixes symbolic input dimensions
    (--input-shape); the QDQ model keeps them symbolic and is imported with the same shapes."""
    model = load_onnx(spec)
    if input_shapes:
        check_fixed_dims(model, input_shapes, spec)
    precision = resolve_precision(spec, model, precision)
    from hetero.quant.lowering import fold_constant_dequantize, lower_qdq

    def imported(proto: onnx.ModelProto) -> Graph:
        return import_onnx(proto, input_shapes=input_shapes, label=spec)

    if has_qdq(model):
        graph = imported(model)
        if precision == "int8":
            return lower_qdq(graph), precision
        log.info("%s is quantized; running its QDQ graph in float semantics", spec)
        return fold_constant_dequantize(graph), precision
    if precision == "fp32":
        return imported(model), precision
    qdq = quantized_onnx(spec, model, imported(model))
    return lower_qdq(imported(qdq)), precision


def shapes_from_data(spec: str, arrays: Mapping[str, np.ndarray] | np.ndarray,
                     given: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Input shapes for a model's inputs with symbolic dimensions, read from the data to be fed:
    an array of the input's rank is one request, one of rank + 1 a stack of requests (its first
    axis). Inputs in ``given`` (--input-shape) keep the shape given."""
    shapes = dict(given or {})
    graph = load_onnx(spec).graph
    constants = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in constants]
    if not isinstance(arrays, Mapping):  # one .npy: the model's single input
        arrays = {inputs[0].name: arrays} if len(inputs) == 1 else {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if value.name in shapes or value.name not in arrays or all(d.HasField("dim_value") for d in dims):
            continue
        shape = tuple(int(d) for d in np.shape(arrays[value.name]))
        if len(shape) == len(dims) + 1:
            shape = shape[1:]
        if len(shape) == len(dims):
            shapes[value.name] = shape
    return shapes


def load_for_precision(spec: str, precision: str | None = None,
                       input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """The graph to run at ``precision`` (the model's own when None); see :func:`load_with_precision`."""
    return load_with_precision(spec, precision, input_shapes)[0]
