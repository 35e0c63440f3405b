"""Train the seed CNN on the digits train split and write examples/models/seed_cnn.onnx.

Needs PyTorch (hetero itself never imports it). The ONNX file is built with
hetero.ir.models.seed_cnn from the trained weights, not with torch.onnx, then scored with
onnxruntime. Run from the repository root, e.g.:

    PYTHONPATH=. .venv-train/bin/python examples/train_seed_cnn.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from hetero.ir.datasets import load_digits_28
from hetero.ir.models import SEED_CNN_SHAPES, seed_cnn

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "models" / "seed_cnn.onnx"


class SeedCNN(nn.Module):
    """The seed CNN; parameter names match hetero.ir.models.SEED_CNN_SHAPES."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, kernel_size=3)
        self.fc1 = nn.Linear(32 * 13 * 13, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def train(epochs: int, batch_size: int, lr: float) -> dict[str, np.ndarray]:
    """Train deterministically with Adam and return the weights as float32 arrays."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_np, y_np = load_digits_28("train")
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total_loss = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total_loss / len(x):.4f}")
    state = model.state_dict()
    return {name: state[name].detach().cpu().numpy().astype(np.float32) for name in SEED_CNN_SHAPES}


def write_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to a temp file beside ``path`` then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def onnx_accuracy(path: Path, split: str) -> float:
    """Top-1 accuracy of the ONNX file on a digits split, one image at a time with onnxruntime."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    images, labels = load_digits_28(split)
    preds = [int(np.argmax(sess.run(None, {"input": img[None]})[0])) for img in images]
    return float(np.mean(np.asarray(preds) == labels))


def main() -> None:
    """Parse options, train, export, verify and report accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    weights = train(args.epochs, args.batch_size, args.lr)
    model = seed_cnn(weights=weights)
    onnx.checker.check_model(model, full_check=True)
    write_atomic(model, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    for split in ("train", "test"):
        print(f"onnxruntime {split} accuracy: {onnx_accuracy(args.output, split):.4f}")


if __name__ == "__main__":
    main()
