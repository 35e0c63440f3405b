"""Reading an ONNX file for import: one-line errors for unreadable files, requested input shapes
checked against the declared ones, and opsets below MIN_OPSET converted with onnx.version_converter."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import onnx
from onnx import numpy_helper

from hetero.errors import ModelError

log = logging.getLogger(__name__)

# Opsets 13 to the newest the installed onnx defines are imported natively; older models are
# converted to MIN_OPSET with onnx.version_converter first.
MIN_OPSET, MAX_OPSET = 13, onnx.defs.onnx_opset_version()


def check_requested_shape(name: str, declared: Any, dims: tuple[int, ...]) -> None:
    """A shape asked for an input (--input-shape) fits its declaration: rank, dims > 0, fixed dims kept."""
    if len(declared) != len(dims):
        raise ModelError(f"input '{name}' has rank {len(declared)}, not {len(dims)} as requested "
                         f"(declared {'x'.join(d.dim_param or str(d.dim_value) if d.HasField('dim_value') or d.dim_param else '?' for d in declared)})")
    for axis, (proto_dim, dim) in enumerate(zip(declared, dims)):
        if dim <= 0:
            raise ModelError(f"input '{name}': dimension {axis} must be > 0, got {dim}")


def check_fixed_dims(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]], label: str = "model") -> None:
    """Refuse a requested input shape (--input-shape) that changes a dimension the model fixes
    (the import API itself may override a fixed batch)."""
    for value in model.graph.input:
        if value.name not in input_shapes:
            continue
        for axis, (proto_dim, dim) in enumerate(zip(value.type.tensor_type.shape.dim, input_shapes[value.name])):
            if proto_dim.HasField("dim_value") and proto_dim.dim_value > 0 and proto_dim.dim_value != int(dim):
                raise ModelError(f"{label}: input '{value.name}': dimension {axis} is fixed at {proto_dim.dim_value} by the model, "
                                 f"not {dim} as requested; change only its symbolic dimensions")


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Read an ONNX file, with a one-line ModelError naming the file on any failure."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: no such model file (it is a folder); pass an .onnx path or a builtin:NAME")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file; pass an .onnx path or a builtin:NAME")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf raises several unrelated types for bad bytes
        raise ModelError(f"{path}: not a readable ONNX model ({type(err).__name__}); the file may be truncated or not ONNX") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: the file parsed as ONNX but holds no graph; it may be truncated or not ONNX")
    return model


def convert_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """An opset < MIN_OPSET model converted to MIN_OPSET, or ModelError saying why not."""
    from onnx import version_converter

    if version < 7:
        model = _channel_prelu_slopes(model)
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # the converter raises RuntimeError or ConvertError per adapter
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"opset {version} could not be converted to opset {MIN_OPSET} by onnx.version_converter "
            f"({first_line}); export the model at opset {MIN_OPSET} or newer"
        ) from None
    log.info("converted the model from opset %d to %d", version, MIN_OPSET)
    return converted


def _channel_prelu_slopes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Before opset 7 a 1-D PRelu slope of C values applied per channel (axis 1); the converter keeps
    it 1-D, which numpy broadcasting would apply to the last axis: reshape it to (C, 1, ..., 1)."""
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*model.graph.input, *model.graph.value_info]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    slopes = {init.name: init for init in model.graph.initializer}
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for node in fixed.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2 or node.input[1] not in slopes:
            continue
        slope = numpy_helper.to_array(slopes[node.input[1]])
        rank = ranks.get(node.input[0], 0)
        if slope.ndim == 1 and slope.size > 1 and rank > 2:
            reshaped = numpy_helper.from_array(slope.reshape((-1,) + (1,) * (rank - 2)), node.input[1])
            for init in fixed.graph.initializer:
                if init.name == node.input[1]:
                    init.CopyFrom(reshaped)
            for value in fixed.graph.input:  # opset-6 models list initializers as inputs too
                if value.name == node.input[1] and value.type.HasField("tensor_type"):
                    dims = value.type.tensor_type.shape.dim
                    del dims[:]
                    for size in reshaped.dims:
                        dims.add().dim_value = size
    return fixed
