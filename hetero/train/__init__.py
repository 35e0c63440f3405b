"""Training for the edge: structured pruning, distillation, incremental adaptation (PyTorch).

The optional ``train`` extra (``pip install 'hetero[train]'``). Only the training commands import
this package; hetero's inference path (run, schedule, simulate, the runtime) never imports torch.
A model goes in and comes out as ONNX: the graph is interpreted node by node as a torch module for
training, and the trained values are written back into the same ONNX nodes.
"""

from __future__ import annotations

import importlib.util

from hetero.errors import HeteroError

INSTALL_HINT = "pip install 'hetero[train]'"


class TrainingUnavailableError(HeteroError):
    """The training extra (PyTorch) is not installed."""


def torch_available() -> bool:
    """Whether PyTorch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def require_torch(command: str) -> None:
    """Raise TrainingUnavailableError, with the one install line, when torch is missing."""
    if not torch_available():
        raise TrainingUnavailableError(f"hetero {command} needs PyTorch, which is not installed: {INSTALL_HINT}")
