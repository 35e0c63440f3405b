"""Knowledge distillation (article eq. 3-4): a small student learns from a teacher's softened outputs.

    L = L_CE(y_s, y) + lambda * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

z_t and z_s are the teacher's and the student's logits, T the temperature, lambda the weight of the
distillation term (Hinton et al. 2015; the T^2 keeps its gradients on the scale of the hard loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch
import torch.nn.functional as F

from hetero.errors import InputError
from hetero.train.data import Dataset
from hetero.train.loop import accuracy, check_data, fit, flops, logits_of
from hetero.train.onnx_torch import OnnxModule


@dataclass(frozen=True)
class DistillResult:
    """The trained student and how it compares with its teacher (held-out accuracy, FLOPs)."""

    model: onnx.ModelProto
    teacher_accuracy: float
    student_accuracy: float
    teacher_flops: int
    student_flops: int

    def to_dict(self) -> dict[str, float | int]:
        return {"teacher_accuracy": self.teacher_accuracy, "student_accuracy": self.student_accuracy,
                "teacher_flops": self.teacher_flops, "student_flops": self.student_flops,
                "flops_ratio": self.student_flops / self.teacher_flops}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, weight: float) -> torch.Tensor:
    """Eq. 3-4: hard cross-entropy plus weight * T^2 * KL(teacher || student) at temperature T."""
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean")
    return hard + weight * temperature * temperature * soft


def distill(teacher: onnx.ModelProto, student: onnx.ModelProto, data: Dataset, epochs: int = 20,
            temperature: float = 4.0, weight: float = 1.0, lr: float = 3e-3, seed: int = 0) -> DistillResult:
    """Train ``student`` on ``data`` against ``teacher`` (frozen); score both on the held-out part."""
    if temperature <= 0:
        raise InputError(f"--temperature {temperature}: must be > 0")
    if weight < 0:
        raise InputError(f"--alpha {weight}: the weight of the distillation term must be >= 0")
    teacher_module, student_module = OnnxModule(teacher, "the teacher"), OnnxModule(student, "the student")
    check_data(teacher, data, "the teacher")
    check_data(student, data, "the student")
    teacher_logits = logits_of(teacher_module, data.x_train)

    def loss(logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, teacher_logits[idx], labels, temperature, weight)

    fit(student_module, data.x_train, data.y_train, epochs, lr, seed, loss_fn=loss)
    trained = student_module.to_onnx()
    return DistillResult(trained, accuracy(teacher_module, data.x_test, data.y_test),
                         accuracy(student_module, data.x_test, data.y_test), flops(teacher), flops(trained))
