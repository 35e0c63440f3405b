"""Builtin model builders: ONNX graphs written node by node, with seeded random weights.

Every builder returns an ``onnx.ModelProto`` (opset 17) whose single input is named
``input`` (float32, batch 1) and whose single output is named ``logits``.
No deep-learning framework is needed to build them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hetero.errors import InputError

OPSET_VERSION = 17
IR_VERSION = 8
PRODUCER_NAME = "hetero"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BN_EPSILON = 1e-5

SEED_CNN_INPUT_SHAPE = (1, 1, 28, 28)
SEED_CNN_SHAPES: dict[str, tuple[int, ...]] = {
    "conv.weight": (32, 1, 3, 3),
    "conv.bias": (32,),
    "fc1.weight": (64, 5408),
    "fc1.bias": (64,),
    "fc2.weight": (10, 64),
    "fc2.bias": (10,),
}
"""Weight names and shapes of the seed CNN, in PyTorch layout (Gemm weights are out x in)."""

# MobileNetV2 inverted-residual settings: expansion t, output channels c, repeats n, stride s.
_MOBILENETV2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _GraphBuilder:
    """Accumulates nodes and initializers of one graph, naming everything uniquely."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}
        self._clip_bounds: tuple[str, str] | None = None

    def fresh(self, prefix: str) -> str:
        """A name not used before in this graph, starting with ``prefix``."""
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], prefix: str, **attrs: object) -> str:
        """Add a single-output node and return the name of its output."""
        name = self.fresh(prefix)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def conv_bn(
        self,
        x: str,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        gamma_scale: float = 1.0,
    ) -> str:
        """Bias-free Conv (He init, 'same'-style padding) followed by an inference BatchNormalization."""
        prefix = self.fresh("conv")
        fan_in = (in_channels // groups) * kernel * kernel
        w_shape = (out_channels, in_channels // groups, kernel, kernel)
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=w_shape).astype(np.float32)
        pad = kernel // 2
        y = self.node(
            "Conv",
            [x, self.const(f"{prefix}.weight", w)],
            prefix,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
            group=groups,
        )
        c = out_channels
        scale = (gamma_scale * (1.0 + 0.05 * self.rng.standard_normal(c))).astype(np.float32)
        bias = (0.01 * self.rng.standard_normal(c)).astype(np.float32)
        mean = (0.01 * self.rng.standard_normal(c)).astype(np.float32)
        var = self.rng.uniform(0.9, 1.1, size=c).astype(np.float32)
        return self.node(
            "BatchNormalization",
            [
                y,
                self.const(f"{prefix}.bn.scale", scale),
                self.const(f"{prefix}.bn.bias", bias),
                self.const(f"{prefix}.bn.mean", mean),
                self.const(f"{prefix}.bn.var", var),
            ],
            f"{prefix}_bn",
            epsilon=BN_EPSILON,
        )

    def relu(self, x: str) -> str:
        """Relu node."""
        return self.node("Relu", [x], "relu")

    def relu6(self, x: str) -> str:
        """ReLU6 as a Clip whose bounds are shared constant initializers."""
        if self._clip_bounds is None:
            self._clip_bounds = (
                self.const("clip.min", np.array(0.0, dtype=np.float32)),
                self.const("clip.max", np.array(6.0, dtype=np.float32)),
            )
        return self.node("Clip", [x, *self._clip_bounds], "relu6")

    def add(self, a: str, b: str) -> str:
        """Elementwise Add node."""
        return self.node("Add", [a, b], "add")

    def classifier(self, x: str, in_features: int, num_classes: int) -> str:
        """GlobalAveragePool -> Flatten -> Gemm producing the graph output."""
        pooled = self.node("GlobalAveragePool", [x], "gap")
        flat = self.node("Flatten", [pooled], "flatten", axis=1)
        bound = 1.0 / np.sqrt(in_features)
        w = self.rng.uniform(-bound, bound, size=(num_classes, in_features)).astype(np.float32)
        b = self.rng.uniform(-bound, bound, size=num_classes).astype(np.float32)
        self.nodes.append(
            helper.make_node(
                "Gemm",
                [flat, self.const("fc.weight", w), self.const("fc.bias", b)],
                [OUTPUT_NAME],
                name="fc",
                transB=1,
            )
        )
        return OUTPUT_NAME

    def model(self, graph_name: str, input_shape: tuple[int, ...], num_outputs: int) -> onnx.ModelProto:
        """Wrap the accumulated nodes into a checked-shape ModelProto."""
        graph = helper.make_graph(
            self.nodes,
            graph_name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(input_shape))],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, num_outputs])],
            initializer=self.initializers,
        )
        return _finish_model(graph)


def _finish_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A ModelProto around ``graph`` with hetero's opset and IR version."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        producer_name=PRODUCER_NAME,
    )
    model.ir_version = IR_VERSION
    return model


def _check_positive(name: str, value: int) -> None:
    """Raise InputError unless ``value`` is a positive int."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


# ----------------------------------------------------------------------------- seed CNN


def seed_cnn_random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-style random weights for the seed CNN (zero biases), keyed as in SEED_CNN_SHAPES."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in SEED_CNN_SHAPES.items():
        if name.endswith(".bias"):
            weights[name] = np.zeros(shape, dtype=np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            weights[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
    return weights


def _validated_seed_weights(weights: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Float32 copies of ``weights``; InputError naming the first missing, extra or misshapen key."""
    missing = [k for k in SEED_CNN_SHAPES if k not in weights]
    if missing:
        raise InputError(f"seed_cnn weights: missing key {missing[0]!r} (expected keys {list(SEED_CNN_SHAPES)})")
    extra = [k for k in weights if k not in SEED_CNN_SHAPES]
    if extra:
        raise InputError(f"seed_cnn weights: unexpected key {extra[0]!r} (expected keys {list(SEED_CNN_SHAPES)})")
    out: dict[str, np.ndarray] = {}
    for name, shape in SEED_CNN_SHAPES.items():
        arr = np.asarray(weights[name])
        if arr.shape != shape:
            raise InputError(f"seed_cnn weights: key {name!r} has shape {arr.shape}, expected {shape}")
        if not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"seed_cnn weights: key {name!r} has non-numeric dtype {arr.dtype}")
        arr32 = arr.astype(np.float32)
        if not np.all(np.isfinite(arr32)):
            raise InputError(f"seed_cnn weights: key {name!r} contains NaN or infinity")
        out[name] = arr32
    return out


def seed_cnn(weights: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> onnx.ModelProto:
    """The seed CNN: Conv3x3(32)-Relu-MaxPool2-Flatten-Gemm(64)-Relu-Gemm(10) on 1x1x28x28.

    ``weights`` maps the names of SEED_CNN_SHAPES to arrays of those shapes; when None,
    seeded He-style random weights are used.
    """
    w = seed_cnn_random_weights(seed) if weights is None else _validated_seed_weights(weights)
    inits = [numpy_helper.from_array(w[name], name) for name in SEED_CNN_SHAPES]
    nodes = [
        helper.make_node(
            "Conv", [INPUT_NAME, "conv.weight", "conv.bias"], ["conv_out"], name="conv",
            kernel_shape=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0],
        ),
        helper.make_node("Relu", ["conv_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool_out"], ["flatten_out"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flatten_out", "fc1.weight", "fc1.bias"], ["fc1_out"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1_out"], ["relu2_out"], name="relu2"),
        helper.make_node("Gemm", ["relu2_out", "fc2.weight", "fc2.bias"], [OUTPUT_NAME], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "seed_cnn",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(SEED_CNN_INPUT_SHAPE))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, SEED_CNN_SHAPES["fc2.bias"][0]])],
        initializer=inits,
    )
    return _finish_model(graph)


# ----------------------------------------------------------------------------- seed CNN, tiny


SEED_CNN_TINY_SHAPES: dict[str, tuple[int, ...]] = {
    "conv.weight": (8, 1, 3, 3),
    "conv.bias": (8,),
    "fc1.weight": (16, 8 * 13 * 13),
    "fc1.bias": (16,),
    "fc2.weight": (10, 16),
    "fc2.bias": (10,),
}
"""The tiny seed CNN: a quarter of the seed CNN's width (8 filters, 16 hidden units), same layers."""


def seed_cnn_tiny(seed: int = 0) -> onnx.ModelProto:
    """Conv3x3(8)-Relu-MaxPool2-Flatten-Gemm(16)-Relu-Gemm(10) on 1x1x28x28 with seeded random
    weights (He normal, zero biases): the student that ``hetero distill`` trains."""
    rng = np.random.default_rng(seed)
    g = _GraphBuilder(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in SEED_CNN_TINY_SHAPES.items():
        if name.endswith(".bias"):
            weights[name] = np.zeros(shape, dtype=np.float32)
        else:
            weights[name] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), size=shape).astype(np.float32)
        g.const(name, weights[name])
    x = g.node("Conv", [INPUT_NAME, "conv.weight", "conv.bias"], "conv", kernel_shape=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0])
    x = g.node("MaxPool", [g.relu(x)], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = g.relu(g.node("Gemm", [g.node("Flatten", [x], "flatten", axis=1), "fc1.weight", "fc1.bias"], "fc1", transB=1))
    g.nodes.append(helper.make_node("Gemm", [x, "fc2.weight", "fc2.bias"], [OUTPUT_NAME], name="fc2", transB=1))
    return g.model("seed_cnn_tiny", SEED_CNN_INPUT_SHAPE, SEED_CNN_TINY_SHAPES["fc2.bias"][0])


# ----------------------------------------------------------------------------- ResNet-18


def _basic_block(g: _GraphBuilder, x: str, in_channels: int, out_channels: int, stride: int) -> str:
    """ResNet BasicBlock: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, Add, Relu."""
    y = g.relu(g.conv_bn(x, in_channels, out_channels, 3, stride))
    # A smaller last gamma keeps the residual sum's variance from doubling at every block.
    y = g.conv_bn(y, out_channels, out_channels, 3, 1, gamma_scale=0.5)
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = g.conv_bn(x, in_channels, out_channels, 1, stride)
    return g.relu(g.add(y, shortcut))


def resnet18(seed: int = 0, num_classes: int = 1000, image_size: int = 224) -> onnx.ModelProto:
    """torchvision-style ResNet-18 (BasicBlocks [2, 2, 2, 2]) on 1x3xSxS with random weights."""
    _check_positive("num_classes", num_classes)
    _check_positive("image_size", image_size)
    g = _GraphBuilder(seed)
    x = g.relu(g.conv_bn(INPUT_NAME, 3, 64, 7, 2))
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(g, x, channels, width, stride)
            channels = width
    g.classifier(x, channels, num_classes)
    return g.model("resnet18", (1, 3, image_size, image_size), num_classes)


# ----------------------------------------------------------------------------- MobileNetV2


def _inverted_residual(g: _GraphBuilder, x: str, in_channels: int, out_channels: int, stride: int, expand: int) -> str:
    """MobileNetV2 block: optional 1x1 expand, 3x3 depthwise, linear 1x1 projection, Add if shapes match."""
    hidden = in_channels * expand
    y = x
    if expand != 1:
        y = g.relu6(g.conv_bn(y, in_channels, hidden, 1))
    y = g.relu6(g.conv_bn(y, hidden, hidden, 3, stride, groups=hidden))
    use_residual = stride == 1 and in_channels == out_channels
    y = g.conv_bn(y, hidden, out_channels, 1, gamma_scale=0.5 if use_residual else 1.0)
    return g.add(x, y) if use_residual else y


def mobilenetv2(seed: int = 0, num_classes: int = 1000, image_size: int = 224) -> onnx.ModelProto:
    """torchvision-style MobileNetV2 (width 1.0) on 1x3xSxS with random weights; ReLU6 is Clip."""
    _check_positive("num_classes", num_classes)
    _check_positive("image_size", image_size)
    g = _GraphBuilder(seed)
    channels = 32
    x = g.relu6(g.conv_bn(INPUT_NAME, 3, channels, 3, 2))
    for expand, width, repeats, first_stride in _MOBILENETV2_SETTINGS:
        for i in range(repeats):
            x = _inverted_residual(g, x, channels, width, first_stride if i == 0 else 1, expand)
            channels = width
    last_channels = 1280
    x = g.relu6(g.conv_bn(x, channels, last_channels, 1))
    g.classifier(x, last_channels, num_classes)
    return g.model("mobilenetv2", (1, 3, image_size, image_size), num_classes)


CALIBRATIONS = ("digits", "random")
"""The calibration data a builtin names: the digits train split, or seeded standard-normal inputs."""


@dataclass(frozen=True)
class Builtin:
    """A builtin model: its zero-argument builder, and the data that calibrates it for int8
    (one of CALIBRATIONS; hetero.quant.calibrate.calibration_for reads it). Calling it builds the model."""

    build: Callable[[], onnx.ModelProto]
    calibration: str = "random"

    def __call__(self) -> onnx.ModelProto:
        return self.build()


BUILTINS: dict[str, Builtin] = {
    "seed-cnn-random": Builtin(seed_cnn, calibration="digits"),  # the seed CNN's architecture: digit images
    "seed-cnn-tiny": Builtin(seed_cnn_tiny, calibration="digits"),  # a quarter of its width: the distill student
    "resnet18": Builtin(resnet18),
    "mobilenetv2": Builtin(mobilenetv2),
}
"""Builtin model names mapped to their entries (default seed and sizes); ``builtin:seed-cnn``, the
trained seed model shipped as a file, is hetero.ir.source's."""
