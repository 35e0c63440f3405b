"""The training loop the commands share: seeded, single-threaded, mini-batch Adam; accuracy; FLOPs."""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from hetero.errors import InputError
from hetero.ir.onnx_import import import_onnx
from hetero.train.data import Dataset
from hetero.train.onnx_torch import OnnxModule

log = logging.getLogger(__name__)

BATCH_SIZE = 32
EVAL_BATCH = 256

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits, labels, batch indices) -> scalar loss."""


def deterministic(seed: int) -> torch.Generator:
    """Seed torch and run on one thread (CPU kernels on one thread are deterministic; asking
    torch.use_deterministic_algorithms would import its compiler, seconds per process); a
    generator for shuffling."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    return torch.Generator().manual_seed(seed)


def check_data(model: onnx.ModelProto, data: Dataset, label: str) -> None:
    """The data's sample shape is the model input's (batch axis aside)."""
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if list(data.x_train.shape[1:]) != dims[1:]:
        raise InputError(f"{data.name}: samples are shaped {list(data.x_train.shape[1:])} but {label} takes "
                         f"{dims[1:]} (batch aside); give data shaped (N, {', '.join(map(str, dims[1:]))})")


class Adam:
    """Adam (Kingma & Ba 2015) with the learning rate on a cosine from ``lr`` to 0 over ``steps``.

    Written out because torch.optim imports torch's compiler (torch._dynamo) when an optimizer is
    made: about 8 s per process on a small machine, longer than the training it would run here.
    A parameter whose gradient is always zero never moves (its moments stay 0).
    """

    def __init__(self, params: list[torch.nn.Parameter], lr: float, steps: int,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.steps, self.betas, self.eps = params, lr, max(1, steps), betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        lr = 0.5 * self.lr * (1.0 + math.cos(math.pi * min(self.t, self.steps) / self.steps))
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            m_hat, v_hat = m / (1.0 - b1**self.t), v / (1.0 - b2**self.t)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))


def fit(module: OnnxModule, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int,
        loss_fn: LossFn | None = None, after_backward: Callable[[], None] | None = None,
        params: list[torch.nn.Parameter] | None = None) -> None:
    """Mini-batch Adam over (x, y) for ``epochs``, the learning rate falling to 0 on a cosine;
    cross-entropy unless ``loss_fn`` is given. ``after_backward`` runs between backward and step
    (e.g. to mask gradients)."""
    gen = deterministic(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
    steps = epochs * ((len(xt) + BATCH_SIZE - 1) // BATCH_SIZE)
    opt = Adam(params if params is not None else list(module.parameters()), lr, steps)
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            opt.zero_grad()
            logits = module(xt[idx])
            loss = F.cross_entropy(logits, yt[idx]) if loss_fn is None else loss_fn(logits, yt[idx], idx)
            loss.backward()
            if after_backward is not None:
                after_backward()
            opt.step()
            total += float(loss.item()) * len(idx)
        log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, total / max(1, len(xt)))


@torch.no_grad()
def logits_of(module: OnnxModule, x: np.ndarray) -> torch.Tensor:
    """The module's outputs for every sample, in batches."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    return torch.cat([module(xt[i:i + EVAL_BATCH]) for i in range(0, len(xt), EVAL_BATCH)])


def accuracy(module: OnnxModule, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the module on (x, y)."""
    predicted = logits_of(module, x).argmax(dim=1).numpy()
    return float(np.mean(predicted == np.asarray(y)))


def model_accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an fp32 ONNX model on (x, y)."""
    return accuracy(OnnxModule(model), x, y)


def flops(model: onnx.ModelProto) -> int:
    """The model's FLOPs per inference, as hetero inspect counts them."""
    return int(import_onnx(model).totals()["flops"])


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of float parameters (initializer elements) in the model."""
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT))
