"""MODEL arguments: an ONNX path or builtin:NAME, resolved to an ONNX model or a Graph."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import onnx

from hetero.ir import models, transformers
from hetero.errors import HeteroError, ModelError
from hetero.ir.graph import Graph
from hetero.ir.onnx_file import check_fixed_dims, load_model
from hetero.ir.onnx_import import import_onnx
from hetero.resources import seed_model_path

BUILTIN_PREFIX = "builtin:"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INTEGER_OPS = frozenset({"QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})
"""Integer op types besides QLinear*: a model holding any of them has no float graph."""


SEED_CNN = models.Builtin(lambda: load_model(seed_model_path()), calibration="digits")
"""``builtin:seed-cnn``: the trained seed CNN shipped with hetero, calibrated on the digits."""


BUILTINS: dict[str, models.Builtin] = {**models.BUILTINS, **transformers.BUILTINS}
"""Every builtin built node by node: the CNNs of hetero.ir.models and the transformers of hetero.ir.transformers."""


def builtin_names() -> list[str]:
    """Names accepted after builtin: (seed-cnn is the trained seed model)."""
    return sorted(["seed-cnn", *BUILTINS])


def builtin(name: str) -> models.Builtin:
    """The registry entry of builtin:NAME."""
    if name == "seed-cnn":
        return SEED_CNN
    if name not in BUILTINS:
        raise ModelError(f"unknown builtin model '{name}' (available: {', '.join(builtin_names())})")
    return BUILTINS[name]


def load_onnx(spec: str) -> onnx.ModelProto:
    """The ONNX model a MODEL argument names."""
    if spec.startswith(BUILTIN_PREFIX):
        return builtin(spec[len(BUILTIN_PREFIX) :]).build()
    return load_model(spec)


def calibration_of(spec: str) -> str:
    """The calibration data (one of models.CALIBRATIONS) a MODEL argument uses when none is given:
    a builtin's own entry's, the seed CNN's for the shipped seed model file, "random" for any other file."""
    if spec.startswith(BUILTIN_PREFIX):
        return builtin(spec[len(BUILTIN_PREFIX) :]).calibration
    try:
        shipped = Path(spec).resolve() == seed_model_path().resolve()
    except (OSError, HeteroError):  # no shipped seed model here: the file cannot be it
        shipped = False
    return SEED_CNN.calibration if shipped else "random"


def quantized_form(model: onnx.ModelProto) -> str | None:
    """How a model is quantized: "integer" when it holds QLinear*/integer ops, "qdq" when it holds
    QuantizeLinear/DequantizeLinear only, None for a float model."""
    types = {node.op_type for node in model.graph.node}
    if any(t.startswith("QLinear") for t in types) or types & INTEGER_OPS:
        return "integer"
    return "qdq" if types & QDQ_OPS else None


def load_graph(spec: str, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Graph:
    """The validated Graph a MODEL argument names."""
    model = load_onnx(spec)
    if input_shapes:
        check_fixed_dims(model, input_shapes, spec)
    return import_onnx(model, input_shapes=input_shapes, label=spec)
