"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (forward only), in float64."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register

REDUCTIONS = ("none", "sum", "mean")


def _loss_shape(target: Shape, attrs: Attrs, what: str) -> Shape:
    reduction = attrs.get("reduction", "mean")
    if reduction not in REDUCTIONS:
        raise UnsupportedOpError(f"{what} attribute reduction={reduction!r} is not supported ({', '.join(REDUCTIONS)})")
    return tuple(target) if reduction == "none" else ()


def nll(log_prob: np.ndarray, target: np.ndarray, weight: np.ndarray | None, attrs: Attrs) -> np.ndarray:
    """The loss in float64: -log_prob[n, target, ...] * weight[target], reduced."""
    target = target.astype(np.int64)
    ignore = attrs.get("ignore_index")
    valid = np.ones(target.shape, bool) if ignore is None else target != int(ignore)
    index = np.where(valid, target, 0)
    if np.any(index < 0) or np.any(index >= log_prob.shape[1]):
        raise GraphError(f"a target class is outside [0, {log_prob.shape[1]})")
    picked = np.take_along_axis(log_prob.astype(np.float64), index[:, None], axis=1)[:, 0]
    w = np.ones(target.shape) if weight is None else weight.astype(np.float64)[index]
    w = np.where(valid, w, 0.0)
    loss = -picked * w
    reduction = attrs.get("reduction", "mean")
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    return np.asarray(loss.sum() / w.sum())


def _nll_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, target = inputs[0], inputs[1]
    assert x is not None and target is not None
    if len(target.shape) != len(x.shape) - 1:
        raise GraphError(f"target {list(target.shape)} does not fit input {list(x.shape)}")
    return [(_loss_shape(target.shape, attrs, "NegativeLogLikelihoodLoss"), x.dtype)]


register(
    "NegativeLogLikelihoodLoss",
    infer=_nll_infer,
    reference=lambda ins, a: [nll(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a).astype(ins[0].dtype)],
    inputs=(2, 3),
)


def _sce_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x = inputs[0]
    assert x is not None
    return _nll_infer(inputs, attrs) + [(x.shape, x.dtype)]


def _sce(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    x = ins[0].astype(np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = nll(log_prob, ins[1], ins[2] if len(ins) > 2 else None, attrs)
    return [loss.astype(ins[0].dtype), log_prob.astype(ins[0].dtype)]


register("SoftmaxCrossEntropyLoss", infer=_sce_infer, reference=_sce, inputs=(2, 3), optional_outputs=True)
