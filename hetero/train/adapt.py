"""Incremental learning on new data (article eq. 5): update only the parameters the new data moves.

    g_i = (1 / B) * sum over the B mini-batches of the new data of || dL/d theta_i ||_2 / sqrt(|theta_i|)
    update { theta_i : g_i >= epsilon }

A parameter group theta_i is one filter or neuron: a slice along the first axis of a weight or bias
tensor. Instead of epsilon, ``fraction`` picks the groups with the largest g_i until they hold that
share of the parameters. Dividing by the root of the group's size makes g_i the per-parameter
(root-mean-square) gradient, so a 9-weight filter and a 5408-weight neuron compete fairly. Against forgetting, old samples are replayed among the new ones and an
L2 term pulls the updated parameters towards their old values (L2-SP, Li et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from hetero.errors import InputError
from hetero.train.data import Dataset
from hetero.train.loop import BATCH_SIZE, accuracy, check_data, deterministic, fit
from hetero.train.onnx_torch import OnnxModule


@dataclass(frozen=True)
class AdaptResult:
    """The adapted model, accuracies before and after on new and old held-out data, and what moved."""

    model: onnx.ModelProto
    new_before: float
    new_after: float
    old_before: float | None
    old_after: float | None
    updated_fraction: float
    updated_groups: int
    groups: int
    epsilon: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {"accuracy_new_before": self.new_before, "accuracy_new_after": self.new_after,
                "accuracy_old_before": self.old_before, "accuracy_old_after": self.old_after,
                "updated_fraction": self.updated_fraction, "updated_groups": self.updated_groups,
                "groups": self.groups, "epsilon": self.epsilon}


def gradient_norms(module: OnnxModule, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """g_i per group: for each parameter, the mean over mini-batches of each first-axis slice's RMS gradient."""
    sums = {name: np.zeros(p.shape[0] if p.dim() else 1) for name, p in module.named_onnx_parameters().items()}
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    batches = 0
    for start in range(0, len(xt), BATCH_SIZE):
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(xt[start:start + BATCH_SIZE]), yt[start:start + BATCH_SIZE]).backward()
        for name, p in module.named_onnx_parameters().items():
            grad = p.grad.reshape(p.shape[0] if p.dim() else 1, -1)
            sums[name] += (grad.norm(dim=1) / np.sqrt(grad.shape[1])).numpy()
        batches += 1
    module.zero_grad()
    return {name: total / max(1, batches) for name, total in sums.items()}


def select_groups(norms: dict[str, np.ndarray], sizes: dict[str, int], epsilon: float | None,
                  fraction: float | None) -> tuple[dict[str, np.ndarray], float]:
    """Masks (True: update) per parameter from eq. 5's threshold, or the top ``fraction`` of parameters by g_i."""
    if (epsilon is None) == (fraction is None):
        raise InputError("give one of --epsilon E or --fraction F")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise InputError(f"--fraction {fraction}: give the share of parameters to update, in (0, 1]")
        ranked = sorted(((g, name, i) for name, values in norms.items() for i, g in enumerate(values)), key=lambda t: -t[0])
        total = sum(sizes[name] * len(values) for name, values in norms.items())
        masks = {name: np.zeros(len(values), dtype=bool) for name, values in norms.items()}
        taken, threshold = 0, float("inf")
        for g, name, i in ranked:
            if g <= 0.0 or (taken + sizes[name] > fraction * total and taken > 0):
                break  # a group the new data does not move is never updated
            masks[name][i] = True
            taken += sizes[name]
            threshold = g
        return masks, float(threshold)
    if epsilon is None or epsilon < 0:
        raise InputError(f"--epsilon {epsilon}: the gradient-norm threshold must be >= 0")
    return {name: values >= epsilon for name, values in norms.items()}, float(epsilon)


def adapt(model: onnx.ModelProto, new: Dataset, replay: Dataset | None = None, old: Dataset | None = None,
          epsilon: float | None = None, fraction: float | None = None, epochs: int = 5, lr: float = 2e-3,
          regulariser: float = 1e-4, seed: int = 0) -> AdaptResult:
    """Fine-tune the groups eq. 5 selects on ``new`` (with ``replay`` samples mixed in); score on held-out new and old."""
    if regulariser < 0:
        raise InputError(f"--reg {regulariser}: the weight of the L2 pull to the old parameters must be >= 0")
    module = OnnxModule(model, "the model")
    check_data(model, new, "the model")
    old = old if old is not None else replay
    deterministic(seed)
    new_before = accuracy(module, new.x_test, new.y_test)
    old_before = accuracy(module, old.x_test, old.y_test) if old is not None else None
    params = module.named_onnx_parameters()
    sizes = {name: int(p[0].numel()) if p.dim() else 1 for name, p in params.items()}
    masks, epsilon = select_groups(gradient_norms(module, new.x_train, new.y_train), sizes, epsilon, fraction)
    mask_tensors = {name: torch.from_numpy(m).reshape((-1,) + (1,) * (params[name].dim() - 1)).to(torch.float32)
                    for name, m in masks.items()}
    anchors = {name: p.detach().clone() for name, p in params.items()}
    x, y = new.x_train, new.y_train
    if replay is not None:
        check_data(model, replay, "the model")
        x, y = np.concatenate([x, replay.x_train]), np.concatenate([y, replay.y_train])

    def loss(logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pull = sum(((params[n] - anchors[n]) ** 2 * mask_tensors[n]).sum() for n in params)
        return torch.nn.functional.cross_entropy(logits, labels) + regulariser * pull

    def mask_gradients() -> None:
        for name, p in params.items():
            if p.grad is not None:
                p.grad.mul_(mask_tensors[name])

    fit(module, x, y, epochs, lr, seed, loss_fn=loss, after_backward=mask_gradients)
    updated = sum(int(m.sum()) * sizes[n] for n, m in masks.items())
    total = sum(len(m) * sizes[n] for n, m in masks.items())
    return AdaptResult(module.to_onnx(), new_before, accuracy(module, new.x_test, new.y_test), old_before,
                       accuracy(module, old.x_test, old.y_test) if old is not None else None,
                       updated / total, sum(int(m.sum()) for m in masks.values()), sum(len(m) for m in masks.values()), epsilon)
