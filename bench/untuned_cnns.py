"""CNNs nobody tuned the cpu device for, built here with onnx.helper (random weights, no downloads).

``shufflenet-like``: ShuffleNet v1 units (grouped 1x1, channel shuffle by Reshape/Transpose/
Reshape, depthwise 3x3, stride-2 units concatenating an average-pooled shortcut, residual adds).
``inception-like``: a 7x7/2 stem, max pools, and Inception blocks (1x1, 1x1->3x3, 1x1->5x5 and
pool->1x1 branches concatenated). ``mnasnet-like``: MBConv blocks (expanding 1x1, depthwise 3x3
and 5x5 at strides 1 and 2, a linear squeeze 1x1, residual adds). ``efficientnet-like`` and
``mobilenetv3-like``: MBConv blocks with squeeze-and-excitation gates, Swish and Sigmoid gates or
HardSwish and HardSigmoid gates (float ops between dequantized and quantized tensors). All take 1x3x224x224 float32
and end in a global average pool and a Gemm; bench/kernels.py quantizes them as any fp32 model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import onnx

from hetero.ir.synth import CnnBuilder

INPUT_SHAPE = (1, 3, 224, 224)


def shufflenet_like() -> onnx.ModelProto:
    net, groups = CnnBuilder(11), 3
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
    return net.classifier("shufflenet_like", x, channels, 100, INPUT_SHAPE)


def inception_like() -> onnx.ModelProto:
    net = CnnBuilder(12)
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
    return net.classifier("inception_like", x, channels, 100, INPUT_SHAPE)


def mnasnet_like() -> onnx.ModelProto:
    net = CnnBuilder(13)
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
    return net.classifier("mnasnet_like", x, 640, 100, INPUT_SHAPE)


def _mbconv_se_stack(seed: int, name: str, activation: str, gate: str) -> onnx.ModelProto:
    """MBConv blocks with squeeze-and-excitation gates (global pool, 1x1 reduce, 1x1 expand, the
    gate's activation, Mul with the block's activation), depthwise 3x3 and 5x5; ``activation``
    after each conv but the projections: Swish (x * Sigmoid(x)) or HardSwish."""
    net = CnnBuilder(seed)

    def act(x: str) -> str:
        return net.node("Mul", [x, net.node("Sigmoid", [x])]) if activation == "Swish" else net.node(activation, [x])

    x = act(net.conv("x", 3, 32, 3, stride=2, relu=False))  # 112x112x32
    channels = 32
    for expand, k, stride, out_channels in ((1, 3, 1, 16), (6, 3, 2, 24), (6, 5, 2, 40), (6, 3, 2, 80), (6, 5, 1, 112), (6, 5, 2, 192)):
        mid = channels * expand
        y = act(net.conv(x, channels, mid, 1, relu=False)) if expand > 1 else x
        y = act(net.conv(y, mid, mid, k, stride=stride, group=mid, relu=False))
        squeezed = max(8, mid // 4)
        g = net.conv(net.conv(net.node("GlobalAveragePool", [y]), mid, squeezed, 1), squeezed, mid, 1, relu=False)
        y = net.conv(net.node("Mul", [y, net.node(gate, [g])]), mid, out_channels, 1, relu=False)
        x = net.node("Add", [x, y]) if stride == 1 and channels == out_channels else y
        channels = out_channels
    x = act(net.conv(x, channels, 640, 1, relu=False))
    return net.classifier(name, x, 640, 100, INPUT_SHAPE)


def efficientnet_like() -> onnx.ModelProto:
    """EfficientNet-B0's pattern: Swish activations, Sigmoid gates."""
    return _mbconv_se_stack(21, "efficientnet_like", "Swish", "Sigmoid")


def mobilenetv3_like() -> onnx.ModelProto:
    """MobileNetV3's pattern: HardSwish activations, HardSigmoid gates."""
    return _mbconv_se_stack(22, "mobilenetv3_like", "HardSwish", "HardSigmoid")


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "shufflenet-like": shufflenet_like, "inception-like": inception_like, "mnasnet-like": mnasnet_like,
    "efficientnet-like": efficientnet_like, "mobilenetv3-like": mobilenetv3_like}


def saved(name: str, folder: Path) -> Path:
    """The named model written to ``folder`` as an .onnx file (built once per folder)."""
    path = folder / f"{name}.onnx"
    if not path.exists():
        onnx.save(BUILDERS[name](), str(path))
    return path
