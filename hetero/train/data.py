"""Training data: the digits (also in a new domain: inverted or shifted) or an .npz of x and y arrays.

A DATA argument is ``digits`` or ``digits:DOMAIN`` (the digits' train split trains, its test split
scores) or a path to an .npz holding ``x`` (N, ...) float and ``y`` (N,) integer labels, split
80/20 with a fixed seed into train and held-out parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetero.errors import InputError
from hetero.ir.datasets import load_digits_28

DIGITS = "digits"
SHIFT_PX = 4
DOMAINS = ("plain", "inverted", "shifted")
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Images and labels for training and for held-out scoring."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def in_domain(images: np.ndarray, domain: str) -> np.ndarray:
    """The digits in a domain: plain, inverted (1 - x) or shifted (SHIFT_PX right and down, zero fill)."""
    if domain == "plain":
        return images.copy()
    if domain == "inverted":
        return (1.0 - images).astype(np.float32)
    if domain == "shifted":
        out = np.zeros_like(images)
        out[..., SHIFT_PX:, SHIFT_PX:] = images[..., :-SHIFT_PX, :-SHIFT_PX]
        return out
    raise InputError(f"unknown digits domain {domain!r}; allowed: {', '.join(DOMAINS)} (write digits:DOMAIN)")


def digits(domain: str = "plain") -> Dataset:
    """The 28x28 digits in a domain, on their fixed train/test split."""
    x_train, y_train = load_digits_28("train")
    x_test, y_test = load_digits_28("test")
    name = DIGITS if domain == "plain" else f"{DIGITS}:{domain}"
    return Dataset(name, in_domain(x_train, domain), y_train.copy(), in_domain(x_test, domain), y_test.copy())


def load_npz(path: str) -> Dataset:
    """An .npz with arrays ``x`` and ``y``, split 80/20 (seeded) into train and held-out parts."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--data {path}: no such file (give an .npz with arrays x and y, or digits[:DOMAIN])")
    try:
        with np.load(file) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise InputError(f"{path}: needs arrays named x (inputs) and y (labels); it holds {', '.join(arrays.files)}")
            x, y = np.asarray(arrays["x"], dtype=np.float32), np.asarray(arrays["y"])
    except (OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"{path}: not a readable .npz ({err})") from None
    if len(x) != len(y) or len(y) < 2:
        raise InputError(f"{path}: x holds {len(x)} samples and y {len(y)} labels; give the same number, at least 2")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise InputError(f"{path}: y must hold class indices (integers >= 0), got dtype {y.dtype}")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(len(y))
    n_test = max(1, int(round(len(y) * HOLDOUT_FRACTION)))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset(path, x[train], y[train].astype(np.int64), x[test], y[test].astype(np.int64))


def load_data(spec: str) -> Dataset:
    """The Dataset a DATA argument names: digits, digits:DOMAIN or an .npz path."""
    if spec == DIGITS or spec.startswith(DIGITS + ":"):
        domain = spec.partition(":")[2] or "plain"
        if domain not in DOMAINS:
            raise InputError(f"{spec}: unknown digits domain {domain!r}; allowed: {', '.join(DOMAINS)} (write digits:DOMAIN)")
        return digits(domain)
    return load_npz(spec)


def write_npz(path: str | Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write a DATA file (arrays x and y)."""
    np.savez(path, x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64))
