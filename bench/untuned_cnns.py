"""CNNs nobody tuned the cpu device for, built here with onnx.helper (random weights, no downloads).

``shufflenet-like``: ShuffleNet v1 units (grouped 1x1, channel shuffle by Reshape/Transpose/
Reshape, depthwise 3x3, stride-2 units concatenating an average-pooled shortcut, residual adds).
``inception-like``: a 7x7/2 stem, max pools, and Inception blocks (1x1, 1x1->3x3, 1x1->5x5 and
pool->1x1 branches concatenated). ``mnasnet-like``: MBConv blocks (expanding 1x1, depthwise 3x3
and 5x5 at strides 1 and 2, a linear squeeze 1x1, residual adds). All take 1x3x224x224 float32
and end in a global average pool and a Gemm; bench/kernels.py quantizes them as any fp32 model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 3, 224, 224)


class Net:
    """A float ONNX graph with random weights, built node by node."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, array: np.ndarray) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        y = self.node("Conv", [x, self.const(w), self.const(b)], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=group)
        return self.node("Relu", [y]) if relu else y

    def pool(self, op: str, x: str, k: int, stride: int) -> str:
        return self.node(op, [x], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def shuffle(self, x: str, channels: int, groups: int, hw: int) -> str:
        y = self.node("Reshape", [x, self.const(np.array([1, groups, channels // groups, hw, hw], np.int64))])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, self.const(np.array([1, channels, hw, hw], np.int64))])

    def model(self, name: str, x: str, channels: int) -> onnx.ModelProto:
        y = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        w = (self.rng.standard_normal((channels, 100)) / np.sqrt(channels)).astype(np.float32)
        logits = self.node("Gemm", [y, self.const(w), self.const(np.zeros(100, np.float32))])
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
                                  [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, 100])], self.inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        return proto


def shufflenet_like() -> onnx.ModelProto:
    net, groups = Net(11), 3
    x = net.pool("MaxPool", net.conv("x", 3, 24, 3, stride=2), 3, 2)  # 56x56x24
    channels, hw = 24, 56
    for out_channels, units in ((240, 3), (480, 4), (960, 2)):
        for unit in range(units):
            stride = 2 if unit == 0 else 1
            width = out_channels - channels if stride == 2 else out_channels
            mid = out_channels // 4
            first_group = 1 if channels == 24 else groups
            y = net.conv(x, channels, mid, 1, group=first_group)
            y = net.shuffle(y, mid, groups, hw)
            hw_out = hw // stride
            y = net.conv(y, mid, mid, 3, stride=stride, group=mid, relu=False)
            y = net.conv(y, mid, width, 1, group=groups, relu=False)
            if stride == 2:
                x = net.node("Relu", [net.node("Concat", [net.pool("AveragePool", x, 3, 2), y], axis=1)])
            else:
                x = net.node("Relu", [net.node("Add", [x, y])])
            channels, hw = out_channels, hw_out
    return net.model("shufflenet_like", x, channels)


def inception_like() -> onnx.ModelProto:
    net = Net(12)
    x = net.pool("MaxPool", net.conv("x", 3, 32, 7, stride=2), 3, 2)  # 56x56x32
    x = net.pool("MaxPool", net.conv(net.conv(x, 32, 32, 1), 32, 96, 3), 3, 2)  # 28x28x96
    channels = 96
    for widths in ((32, 48, 64, 8, 16, 16), (64, 64, 96, 16, 48, 32), None, (96, 48, 104, 8, 24, 32)):
        if widths is None:
            x = net.pool("MaxPool", x, 3, 2)  # 14x14
            continue
        b1, r3, b3, r5, b5, bp = widths
        parts = [net.conv(x, channels, b1, 1), net.conv(net.conv(x, channels, r3, 1), r3, b3, 3),
                 net.conv(net.conv(x, channels, r5, 1), r5, b5, 5), net.conv(net.pool("MaxPool", x, 3, 1), channels, bp, 1)]
        x = net.node("Concat", parts, axis=1)
        channels = b1 + b3 + b5 + bp
    return net.model("inception_like", x, channels)


def mnasnet_like() -> onnx.ModelProto:
    net = Net(13)
    x = net.conv("x", 3, 32, 3, stride=2)  # 112x112x32
    x = net.conv(net.conv(x, 32, 32, 3, group=32), 32, 16, 1, relu=False)
    channels = 16
    # (expansion, kernel, stride, out channels, repeats)
    for expand, k, stride, out_channels, repeats in ((3, 3, 2, 24, 2), (3, 5, 2, 40, 2), (6, 5, 2, 80, 2),
                                                      (6, 3, 1, 96, 2), (6, 5, 2, 192, 2), (6, 3, 1, 320, 1)):
        for r in range(repeats):
            s = stride if r == 0 else 1
            mid = channels * expand
            y = net.conv(net.conv(x, channels, mid, 1), mid, mid, k, stride=s, group=mid)
            y = net.conv(y, mid, out_channels, 1, relu=False)
            x = net.node("Add", [x, y]) if s == 1 and channels == out_channels else y
            channels = out_channels
    x = net.conv(x, channels, 640, 1)
    return net.model("mnasnet_like", x, 640)


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "shufflenet-like": shufflenet_like, "inception-like": inception_like, "mnasnet-like": mnasnet_like}


def saved(name: str, folder: Path) -> Path:
    """The named model written to ``folder`` as an .onnx file (built once per folder)."""
    path = folder / f"{name}.onnx"
    if not path.exists():
        onnx.save(BUILDERS[name](), str(path))
    return path
