"""The records QDQ lowering works on: a quantized tensor's parameters and a fused op to emit.

``QuantParams`` is one quantized tensor as a DequantizeLinear reads it or a QuantizeLinear writes
it; ``Rewrite`` is a QLinear op that replaces a float op and the Qs it absorbs
(hetero.quant.lowering runs the rules of hetero.quant.rules, which build them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hetero.ir.graph import Op

DROP_QDQ_OPS = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Identity"}
QLINEAR_POOLS = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool"}


INT8_TYPES = ("int8", "uint8")


@dataclass(frozen=True)
class QuantParams:
    """One quantized tensor as a DQ reads it or a Q writes it: integer tensor, constant scale and zero point."""

    tensor: str  # the integer tensor
    scale: str
    zero_point: str
    dtype: str  # its integer type
    kind: str  # the type the fusion rules see: dtype, or uint8 where onnxruntime retypes int8
    axis: int
    consts: dict[str, np.ndarray]  # scale, zero point and (for a constant) the integer array

    @property
    def scale_array(self) -> np.ndarray:
        return self.consts[self.scale]

    @property
    def per_tensor(self) -> bool:
        return self.scale_array.size == 1 and self.consts[self.zero_point].size == 1

    @property
    def constant(self) -> bool:
        return self.tensor in self.consts

    def same_as(self, other: "QuantParams") -> bool:
        """Equal scalar scale, zero point and type (what makes a DQ -> op -> Q pair droppable)."""
        return (
            self.per_tensor
            and other.per_tensor
            and self.kind == other.kind
            and float(self.scale_array.reshape(())) == float(other.scale_array.reshape(()))
            and int(self.consts[self.zero_point].reshape(())) == int(other.consts[other.zero_point].reshape(()))
        )


def quant_params(op: Op, dtype: str, kind: str | None = None) -> QuantParams | None:
    """Scale and zero point of a Q or DQ op when both are constants (zero point synthesised if absent).

    ``dtype`` is the integer type; ``kind`` the type the fusion rules see (default ``dtype``).
    """
    scale = op.inputs[1]
    if scale not in op.weights:
        return None
    consts = {scale: op.weights[scale]}
    if len(op.inputs) > 2 and op.inputs[2]:
        zero_point = op.inputs[2]
        if zero_point not in op.weights:
            return None
        consts[zero_point] = op.weights[zero_point]
    else:
        zero_point = f"{op.name}.zero_point"
        consts[zero_point] = np.zeros(op.weights[scale].shape, dtype)
    if op.type == "DequantizeLinear":
        tensor = op.inputs[0]
        if tensor in op.weights:
            consts[tensor] = op.weights[tensor]
    else:
        tensor = op.outputs[0]
    return QuantParams(tensor, scale, zero_point, dtype, kind or dtype, int(op.attrs.get("axis", 1)), consts)


@dataclass
class Rewrite:
    """A fused op to emit in place of a target op, and the Qs it absorbs."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    weights: dict[str, np.ndarray]
    absorbed: list[Op]
