"""Where the shipped data lives: kernels/, profiles/ and the seed model.

In a source checkout (or an editable install) they sit beside the package; a wheel carries
them inside the package as hetero/_data/<name>.
"""

from __future__ import annotations

from pathlib import Path

from hetero.errors import HeteroError

_PACKAGE = Path(__file__).resolve().parent
_LOCATIONS = {
    "kernels": ("kernels", "_data/kernels"),
    "profiles": ("profiles", "_data/profiles"),
    "seed": ("examples/models", "_data/seed"),
}


def data_dir(name: str) -> Path:
    """The folder holding one kind of shipped data: kernels, profiles or seed."""
    checkout, installed = _LOCATIONS[name]
    for candidate in (_PACKAGE.parent / checkout, _PACKAGE / installed):
        if candidate.is_dir():
            return candidate
    raise HeteroError(f"hetero's {name} folder is missing from {_PACKAGE}; reinstall hetero")


def seed_model_path() -> Path:
    """The trained seed CNN shipped with hetero."""
    path = data_dir("seed") / "seed_cnn.onnx"
    if not path.is_file():
        raise HeteroError(f"the seed model {path} is missing; run examples/train_seed_cnn.py or reinstall hetero")
    return path
