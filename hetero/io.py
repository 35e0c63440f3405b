"""Reading user arrays and writing outputs atomically (a failed command leaves nothing half-written)."""

from __future__ import annotations

import io
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hetero.errors import InputError


def read_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | np.ndarray:
    """An .npy file as one array, or an .npz file as arrays by name."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(f"{path}: not a readable .npy/.npz array file ({err})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    return loaded


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to path through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """One array to .npy, several to .npz (by name), atomically."""
    buffer = io.BytesIO()
    if str(path).endswith(".npz"):
        np.savez(buffer, **arrays)
    elif len(arrays) == 1:
        np.save(buffer, next(iter(arrays.values())))
    else:
        raise InputError(f"{path}: the model has {len(arrays)} outputs; write them to an .npz file")
    write_atomic(path, buffer.getvalue())


def json_safe(value: Any) -> Any:
    """NaN and infinity become null, tuples lists, so the value dumps as standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
