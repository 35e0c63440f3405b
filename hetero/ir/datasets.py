"""Small image data sets for the seed CNN: scikit-learn's digits at 28x28, and MNIST IDX files.

Images come back as float32 arrays of shape (N, 1, rows, cols) with values in [0, 1];
labels as int64 arrays of shape (N,).
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from hetero.errors import InputError

DIGITS_SIZE_PX = 28
DIGITS_MAX_VALUE = 16.0
TRAIN_FRACTION = 0.8
SPLIT_SEED = 0
SPLITS = ("train", "test", "all")

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
_GZIP_MAGIC = b"\x1f\x8b"

PathLike = str | os.PathLike[str]


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    """All digits images resized to 28x28 in [0, 1], in scikit-learn's order, with labels."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images_8 = np.asarray(bunch.images, dtype=np.float64)  # (N, 8, 8), values 0..16
    zoom = DIGITS_SIZE_PX / images_8.shape[1]
    images_28 = ndimage.zoom(images_8, (1.0, zoom, zoom), order=1)
    images = np.clip(images_28 / DIGITS_MAX_VALUE, 0.0, 1.0).astype(np.float32)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of the fixed split: seeded permutation, first 80% train."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_train = int(n * TRAIN_FRACTION)
    return perm[:n_train], perm[n_train:]


def load_digits_28(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits upsampled to 28x28: images (N,1,28,28) float32 in [0,1], labels int64.

    ``split`` is "train" (80%), "test" (the other 20%) or "all" (scikit-learn's order).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; allowed values: {', '.join(SPLITS)}")
    images, labels = _digits_all()
    if split == "all":
        return images.copy(), labels.copy()
    train_idx, test_idx = _split_indices(len(labels))
    idx = train_idx if split == "train" else test_idx
    return images[idx], labels[idx]


def calibration_digits(n: int = 100) -> np.ndarray:
    """The first ``n`` images of the digits train split, (n,1,28,28) float32, for int8 calibration."""
    images, _ = load_digits_28("train")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(images):
        raise InputError(f"calibration_digits: n must be an integer in 1..{len(images)}, got {n!r}")
    return images[:n].copy()


# ----------------------------------------------------------------------------- MNIST IDX


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by suffix or by magic)."""
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: not a valid gzip file ({exc})") from None
    return raw


def _parse_idx(path: Path, expected_magic: int, ndim: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Dimensions and flat uint8 payload of an IDX file with the given magic number."""
    data = _read_bytes(path)
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise InputError(f"{path}: truncated IDX file: {len(data)} bytes, too short for the magic number")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != expected_magic:
        raise InputError(f"{path}: bad IDX magic number {magic}, expected {expected_magic}")
    if len(data) < header_len:
        raise InputError(f"{path}: truncated IDX header: {len(data)} bytes, expected {header_len}")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected_len = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected_len:
        raise InputError(
            f"{path}: truncated IDX data: {len(data) - header_len} payload bytes, dimensions {dims} need "
            f"{expected_len - header_len}"
        )
    if len(data) > expected_len:
        raise InputError(f"{path}: {len(data) - expected_len} unexpected trailing bytes after IDX data {dims}")
    return dims, np.frombuffer(data, dtype=np.uint8, offset=header_len)


def load_mnist_idx(
    images_path: PathLike, labels_path: PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read MNIST-format IDX files (plain or .gz).

    Returns images (N,1,rows,cols) float32 in [0,1] and labels (N,) int64, or None for labels
    when ``labels_path`` is None. Malformed files raise InputError (a ValueError) naming the file.
    """
    images_file = Path(images_path)
    (n, rows, cols), payload = _parse_idx(images_file, IDX_IMAGES_MAGIC, 3)
    images = (payload.reshape(n, 1, rows, cols).astype(np.float32)) / np.float32(255.0)
    if labels_path is None:
        return images, None
    labels_file = Path(labels_path)
    (n_labels,), label_bytes = _parse_idx(labels_file, IDX_LABELS_MAGIC, 1)
    if n_labels != n:
        raise InputError(f"{labels_file}: holds {n_labels} labels but {images_file} holds {n} images")
    return images, label_bytes.astype(np.int64)


def _as_uint8_images(images: np.ndarray) -> np.ndarray:
    """(N,rows,cols) uint8 from uint8 or [0,1]-float images shaped (N,rows,cols) or (N,1,rows,cols)."""
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise InputError(f"images must be shaped (N,rows,cols) or (N,1,rows,cols), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all((arr >= 0.0) & (arr <= 1.0)):
            raise InputError("float images must lie in [0, 1]")
        return np.rint(arr * 255.0).astype(np.uint8)
    raise InputError(f"images must be uint8 or float in [0, 1], got dtype {arr.dtype}")


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data``, gzipped (reproducibly, mtime 0) when the name ends in .gz."""
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def write_mnist_idx(
    images_path: PathLike,
    images: np.ndarray,
    labels_path: PathLike | None = None,
    labels: np.ndarray | None = None,
) -> None:
    """Write images (and optionally labels) as MNIST IDX files; gzip when a name ends in .gz."""
    pixels = _as_uint8_images(images)
    n, rows, cols = pixels.shape
    if (labels_path is None) != (labels is None):
        raise InputError("labels_path and labels must be given together")
    lab: np.ndarray | None = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise InputError(f"labels must be shaped ({n},), got {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer) or lab.min(initial=0) < 0 or lab.max(initial=0) > 255:
            raise InputError("labels must be integers in 0..255")
    header = struct.pack(">iIII", IDX_IMAGES_MAGIC, n, rows, cols)
    _write_bytes(Path(images_path), header + np.ascontiguousarray(pixels).tobytes())
    if labels_path is not None and lab is not None:
        label_header = struct.pack(">iI", IDX_LABELS_MAGIC, n)
        _write_bytes(Path(labels_path), label_header + lab.astype(np.uint8).tobytes())
