"""MODEL arguments: an ONNX path or builtin:NAME, resolved to an ONNX model or a Graph."""

from __future__ import annotations

from typing import Mapping

import onnx

from hetero.ir import models
from hetero.errors import ModelError
from hetero.ir.graph import Graph
from hetero.ir.onnx_import import import_onnx, load_model
from hetero.resources import seed_model_path

BUILTIN_PREFIX = "builtin:"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_OPS = frozenset({"QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})
"""Integer op types besides QLinear*: a model holding any of them has no float graph."""


def builtin_names() -> list[str]:
    """Names accepted after builtin: (seed-cnn is the trained seed model)."""
    return sorted(["seed-cnn", *models.BUILTINS])


def load_onnx(spec: str) -> onnx.ModelProto:
    """The ONNX model a MODEL argument names."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        if name == "seed-cnn":
            return load_model(seed_model_path())
        if name not in models.BUILTINS:
            raise ModelError(f"unknown builtin model '{name}' (available: {', '.join(builtin_names())})")
        return models.BUILTINS[name]()
    return load_model(spec)


def quantized_form(model: onnx.ModelProto) -> str | None:
    """How a model is quantized: "integer" when it holds QLinear*/integer ops, "qdq" when it holds
    QuantizeLinear/DequantizeLinear only, None for a float model."""
    types = {node.op_type for node in model.graph.node}
    if any(t.startswith("QLinear") for t in types) or types & INTEGER_OPS:
        return "integer"
    return "qdq" if types & QDQ_OPS else None


def load_graph(spec: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """The validated Graph a MODEL argument names."""
    return import_onnx(load_onnx(spec), input_shapes=input_shapes, label=spec)
