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
from hetero.graph import Graph
from hetero.model_source import load_onnx, quantized_form
from hetero.onnx_import import import_onnx

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
    from hetero.quant import calibration_for, quantize_model

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
    from hetero.lowering import fold_constant_dequantize, lower_qdq

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


def cost_model_for(graph: Graph, profile_path: str | None, device_names: list[str], precision: str):
    """A ProfileCostModel over measured devices (from the profile) and catalog spec devices, plus
    each device's memory capacity in bytes."""
    from hetero.catalog import load_catalog
    from hetero.cost_profile import ProfileCostModel
    from hetero.errors import ProfileError
    from hetero.profile import load_profile

    profile = load_profile(profile_path) if profile_path else None
    catalog = load_catalog()
    specs, memory = {}, {}
    for name in device_names:
        if profile is not None and name in profile.devices:
            memory[name] = int(profile.devices[name].identity.get("memory_bytes") or 0) or None
        elif name in catalog:
            specs[name] = catalog[name]
            memory[name] = catalog[name].memory_bytes
        else:
            known = sorted(set(profile.devices if profile else ()) | set(catalog))
            raise ProfileError(f"device '{name}' is in neither the profile nor the catalog (known: {', '.join(known)})")
    if profile is not None and profile.precision != precision:
        raise ProfileError(f"{profile_path}: measured at {profile.precision}, but {precision} was asked; re-profile with --precision {precision}")
    cost = ProfileCostModel(graph, profile, device_names, precision=precision, specs=specs)
    return cost, {k: v for k, v in memory.items() if v}


def quick_profile(graph: Graph, devices: list, model: str, precision: str):
    """A fast profile (a few launches per op, small transfers) when the user gave none."""
    from hetero.profiler import Budget, profile_graph

    log.warning("no --profile given: measuring each op briefly on %s to plan (hetero profile gives better plans)",
                ", ".join(d.name for d in devices))
    budget = Budget(warmup=1, min_count=3, max_count=20, target_spread=0.2, seconds_per_op=0.02)
    return profile_graph(graph, devices, model, precision, budget, transfer_sizes=[4096, 65536, 1 << 20])
