"""What a kernel profile samples: configurations drawn from real architectures' shapes, new ones
around a configuration, and the small graph that times one the way a compiled plan runs it.

A configuration is a plain dict (JSON-safe ints and strings): ``family`` (which op and form:
conv, pointwise, depthwise, stem, grouped, gemm, matmul, maxpool, avgpool, globalpool, add, mul,
concat, quantize, dequantize, lookup and gated (the float tails a cpu plan fuses: DequantizeLinear ->
an activation -> QuantizeLinear, and QuantizeLinear(DequantizeLinear(x) * gate); the op timed is
the QuantizeLinear, the whole fused step), flatten, reshape, transpose, slice; fp32: conv, pointwise, depthwise,
gemm, relu, clip, add, maxpool, avgpool, globalpool, concat, flatten, reshape, transpose, slice), ``precision`` and the shape: ``cin``, ``cout``,
``h``, ``w``, ``k``, ``stride``, ``group``, ``dtype`` (8-bit activations), ``relu``, ``rows``, ``parts``.
The prior's channel counts, image sizes, kernel sizes, strides and groups are those of resnet,
mobilenet v2/v3, squeezenet, shufflenet v2, inception/googlenet and efficientnet.

:func:`build_sample` makes the op and a graph around it: an int8 op whose 4-D inputs a model's
plan gets channels-last (convolutions, pools, adds, concats) reads them from a QuantizeLinear
(which writes channels-last), so the plan picks the step it picks inside a model; other ops
read the graph input directly. Constants are random, of the dtypes and granularity (per-channel
weight scales, zero weight zero points, int32 bias) hetero's quantizer gives.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from hetero.ir.graph import Graph, Op, TensorSpec, make_op

CHANNELS = (8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 116, 120, 128, 144, 160, 176, 192, 208, 232, 240, 256,
            288, 320, 384, 448, 464, 480, 512, 576, 672, 768, 960, 1024, 1152, 1280, 2048)
SPATIAL = (7, 8, 10, 12, 13, 14, 17, 19, 24, 27, 28, 35, 38, 48, 55, 56, 71, 73, 112, 147, 224)
GROUPS = (2, 3, 4, 8, 32)
IMAGE_SIZES = (28, 32, 64, 96, 112, 128, 160, 192, 224, 256, 299)  # the inputs CNNs quantize (224 most often)
MAX_FLOPS = 1.5e9  # one sample stays well under ~20 ms on one core
MAX_ELEMENTS = 1 << 22  # activation elements of one tensor
FLUSH_MIN_BYTES, FLUSH_MAX_BYTES = 1 << 18, 1 << 26  # bytes through the caches between two runs (log-uniform)

INT8_FAMILIES: dict[str, float] = {  # family -> share of the prior
    "conv": 0.16, "pointwise": 0.16, "depthwise": 0.12, "stem": 0.03, "grouped": 0.05, "gemm": 0.04, "matmul": 0.02,
    "maxpool": 0.05, "avgpool": 0.03, "globalpool": 0.04, "add": 0.06, "mul": 0.04, "concat": 0.05, "quantize": 0.04,
    "dequantize": 0.03, "lookup": 0.04, "gated": 0.03, "flatten": 0.02, "to_nhwc": 0.03, "to_nchw": 0.03, "reshape": 0.01, "transpose": 0.02, "slice": 0.01,
}
FP32_FAMILIES: dict[str, float] = {
    "conv": 0.2, "pointwise": 0.18, "depthwise": 0.12, "gemm": 0.06, "relu": 0.08, "clip": 0.06, "add": 0.08,
    "maxpool": 0.06, "avgpool": 0.03, "globalpool": 0.05, "concat": 0.05, "flatten": 0.03, "reshape": 0.01,
    "transpose": 0.02, "slice": 0.01,
}
LAYOUT_FAMILIES = ("to_nhwc", "to_nchw")  # conversions the plan inserts between layouts, timed alone
NHWC_CONTEXT = ("conv", "pointwise", "depthwise", "stem", "grouped", "maxpool", "avgpool", "globalpool", "add", "mul", "concat",
                "lookup", "gated")
TAIL_ACTIVATIONS = ("HardSwish", "Sigmoid", "Swish", "Tanh", "HardSigmoid")  # lookup samples' float op (Swish: x * Sigmoid(x))


def families(precision: str) -> dict[str, float]:
    return INT8_FAMILIES if precision == "int8" else FP32_FAMILIES


def _pick(rng: np.random.Generator, values: tuple, weights: tuple[float, ...] | None = None) -> Any:
    p = None if weights is None else np.asarray(weights, np.float64) / sum(weights)
    return values[int(rng.choice(len(values), p=p))]


def _size(rng: np.random.Generator, low: int = 1, high: int = 224) -> int:
    return int(_pick(rng, tuple(s for s in SPATIAL if low <= s <= high)))


def draw_config(family: str, precision: str, rng: np.random.Generator) -> dict[str, Any]:
    """One configuration of a family from the prior (resampled until it fits the size bounds)."""
    for _ in range(50):
        config = _draw(family, precision, rng)
        if fits(config):
            return config
    return config


STAGE_CHANNELS = ((112, 8, 96), (56, 16, 288), (28, 24, 576), (14, 48, 1152), (7, 96, 2048))
"""(image size at or above, fewest, most channels): real networks widen as they downsample."""


def _channels(rng: np.random.Generator, h: int) -> int:
    """Channels for an image of size h: within that stage's range of real networks (80%), else any."""
    if rng.random() < 0.8:
        low, high = next(((lo, hi) for size, lo, hi in STAGE_CHANNELS if h >= size), (96, 2048))
        return int(_pick(rng, tuple(n for n in CHANNELS if low <= n <= high)))
    return int(_pick(rng, CHANNELS))


def _draw(family: str, precision: str, rng: np.random.Generator) -> dict[str, Any]:
    dtype = _pick(rng, ("uint8", "int8"), (0.85, 0.15)) if precision == "int8" else "float32"
    h = _size(rng)
    c = dict(family=family, precision=precision, dtype=dtype, cin=_channels(rng, h), h=h, w=h, relu=int(rng.random() < 0.6))
    c["cout"] = c["cin"] if rng.random() < 0.35 else _channels(rng, h)
    c["flush_bytes"] = int(math.exp(rng.uniform(math.log(FLUSH_MIN_BYTES), math.log(FLUSH_MAX_BYTES))))
    c["k"], c["stride"], c["group"] = 1, 1, 1
    if family == "conv":
        c["k"] = int(_pick(rng, (3, 5, 7), (0.85, 0.1, 0.05)))
        c["stride"] = int(_pick(rng, (1, 2), (0.8, 0.2)))
    elif family == "pointwise":
        c["stride"] = int(_pick(rng, (1, 2), (0.92, 0.08)))
    elif family == "depthwise":
        c["k"] = int(_pick(rng, (3, 5, 7), (0.75, 0.2, 0.05)))
        c["stride"] = int(_pick(rng, (1, 2), (0.7, 0.3)))
        c["cout"] = c["group"] = c["cin"]
    elif family == "stem":
        c["cin"] = int(_pick(rng, (1, 3), (0.15, 0.85)))
        c["cout"] = int(_pick(rng, (8, 16, 24, 32, 40, 48, 64)))
        c["k"] = int(_pick(rng, (3, 5, 7), (0.6, 0.1, 0.3)))
        c["stride"] = int(_pick(rng, (1, 2), (0.2, 0.8)))
        c["h"] = c["w"] = _size(rng, 24, 224)
    elif family == "grouped":
        g = int(_pick(rng, GROUPS))
        c["group"] = g
        c["cin"] = g * max(1, c["cin"] // g)
        c["cout"] = g * max(1, c["cout"] // g)
        c["k"] = int(_pick(rng, (1, 3), (0.4, 0.6)))
        c["stride"] = int(_pick(rng, (1, 2), (0.8, 0.2)))
    elif family in ("gemm", "matmul"):
        c["rows"] = 1 if family == "gemm" else int(_pick(rng, (1, 4, 16, 49, 196)))
        c["cin"] = int(_pick(rng, (64, 128, 256, 384, 512, 576, 768, 960, 1024, 1280, 2048)))
        c["cout"] = int(_pick(rng, (10, 100, 128, 256, 512, 1000, 1024)))
    elif family in ("maxpool", "avgpool"):
        c["k"], c["stride"], c["pad"] = _pick(rng, ((3, 2, 1), (2, 2, 0), (3, 2, 0), (3, 1, 1)), (0.45, 0.2, 0.2, 0.15))
        c["ceil"] = int(c["pad"] == 0 and c["k"] == 3)  # squeezenet's and googlenet's ceil_mode pools
    elif family == "mul":
        c["broadcast"] = int(rng.random() < 0.6)  # squeeze-and-excitation: (N, C, H, W) * (N, C, 1, 1)
    elif family == "concat":
        c["parts"] = int(_pick(rng, (2, 3, 4), (0.6, 0.15, 0.25)))
    elif family == "lookup":
        c["act"] = str(_pick(rng, TAIL_ACTIVATIONS, (0.35, 0.15, 0.3, 0.1, 0.1)))
    elif family == "gated":
        c["broadcast"] = int(rng.random() < 0.85)  # a per-(image, channel) gate; else a constant one
    elif family == "quantize" and rng.random() < 0.6:  # a CNN quantizes its image input: 1 or 3 channels, large
        c["cin"] = c["cout"] = int(_pick(rng, (1, 3), (0.2, 0.8)))
        c["h"] = c["w"] = int(_pick(rng, IMAGE_SIZES, (1, 1, 1, 1, 2, 1, 1, 1, 6, 1, 1)))
    elif family == "dequantize":
        c["rows"] = 1
        c["cout"] = int(_pick(rng, (10, 100, 1000, 1024)))
    elif family == "flatten":
        c["h"] = c["w"] = 1
    elif family in ("reshape", "transpose", "slice"):  # shufflenet's channel shuffle and split
        c["group"] = int(_pick(rng, (2, 3, 4, 8), (0.6, 0.1, 0.2, 0.1)))
        c["cin"] = c["cout"] = c["group"] * max(1, c["cin"] // c["group"])
    elif family in LAYOUT_FAMILIES and precision == "int8":
        c["dtype"] = "uint8"
    return c


def fits(config: Mapping[str, Any]) -> bool:
    """Whether a configuration builds a valid op within the sample size bounds."""
    k, s, h = config["k"], config["stride"], config["h"]
    pad = config.get("pad", k // 2)
    if h + 2 * pad < k or (h + 2 * pad - k) // s + 1 < 1:
        return False
    elements = max(config["cin"], config["cout"]) * h * config["w"] * max(1, config.get("parts", 1))
    if config["family"] in ("gemm", "matmul", "dequantize"):
        return config.get("rows", 1) * config["cin"] * config["cout"] * 2 <= MAX_FLOPS
    if elements > MAX_ELEMENTS:
        return False
    ho = (h + 2 * pad - k) // s + 1
    flops = 2.0 * ho * ho * config["cout"] * (config["cin"] // config["group"]) * k * k
    return flops <= MAX_FLOPS


def _near_channels(n: int, rng: np.random.Generator) -> int:
    if n <= 3:
        return n
    scaled = n * math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    step = 8 if n >= 32 else 4 if n >= 8 else 1
    return max(step, int(round(scaled / step)) * step)


def perturb(config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A configuration near ``config``: channels x0.7..1.4 (kept multiples of 8 or 4), the image
    size +-30%, the rest (family, kernel, stride, groups, dtype) as it was."""
    for _ in range(20):
        c = dict(config)
        c["cin"] = _near_channels(int(c["cin"]), rng)
        c["cout"] = _near_channels(int(c["cout"]), rng)
        if c["family"] == "depthwise":
            c["cout"] = c["group"] = c["cin"]
        if c["family"] == "grouped":
            g = int(c["group"])
            c["cin"], c["cout"] = g * max(1, c["cin"] // g), g * max(1, c["cout"] // g)
        if c["h"] > 1:
            c["h"] = c["w"] = max(2, int(round(c["h"] * math.exp(rng.uniform(-0.35, 0.35)))))
        if "rows" in c and c["rows"] > 1:
            c["rows"] = max(1, int(round(c["rows"] * math.exp(rng.uniform(-0.5, 0.5)))))
        if fits(c):
            return c
    return dict(config)


# --- building the op and its graph ---------------------------------------------------------


def _qparams(rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    info = np.iinfo(dtype)
    zero = int(rng.integers(0, 40)) if dtype == "uint8" else int(rng.integers(-20, 20))
    return np.asarray(rng.uniform(0.005, 0.05), np.float32), np.asarray(max(info.min, zero), dtype)


def _spatial_attrs(config: Mapping[str, Any]) -> dict[str, Any]:
    k, s = int(config["k"]), int(config["stride"])
    pad = int(config.get("pad", k // 2))
    return {"kernel_shape": (k, k), "strides": (s, s), "pads": (pad,) * 4}


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.ops: list[Op] = []
        self.inputs: list[TensorSpec] = []
        self.specs: dict[str, TensorSpec] = {}

    def activation(self, name: str, shape: tuple[int, ...], dtype: str, channels_last: bool) -> tuple[np.ndarray, np.ndarray]:
        """A graph input, or for channels-last int8 a float input quantized (the plan writes it NHWC)."""
        scale, zero = _qparams(self.rng, dtype) if dtype != "float32" else (np.float32(1), np.int8(0))
        if channels_last and dtype != "float32" and len(shape) == 4:
            source = TensorSpec(f"{name}_f", shape, "float32")
            self.inputs.append(source)
            op = make_op(f"{name}_q", "QuantizeLinear", [source.name, f"{name}_qs", f"{name}_qz"], [name], {},
                         {source.name: source}, {f"{name}_qs": scale, f"{name}_qz": zero})
            self.ops.append(op)
            self.specs[name] = op.output_specs[0]
        else:
            spec = TensorSpec(name, shape, dtype)
            self.inputs.append(spec)
            self.specs[name] = spec
        return scale, zero


def build_sample(config: Mapping[str, Any], rng: np.random.Generator) -> tuple[Graph, Op]:
    """The op a configuration describes and the graph that times it (the op's producers first)."""
    b = _Builder(rng)
    family, dtype, precision = config["family"], str(config["dtype"]), config["precision"]
    n, cin, cout, h, w = 1, int(config["cin"]), int(config["cout"]), int(config["h"]), int(config["w"])
    nhwc = family in NHWC_CONTEXT
    weights: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    if family in ("conv", "pointwise", "depthwise", "stem", "grouped"):
        k, group = int(config["k"]), int(config["group"])
        sx, zx = b.activation("x", (n, cin, h, w), dtype, nhwc)
        attrs = {**_spatial_attrs(config), "group": group, "dilations": (1, 1)}
        shape = (cout, cin // group, k, k)
        if precision == "int8":
            sy, zy = _qparams(rng, dtype)
            weights = {"sx": sx, "zx": zx, "wq": rng.integers(-127, 128, shape).astype(np.int8),
                       "sw": rng.uniform(1e-3, 1e-2, cout).astype(np.float32), "zw": np.zeros(cout, np.int8),
                       "sy": sy, "zy": zy, "bq": rng.integers(-5000, 5000, cout).astype(np.int32)}
            if config.get("relu"):
                attrs["qmin"] = int(zy)
            op_type, inputs = "QLinearConv", ["x", "sx", "zx", "wq", "sw", "zw", "sy", "zy", "bq"]
        else:
            weights = {"wf": (rng.standard_normal(shape) * 0.05).astype(np.float32), "bf": np.zeros(cout, np.float32)}
            op_type, inputs = "Conv", ["x", "wf", "bf"]
    elif family in ("gemm", "matmul"):
        rows = int(config.get("rows", 1))
        sa, za = b.activation("x", (rows, cin), dtype, False)
        if precision == "int8":
            sy, zy = _qparams(rng, dtype)
            if family == "gemm":
                weights = {"sa": sa, "za": za, "wq": rng.integers(-127, 128, (cout, cin)).astype(np.int8),  # per-channel, as models' QGemm
                           "sw": rng.uniform(1e-3, 3e-3, cout).astype(np.float32), "zw": np.zeros(cout, np.int8),
                           "bq": rng.integers(-5000, 5000, cout).astype(np.int32), "sy": sy, "zy": zy}
                op_type, inputs, attrs = "QGemm", ["x", "sa", "za", "wq", "sw", "zw", "bq", "sy", "zy"], {"transB": 1}
            else:
                weights = {"sa": sa, "za": za, "wq": rng.integers(-127, 128, (cin, cout)).astype(np.int8),
                           "sw": np.asarray(2e-3, np.float32), "zw": np.asarray(0, np.int8), "sy": sy, "zy": zy}
                op_type, inputs = "QLinearMatMul", ["x", "sa", "za", "wq", "sw", "zw", "sy", "zy"]
        else:
            weights = {"wf": (rng.standard_normal((cout, cin)) * 0.05).astype(np.float32), "bf": np.zeros(cout, np.float32)}
            op_type, inputs, attrs = "Gemm", ["x", "wf", "bf"], {"transB": 1}
    elif family in ("maxpool", "avgpool", "globalpool"):
        sx, zx = b.activation("x", (n, cin, h, w), dtype, nhwc)
        if family != "globalpool":
            attrs = {**_spatial_attrs(config), "ceil_mode": int(config.get("ceil", 0))}
        if family == "maxpool":
            op_type, inputs = "MaxPool", ["x"]
        elif precision == "int8":
            sy, zy = _qparams(rng, dtype)
            weights = {"sx": sx, "zx": zx, "sy": sy, "zy": zy}
            op_type, inputs = ("QLinearAveragePool" if family == "avgpool" else "QLinearGlobalAveragePool"), ["x", "sx", "zx", "sy", "zy"]
        else:
            op_type, inputs = ("AveragePool" if family == "avgpool" else "GlobalAveragePool"), ["x"]
    elif family in ("add", "mul"):
        sa, za = b.activation("a", (n, cin, h, w), dtype, nhwc)
        other = (n, cin, 1, 1) if config.get("broadcast") else (n, cin, h, w)
        sb, zb = b.activation("b", other, dtype, nhwc)
        if precision == "int8":
            sy, zy = _qparams(rng, dtype)
            weights = {"sa": sa, "za": za, "sb": sb, "zb": zb, "sy": sy, "zy": zy}
            op_type, inputs = ("QLinearAdd" if family == "add" else "QLinearMul"), ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"]
        else:
            op_type, inputs = ("Add" if family == "add" else "Mul"), ["a", "b"]
    elif family == "concat":
        parts = int(config.get("parts", 2))
        widths = [max(1, cin // parts)] * parts
        names = [f"x{i}" for i in range(parts)]
        params = [b.activation(name, (n, width, h, w), dtype, nhwc) for name, width in zip(names, widths)]
        attrs = {"axis": 1}
        if precision == "int8":
            sy, zy = _qparams(rng, dtype)
            weights = {"sy": sy, "zy": zy}
            inputs = ["sy", "zy"]
            for i, (name, (s, z)) in enumerate(zip(names, params)):
                same = rng.random() < 0.5  # parts on the output's scale are copied, others requantized
                weights[f"s{i}"], weights[f"z{i}"] = (sy, zy) if same else (s, z)
                inputs += [name, f"s{i}", f"z{i}"]
            op_type = "QLinearConcat"
        else:
            op_type, inputs = "Concat", names
    elif family in ("lookup", "gated"):
        sx, zx = b.activation("x", (n, cin, h, w), dtype, nhwc)
        shape = (n, cin, h, w)
        dq = make_op("k_dq", "DequantizeLinear", ["x", "sx", "zx"], ["xf"], {}, b.specs, {"sx": sx, "zx": zx})
        b.ops.append(dq)
        b.specs["xf"] = dq.output_specs[0]
        if family == "lookup":
            act = str(config.get("act", "HardSwish"))
            body = make_op("k_act", "Sigmoid" if act == "Swish" else act, ["xf"], ["f"], {}, b.specs, {})
            b.ops.append(body)
            b.specs["f"] = body.output_specs[0]
            if act == "Swish":
                mul = make_op("k_swish", "Mul", ["xf", "f"], ["m"], {}, b.specs, {})
                b.ops.append(mul)
                b.specs["m"] = mul.output_specs[0]
                last = "m"
            else:
                last = "f"
        else:
            gate_weights = {}
            if config.get("broadcast", 1):
                b.inputs.append(TensorSpec("g", (n, cin, 1, 1), "float32"))
                b.specs["g"] = b.inputs[-1]
            else:
                gate_weights = {"g": rng.uniform(0.2, 1.5, (1, cin, 1, 1)).astype(np.float32)}
            mul = make_op("k_gate", "Mul", ["xf", "g"], ["m"], {}, b.specs, gate_weights)
            b.ops.append(mul)
            b.specs["m"] = mul.output_specs[0]
            last = "m"
        assert b.specs[last].shape == shape
        weights = dict(zip(("s", "z"), _qparams(rng, dtype)))
        op_type, inputs = "QuantizeLinear", [last, "s", "z"]
    elif family == "quantize":
        b.activation("x", (n, cin, h, w), "float32", False)
        weights = dict(zip(("s", "z"), _qparams(rng, dtype)))
        op_type, inputs = "QuantizeLinear", ["x", "s", "z"]
    elif family == "dequantize":
        s, z = b.activation("x", (1, cout), dtype, False)
        weights = {"s": s, "z": z}
        op_type, inputs = "DequantizeLinear", ["x", "s", "z"]
    elif family == "flatten":
        b.activation("x", (n, cin, 1, 1), dtype, False)
        op_type, inputs, attrs = "Flatten", ["x"], {"axis": 1}
    elif family in ("reshape", "transpose", "slice"):
        g = int(config["group"])
        shuffled = (n, g, cin // g, h, w)
        b.activation("x", shuffled if family == "transpose" else (n, cin, h, w), dtype, False)
        if family == "reshape":
            weights = {"shape": np.asarray(shuffled, np.int64)}
            op_type, inputs = "Reshape", ["x", "shape"]
        elif family == "transpose":
            op_type, inputs, attrs = "Transpose", ["x"], {"perm": (0, 2, 1, 3, 4)}
        else:
            weights = {"starts": np.asarray([0], np.int64), "ends": np.asarray([cin // 2 or 1], np.int64),
                       "axes": np.asarray([1], np.int64)}
            op_type, inputs = "Slice", ["x", "starts", "ends", "axes"]
    elif family == "relu":
        b.activation("x", (n, cin, h, w), dtype, False)
        op_type, inputs = "Relu", ["x"]
    elif family == "clip":
        b.activation("x", (n, cin, h, w), dtype, False)
        weights = {"lo": np.asarray(0.0, np.float32), "hi": np.asarray(6.0, np.float32)}
        op_type, inputs = "Clip", ["x", "lo", "hi"]
    else:
        raise ValueError(f"unknown kernel family '{family}'")
    op = make_op(f"k_{family}", op_type, inputs, ["y"], attrs, b.specs, weights)
    graph = Graph.build(b.ops + [op], b.inputs, ["y"], name=f"kernel-{family}")
    return graph, op


def layout_array(config: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """The tensor a layout-conversion configuration converts: NCHW for to_nhwc, NHWC for to_nchw."""
    c, h, w = int(config["cin"]), int(config["h"]), int(config["w"])
    shape = (1, c, h, w) if config["family"] == "to_nhwc" else (1, h, w, c)
    dtype = np.dtype(config["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(0, 256, shape).astype(np.uint8).view(dtype)


def config_of(op: Op, flush_bytes: int) -> dict[str, Any] | None:
    """The sample configuration of a model's op (None for an op no family describes): what the
    sampler would time for it, so that a model's op can be re-timed alone."""
    x = next((s for s in op.input_specs if s is not None and s.name not in op.weights), None)
    if x is None:
        return None
    shape = tuple(x.shape)
    int8 = x.dtype != "float32" or op.type == "QuantizeLinear"  # a QuantizeLinear reads floats, writes 8 bits
    c: dict[str, Any] = {"precision": "int8" if int8 else "fp32",
                         "dtype": str(op.output_specs[0].dtype if op.type == "QuantizeLinear" else x.dtype),
                         "cin": int(shape[1]) if len(shape) > 1 else 1, "cout": int(op.output_specs[0].shape[1]) if len(op.output_specs[0].shape) > 1 else 1,
                         "h": int(shape[2]) if len(shape) == 4 else 1, "w": int(shape[3]) if len(shape) == 4 else 1,
                         "k": 1, "stride": 1, "group": 1, "relu": 0, "flush_bytes": int(flush_bytes)}
    attrs = op.attrs
    if op.type in ("QLinearConv", "Conv"):
        w = next(op.weights[t] for t in op.inputs if t in op.weights and op.weights[t].ndim == 4)
        k, group = int(w.shape[2]), int(attrs.get("group", 1))
        c.update(k=k, stride=int(tuple(attrs.get("strides", (1,)))[0]), group=group, pad=int(tuple(attrs.get("pads", (k // 2,)))[0]))
        c["family"] = ("depthwise" if group > 1 and group == c["cin"] == c["cout"] else "grouped" if group > 1
                       else "stem" if c["cin"] <= 3 else "pointwise" if k == 1 else "conv")
    elif op.type in ("MaxPool", "QLinearAveragePool", "AveragePool"):
        k = int(tuple(attrs["kernel_shape"])[0])
        c.update(family="maxpool" if op.type == "MaxPool" else "avgpool", k=k, stride=int(tuple(attrs.get("strides", (1,)))[0]),
                 pad=int(tuple(attrs.get("pads", (0,)))[0]), ceil=int(attrs.get("ceil_mode", 0)))
    elif op.type in ("QLinearGlobalAveragePool", "GlobalAveragePool"):
        c["family"] = "globalpool"
    elif op.type in ("QLinearAdd", "QLinearMul", "Add", "Mul"):
        other = [s for s in op.input_specs if s is not None and s.name not in op.weights]
        c.update(family="add" if op.type.endswith("Add") else "mul", broadcast=int(len(other) > 1 and other[1].shape != other[0].shape))
    elif op.type in ("QGemm", "Gemm", "QLinearMatMul"):
        c.update(family="matmul" if op.type == "QLinearMatMul" else "gemm", rows=int(shape[0]), cin=int(shape[-1]),
                 cout=int(op.output_specs[0].shape[-1]))
    elif op.type == "QuantizeLinear" and len(shape) == 4:
        c["family"] = "quantize"
    elif op.type == "DequantizeLinear" and len(shape) == 2:
        c.update(family="dequantize", rows=int(shape[0]), cout=int(shape[1]))
    elif op.type == "Flatten" and len(shape) == 4 and shape[2] == shape[3] == 1:
        c["family"] = "flatten"
    else:
        return None
    return c
