"""The prune command's recipe: prune by L1 norm, fine-tune to recover, score before and after."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from hetero.errors import InputError
from hetero.train.data import DIGITS, Dataset, load_data
from hetero.train.loop import check_data, fit, flops, model_accuracy, parameter_count
from hetero.train.onnx_torch import OnnxModule
from hetero.train.prune import PrunedSpace, prune_model

DIGITS_INPUT = [1, 1, 28, 28]


def default_data(model: onnx.ModelProto, spec: str | None, label: str) -> Dataset:
    """The DATA a command trains on: ``spec`` when given, else the digits for a model that takes them."""
    if spec is not None:
        return load_data(spec)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if dims != DIGITS_INPUT:
        raise InputError(f"{label} takes {dims}, not the 28x28 digits; give --data DATA.npz (arrays x and y) to train on")
    return load_data(DIGITS)


@dataclass(frozen=True)
class PruneRun:
    """A pruned (and fine-tuned) model with its size, FLOPs and held-out accuracy before and after."""

    model: onnx.ModelProto
    spaces: tuple[PrunedSpace, ...]
    flops_before: int
    flops_after: int
    params_before: int
    params_after: int
    accuracy_before: float
    accuracy_after: float

    def to_dict(self) -> dict[str, object]:
        return {"flops_before": self.flops_before, "flops_after": self.flops_after,
                "flops_ratio": self.flops_after / self.flops_before,
                "params_before": self.params_before, "params_after": self.params_after,
                "accuracy_before": self.accuracy_before, "accuracy_after": self.accuracy_after,
                "channels": [{"producers": list(s.producers), "before": s.channels_before, "after": s.channels_after,
                              "threshold": s.threshold} for s in self.spaces]}


def prune_and_finetune(model: onnx.ModelProto, ratio: float, data: Dataset, epochs: int = 3, lr: float = 1e-4,
                       seed: int = 0, label: str = "model") -> PruneRun:
    """Prune ``ratio`` of every prunable channel space, then fine-tune ``epochs`` on ``data``'s train part."""
    check_data(model, data, label)
    result = prune_model(model, ratio, label)
    pruned = result.model
    if epochs > 0:
        module = OnnxModule(pruned, label)
        fit(module, data.x_train, data.y_train, epochs, lr, seed)
        pruned = module.to_onnx()
    return PruneRun(pruned, result.spaces, flops(model), flops(pruned), parameter_count(model), parameter_count(pruned),
                    model_accuracy(model, data.x_test, data.y_test), model_accuracy(pruned, data.x_test, data.y_test))
