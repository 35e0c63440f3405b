"""Post-training static quantization: calibrate with the reference executor, write a QDQ ONNX model.

The math (the seed article's), for a signed or unsigned 8-bit type with range [qmin, qmax]:

- Activations: asymmetric, one scale and zero point per tensor. The calibrated range is
  first widened to include 0 (min <= 0 <= max), then
  ``s = (max - min) / (qmax - qmin)`` and ``z = qmin - round(min / s)``
  (uint8: z = -round(min / s); int8: z = -128 - round(min / s)); an all-zero range gets s = 1,
  and no scale is below ``SCALE_FLOOR`` (2^-60), so that every product of an activation and a
  weight scale (a bias scale, a requantization multiplier's numerator) is a normal float32.
  Quantize: ``q = saturate(round_half_even(x / s) + z)``; dequantize: ``x = (q - z) * s``,
  both in float32 as onnxruntime computes them. 0 is exactly representable (q = z).
- Weights: symmetric int8 per output channel c: ``s[c] = max|w[c]| / 127``, z = 0 (channel
  axis 0 for Conv and for Gemm with transB, axis 1 for Gemm without it and for MatMul).
- Bias: int32 with ``s[c] = s_x * s_w[c]`` and z = 0, so it adds straight into the int32
  accumulator of the integer op. Where ``|b[c]| / s[c]`` plus the largest sum of K products
  (K x 255 x 127) would not fit int32, ``s_w[c]`` is raised to the least scale at which it
  fits (onnxruntime's quantizer raises it likewise), with a warning naming the bias. That
  happens only where the bias outweighs the channel's largest possible input contribution
  about 2^31 / (K x 255 x 127) times over, so the coarser weights cost little. Without it, a
  model whose activations shrink layer by layer (torchvision's GoogLeNet with its random init
  reaches ranges of 1e-11 before its classifier) saturates the classifier's bias and outputs
  one constant.

Calibration runs the fp32 graph op by op and records, per float tensor, its min/max over the
calibration set ("minmax"), or that range clipped to [-t, t] where t is the given percentile
of |x| read from a 2048-bin histogram over [0, max|x|] ("percentile"). NaN or Inf in the
calibration data, or produced by the model on it, is refused. A tensor that is 0 on every
calibration input, or whose range is below the scale floor, is quantized with a warning
naming it.

:func:`quantize_model` imports the model with hetero's importer (BN folded, constants folded)
and writes a standard QDQ graph from the Graph: a QuantizeLinear -> DequantizeLinear pair on
every float tensor that a quantizable op reads or writes (graph inputs included), int8
per-channel weights and int32 biases behind DequantizeLinear, and float I/O with the original
names. A Relu, or a Clip whose bounds the output range implies, right after a quantized
Conv/Gemm/MatMul/Add/pool/Concat is removed: the producer's output takes the activation's
calibrated range, whose quantization saturates exactly as the activation would
(onnxruntime's quantizer does the same). Data-movement ops (MaxPool, Reshape, Flatten, ...)
reuse their input's scale and zero point so the integer lowering can drop their QDQ pair.
Every other op stays in float between DQ and Q.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hetero.backends.reference import check_feeds, run_op
from hetero.errors import InputError, UnsupportedOpError
from hetero.ir.graph import Graph, Op
from hetero.ir.onnx_import import import_onnx, load_model
from hetero.quant.lowering import activation_bounds
from hetero.ir.ops.quantize import dequantize_linear, quantize_linear

log = logging.getLogger(__name__)

ACTIVATION_DTYPES = ("uint8", "int8")
METHODS = ("minmax", "percentile")
HISTOGRAM_BINS = 2048
SCALE_FLOOR = np.float32(2.0**-60)
"""The smallest activation or weight scale: a product of two stays a normal float32 (>= 2^-120)."""
INT32_MAX = int(np.iinfo(np.int32).max)
ACCUMULATOR_TERM = 255 * 127
"""The largest |(q_x - z_x) * q_w| an 8-bit activation times an int8 weight adds to the accumulator."""
COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "Add", "AveragePool", "GlobalAveragePool", "Concat"}
MOVE_OPS = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Identity"}
Feeds = dict[str, np.ndarray]
Range = tuple[float, float]


# ----------------------------------------------------------------------------- the math


def _check_dtype(dtype: str) -> np.iinfo:
    if dtype not in ACTIVATION_DTYPES:
        raise InputError(f"activation dtype {dtype!r} is not supported (use {' or '.join(ACTIVATION_DTYPES)})")
    return np.iinfo(dtype)


def activation_params(minimum: float, maximum: float, dtype: str = "uint8") -> tuple[np.float32, np.integer]:
    """Asymmetric per-tensor (scale, zero point) for values in [minimum, maximum]."""
    info = _check_dtype(dtype)
    low, high = min(float(minimum), 0.0), max(float(maximum), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"cannot quantize the range [{minimum}, {maximum}]: it is not finite")
    scale = np.float32((high - low) / (info.max - info.min))
    if high == low:
        scale = np.float32(1.0)
    scale = max(scale, SCALE_FLOOR)
    zero_point = np.clip(info.min - np.round(low / np.float64(scale)), info.min, info.max)
    return scale, np.dtype(dtype).type(zero_point)


def weight_params(w: np.ndarray, axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 (scales, zero points) per slice along ``axis`` (per tensor when None)."""
    w = np.asarray(w, np.float32)
    reduce = None if axis is None else tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=reduce) if w.size else np.zeros(())
    scales = np.asarray(amax / np.float32(127.0), np.float32)
    scales[amax == 0] = 1.0
    scales = np.maximum(scales, SCALE_FLOOR)
    return scales, np.zeros(scales.shape, np.int8)


def range_problem(minimum: float, maximum: float, dtype: str = "uint8") -> str | None:
    """"zero" for a range that is all 0, "tiny" for one whose scale is below the floor, else None."""
    info = _check_dtype(dtype)
    span = max(float(maximum), 0.0) - min(float(minimum), 0.0)
    if span == 0.0:
        return "zero"
    if span / (info.max - info.min) < SCALE_FLOOR:
        return "tiny"
    return None


def bias_weight_scales(bias: np.ndarray, x_scale: float, w_scales: np.ndarray, reduction: int) -> np.ndarray:
    """Weight scales per output channel, each raised to the least value at which the int32 bias
    ``round(b / (s_x * s_w))`` plus ``reduction`` accumulated products still fits int32."""
    scales = np.asarray(w_scales, np.float32).reshape(-1)
    headroom = min(int(reduction) * ACCUMULATOR_TERM, INT32_MAX // 2)
    budget = float(INT32_MAX - headroom)
    need = np.abs(np.asarray(bias, np.float64).reshape(-1)) / (budget * float(np.float32(x_scale)))
    need = need * (1.0 + 2.0**-20)  # covers float32 rounding of the scale and of s_x * s_w
    return np.where(need > scales, need, scales).astype(np.float32)


def quantize_array(
    x: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | np.integer, axis: int = 1
) -> np.ndarray:
    """q = saturate(round_half_even(x / s) + z), in the zero point's integer type."""
    zp = np.asarray(zero_point)
    return quantize_linear(np.asarray(x, np.float32), np.asarray(scale, np.float32), zp, axis, str(zp.dtype))


def dequantize_array(
    q: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | np.integer | None = None, axis: int = 1
) -> np.ndarray:
    """x = (q - z) * s in float32."""
    zp = None if zero_point is None else np.asarray(zero_point)
    return dequantize_linear(np.asarray(q), np.asarray(scale, np.float32), zp, axis)


def quantize_bias(bias: np.ndarray, x_scale: float, w_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias and its scales s_x * s_w[c] (zero point 0)."""
    scales = (np.float32(x_scale) * np.asarray(w_scales, np.float32).reshape(-1)).astype(np.float32)
    flat = np.asarray(bias, np.float64).reshape(-1)
    info = np.iinfo(np.int32)
    q = np.clip(np.rint(flat / scales.astype(np.float64)), info.min, info.max).astype(np.int32)
    return q.reshape(np.shape(bias)), scales


# ----------------------------------------------------------------------------- calibration


def calibration_feeds(graph: Graph, calibration: Any, source: str = "calibration data") -> list[Feeds]:
    """Checked feed dicts from samples (an N x input shape array or a list of arrays) or feed dicts.

    ``source`` names the data in errors (the file it came from, say). Non-finite values are refused.
    """
    if isinstance(calibration, Mapping):
        calibration = [calibration]
    elif isinstance(calibration, (list, tuple)) and calibration:
        if all(isinstance(c, np.ndarray) for c in calibration):
            calibration = np.stack(calibration)
    if isinstance(calibration, np.ndarray):
        if len(graph.inputs) != 1:
            raise InputError(
                f"model {graph.name} has {len(graph.inputs)} inputs; pass calibration as a list of feed dicts"
            )
        spec = graph.inputs[0]
        samples = np.asarray(calibration)
        if samples.shape[1:] != spec.shape:
            if spec.shape[:1] != (1,) or samples.shape[1:] != spec.shape[1:]:
                raise InputError(
                    f"{source}: calibration array has shape {list(samples.shape)}; model {graph.name} input "
                    f"'{spec.name}' needs N x {list(spec.shape)} (samples stacked along a first axis)"
                )
            samples = samples[:, None]
        calibration = [{spec.name: sample} for sample in samples]
    feeds = []
    for index, feed in enumerate(calibration):
        try:
            feeds.append(check_feeds(graph, feed))
        except InputError as err:
            raise InputError(f"{source}: calibration sample {index}: {err}") from None
    if not feeds:
        raise InputError(f"{source}: the calibration set for model {graph.name} is empty")
    _check_finite(feeds, source)
    return feeds


def _check_finite(feeds: list[Feeds], source: str) -> None:
    """Refuse NaN/Inf in calibration feeds with their count: they would make every range meaningless."""
    bad: Counter[str] = Counter()
    samples: Counter[str] = Counter()
    for feed in feeds:
        for name, array in feed.items():
            if np.issubdtype(array.dtype, np.floating):
                count = int(array.size - np.count_nonzero(np.isfinite(array)))
                bad[name] += count
                samples[name] += count > 0
    for name, count in bad.items():
        if count:
            raise InputError(
                f"{source}: {count} NaN/Inf values in input '{name}' (in {samples[name]} of {len(feeds)} "
                f"calibration samples); calibration needs finite data: drop or replace those samples"
            )


def _visit_tensors(graph: Graph, feeds: Feeds, visit: Any) -> None:
    """Run the graph in numpy and call visit(name, array) on every float32 tensor."""
    values = dict(feeds)
    remaining = Counter(t for op in graph.ops_in_order() for t in op.activation_inputs)
    for name, array in feeds.items():
        if array.dtype == np.float32:
            visit(name, array)
    for op in graph.ops_in_order():
        for tensor, result in zip(op.outputs, run_op(op, values)):
            values[tensor] = result
            if result.dtype == np.float32:
                visit(tensor, result)
        for tensor in op.activation_inputs:
            remaining[tensor] -= 1
            if remaining[tensor] == 0:
                del values[tensor]


def calibrate(
    graph: Graph, calibration: Any, method: str = "minmax", percentile: float = 99.99, source: str = "calibration data"
) -> dict[str, Range]:
    """Per float tensor, its calibrated (min, max) over the calibration set (named ``source`` in errors)."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r} (use {' or '.join(METHODS)})")
    if method == "percentile" and not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    feeds = calibration_feeds(graph, calibration, source)
    ranges: dict[str, Range] = {}
    sample = 0

    def record(name: str, array: np.ndarray) -> None:
        if not np.isfinite(array).all():
            count = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InputError(
                f"model {graph.name}: tensor '{name}' holds {count} NaN/Inf values on calibration sample "
                f"{sample}: the fp32 model overflows on this data; check the calibration inputs' scale"
            )
        low, high = float(array.min(initial=np.inf)), float(array.max(initial=-np.inf))
        old = ranges.get(name, (np.inf, -np.inf))
        ranges[name] = (min(old[0], low), max(old[1], high))

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite results are refused above
        for sample, feed in enumerate(feeds):
            _visit_tensors(graph, feed, record)
    if method == "minmax":
        return ranges
    histograms: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(HISTOGRAM_BINS, np.int64))

    def count(name: str, array: np.ndarray) -> None:
        top = max(abs(ranges[name][0]), abs(ranges[name][1]))
        if top > 0:
            histograms[name] += np.histogram(np.abs(array), bins=HISTOGRAM_BINS, range=(0.0, top))[0]

    for feed in feeds:
        _visit_tensors(graph, feed, count)
    clipped = dict(ranges)
    for name, histogram in histograms.items():
        low, high = ranges[name]
        top = max(abs(low), abs(high))
        cumulative = np.cumsum(histogram) / max(int(histogram.sum()), 1)
        index = int(np.searchsorted(cumulative, percentile / 100.0))
        threshold = top * min(index + 1, HISTOGRAM_BINS) / HISTOGRAM_BINS
        clipped[name] = (max(low, -threshold), min(high, threshold))
    return clipped


def calibration_for(model: str | Path, graph: Graph, n: int = 32, seed: int = 0) -> list[Feeds]:
    """A calibration set: the digits for the seed CNN, seeded standard-normal inputs otherwise."""
    name = str(model)
    shapes = [spec.shape for spec in graph.inputs]
    if "seed" in Path(name).name.replace("_", "-") and shapes == [(1, 1, 28, 28)]:
        from hetero.ir.datasets import calibration_digits

        return calibration_feeds(graph, calibration_digits(n))
    log.warning("calibrating %s on %d seeded random standard-normal inputs (seed %d), not real data; pass --calibration for real accuracy", name, n, seed)
    rng = np.random.default_rng(seed)
    return [{s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in graph.inputs} for _ in range(n)]


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
        self.quantizable = {op.name for op in self.ops if _quantizable(op)}
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
    model: onnx.ModelProto | str | Path,
    calibration: Any,
    method: str = "minmax",
    percentile: float = 99.99,
    activation_dtype: str = "uint8",
    source: str = "calibration data",
) -> onnx.ModelProto:
    """A QDQ ONNX model of ``model``: int8 per-channel weights, activations calibrated on ``calibration``.

    ``calibration`` is an array of samples (N x input shape) or a list of feed dicts; ``source``
    names it in errors (the file it was read from, say).
    """
    _check_dtype(activation_dtype)
    model = model if isinstance(model, onnx.ModelProto) else load_model(model)
    graph = import_onnx(model)
    plan = _Plan(graph, calibrate(graph, calibration, method, percentile, source), activation_dtype)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    writer = _Writer(graph, plan, opset, activation_dtype)
    writer.write()
    io = [
        [helper.make_tensor_value_info(s.name, helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)), s.shape)
         for s in specs]
        for specs in (graph.inputs, graph.outputs)
    ]
    qdq_graph = helper.make_graph(writer.nodes, graph.name, *io, initializer=list(writer.initializers.values()))
    result = helper.make_model(qdq_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hetero.quant.qdq")
    result.ir_version = model.ir_version
    log.info(
        "quantized %s: %d of %d ops quantized, %d activations fused, %d tensors with QDQ (%s, %s)",
        graph.name, len(plan.quantizable), len(plan.ops), len(plan.fused), len(plan.params), activation_dtype, method,
    )
    return result
