"""Small float ONNX CNNs with random weights, built node by node: the untuned models the tests and
benchmarks check hetero on (no downloads; each model fixed by its seed)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class CnnBuilder:
    """Nodes and initializers of one graph; each method returns the name of the tensor it made."""

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

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, dilation: int = 1,
             relu: bool = True) -> str:
        """A k x k Conv with 'same' padding and He-initialised weights, then a Relu unless ``relu`` is False."""
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (0.1 * self.rng.standard_normal(cout)).astype(np.float32)
        pad = dilation * (k // 2)
        y = self.node("Conv", [x, self.const(w), self.const(b)], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[pad] * 4, group=group, dilations=[dilation, dilation])
        return self.node("Relu", [y]) if relu else y

    def pool(self, op: str, x: str, k: int, stride: int) -> str:
        return self.node(op, [x], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)

    def shuffle(self, x: str, channels: int, groups: int, hw: int) -> str:
        """ShuffleNet's channel shuffle as exporters write it: Reshape, Transpose, Reshape."""
        y = self.node("Reshape", [x, self.const(np.array([1, groups, channels // groups, hw, hw], np.int64))])
        y = self.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
        return self.node("Reshape", [y, self.const(np.array([1, channels, hw, hw], np.int64))])

    def classifier(self, name: str, x: str, channels: int, classes: int, input_shape: Sequence[int]) -> onnx.ModelProto:
        """Global average pool, Flatten and a Gemm to ``classes`` logits after ``x``: the finished model."""
        y = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        w = (self.rng.standard_normal((channels, classes)) / np.sqrt(channels)).astype(np.float32)
        logits = self.node("Gemm", [y, self.const(w), self.const(np.zeros(classes, np.float32))])
        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
                                  [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [1, classes])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model
