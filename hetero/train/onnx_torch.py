"""An fp32 ONNX graph as a trainable torch module, and its trained values written back as ONNX.

The module interprets the ONNX nodes in file order with torch functions, so the graph keeps its
node names and structure: after training, ``to_onnx`` copies the model and replaces only the
values of its trainable initializers. Trainable: the weights and biases of Conv, Gemm and MatMul
and the scale and bias of BatchNormalization (its running mean and variance stay fixed, as in
inference). Any batch size runs (a Reshape's leading 1 is read as the batch).

onnx2torch would do the conversion, but it pulls in torchvision (and with it another torch build);
this covers the CNN operators hetero's builtins and exports use, and names any other node it meets.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from hetero.errors import ModelError
from hetero.ir.source import quantized_form

TRAINABLE_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (1,),
    "BatchNormalization": (1, 2),
}
"""Op type -> input positions whose float initializers are trained."""


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads2d(pads: list[int]) -> tuple[int, int, int, int]:
    """ONNX pads (top, left, bottom, right) as F.pad's (left, right, top, bottom)."""
    top, left, bottom, right = pads
    return (left, right, top, bottom)


class OnnxModule(nn.Module):
    """Runs an fp32 ONNX graph with torch; its float Conv/Gemm/MatMul/BN initializers are parameters."""

    def __init__(self, model: onnx.ModelProto, label: str = "model") -> None:
        super().__init__()
        if quantized_form(model) is not None:
            raise ModelError(f"{label} is quantized (QDQ or QLinear nodes); train the fp32 model, then run hetero quantize")
        self.label = label
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        trainable: list[str] = []
        for node in self.nodes:
            for position in TRAINABLE_INPUTS.get(node.op_type, ()):
                if position < len(node.input) and node.input[position] in inits:
                    name = node.input[position]
                    if inits[name].dtype == np.float32 and name not in trainable:
                        trainable.append(name)
        self.param_names = trainable
        self.params = nn.ParameterList([nn.Parameter(torch.from_numpy(inits[n].copy())) for n in trainable])
        self._param_index = {n: i for i, n in enumerate(trainable)}
        self.constants = {n: torch.from_numpy(np.array(a)) for n, a in inits.items() if n not in self._param_index}
        init_names = set(inits)
        self.input_names = [v.name for v in graph.input if v.name not in init_names]
        self.output_names = [v.name for v in graph.output]
        for node in self.nodes:
            if node.op_type not in _OPS:
                raise ModelError(f"{label}: node {node.name or node.output[0]} is {node.op_type}, which hetero's training "
                                 f"cannot run (supported: {', '.join(sorted(_OPS))}); train a model made of those")

    def named_onnx_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable parameters by ONNX initializer name."""
        return {n: self.params[i] for n, i in self._param_index.items()}

    def value(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in env:
            return env[name]
        if name in self._param_index:
            return self.params[self._param_index[name]]
        return self.constants[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_names[0]: x}
        for node in self.nodes:
            inputs = [self.value(n, env) if n else None for n in node.input]
            outputs = _OPS[node.op_type](inputs, _attrs(node))
            for name, out in zip(node.output, outputs if isinstance(outputs, tuple) else (outputs,)):
                env[name] = out
        return env[self.output_names[0]]

    def to_onnx(self) -> onnx.ModelProto:
        """A copy of the model whose trainable initializers hold the module's current values."""
        out = copy.deepcopy(self.model)
        values = {n: p.detach().cpu().numpy().astype(np.float32) for n, p in self.named_onnx_parameters().items()}
        for i, tensor in enumerate(out.graph.initializer):
            if tensor.name in values:
                out.graph.initializer[i].CopyFrom(numpy_helper.from_array(values[tensor.name], tensor.name))
        return out


# ----------------------------------------------------------------------------- operators

Inputs = list[torch.Tensor | None]


def _conv(inputs: Inputs, attrs: dict) -> torch.Tensor:
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    if x.dim() != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ModelError("training runs 2-D Conv with explicit pads only")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    x = F.pad(x, _pads2d(pads)) if any(pads) else x
    return F.conv2d(x, w, bias, stride=tuple(attrs.get("strides", [1, 1])), dilation=tuple(attrs.get("dilations", [1, 1])),
                    groups=int(attrs.get("group", 1)))


def _gemm(inputs: Inputs, attrs: dict) -> torch.Tensor:
    a, b = inputs[0], inputs[1]
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    y = float(attrs.get("alpha", 1.0)) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        y = y + float(attrs.get("beta", 1.0)) * inputs[2]
    return y


def _pool(kind: str) -> Callable[[Inputs, dict], torch.Tensor]:
    def run(inputs: Inputs, attrs: dict) -> torch.Tensor:
        x = inputs[0]
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs.get("strides", [1] * len(kernel)))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            x = F.pad(x, _pads2d(pads), value=float("-inf")) if any(pads) else x
            return F.max_pool2d(x, kernel, strides, ceil_mode=ceil)
        if any(pads) and not attrs.get("count_include_pad", 0):
            return F.avg_pool2d(x, kernel, strides, padding=(pads[0], pads[1]), ceil_mode=ceil, count_include_pad=False)
        x = F.pad(x, _pads2d(pads)) if any(pads) else x
        return F.avg_pool2d(x, kernel, strides, ceil_mode=ceil)
    return run


def _batch_norm(inputs: Inputs, attrs: dict) -> torch.Tensor:
    x, scale, bias, mean, var = inputs[:5]
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=float(attrs.get("epsilon", 1e-5)))


def _clip(inputs: Inputs, attrs: dict) -> torch.Tensor:
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("min")
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else attrs.get("max")
    low = float(low) if low is not None else None
    high = float(high) if high is not None else None
    return torch.clamp(inputs[0], low, high)


def _flatten(inputs: Inputs, attrs: dict) -> torch.Tensor:
    x = inputs[0]
    axis = int(attrs.get("axis", 1))
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _reshape(inputs: Inputs, attrs: dict) -> torch.Tensor:
    x, shape = inputs[0], [int(s) for s in inputs[1].tolist()]
    if shape and shape[0] == 1 and x.shape[0] != 1:  # the model's batch 1 is the training batch
        shape[0] = x.shape[0]
    return x.reshape(shape)


def _concat(inputs: Inputs, attrs: dict) -> torch.Tensor:
    return torch.cat([t for t in inputs if t is not None], dim=int(attrs["axis"]))


_OPS: dict[str, Callable[[Inputs, dict], torch.Tensor]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Relu": lambda i, a: torch.relu(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], float(a.get("alpha", 0.01))),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Clip": _clip,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=(2, 3), keepdim=True),
    "BatchNormalization": _batch_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Concat": _concat,
    "Softmax": lambda i, a: torch.softmax(i[0], dim=int(a.get("axis", -1))),
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
}
