"""Reading user arrays (checked against a model's inputs) and writing a command's outputs all or none.

A command that writes files collects them in an :class:`OutputSet`: the targets are checked
before the work starts (a folder that cannot take a new file, a path that is a folder or lies
under a regular file, two outputs to one path), every file is rendered to bytes, and
:meth:`OutputSet.commit` writes them all through temporary files in their folders, then renames
them into place. When anything fails, what this command already wrote is removed (a file it
replaced is put back), so a failed command leaves no file behind. A command that writes a whole
folder (``hetero demo``) writes into :func:`staged_folder` and its files move in only when it
succeeds. Files get the permissions of the user's umask (0666 & ~umask), like any other tool's.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

from hetero.errors import InputError, OutputError

if TYPE_CHECKING:
    from hetero.ir.graph import Graph

log = logging.getLogger(__name__)


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """"; did you mean 'x'?" for the closest of ``options`` (a typo in a key or name), else ""."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def read_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray] | np.ndarray:
    """An .npy file as one array, or an .npz file as arrays by name."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an .npy/.npz array file")
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = {name: loaded[name] for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).split(". ")[0].strip() or type(err).__name__
        raise InputError(f"{path}: not a readable .npy/.npz array file ({first}); save it with numpy.save or numpy.savez") from None
    if isinstance(loaded, dict) and not loaded:
        raise InputError(f"{path}: the .npz file holds no arrays; save one per model input, by input name")
    return loaded


def check_array(graph: Graph, name: str, array: np.ndarray, path: str, allow_nonfinite: bool = False) -> np.ndarray:
    """One user array for graph input ``name``: dtype as the model declares it (a lossless cast
    within the same kind, such as float16 to float32, is made and logged; anything else is
    refused), and finite unless ``allow_nonfinite``. Shapes are checked by the caller."""
    spec = next(s for s in graph.inputs if s.name == name)
    expected = np.dtype(spec.dtype)
    if array.dtype != expected:
        lossless = np.can_cast(array.dtype, expected, casting="safe") and array.dtype.kind == expected.kind
        if not lossless:
            raise InputError(f"{path}: input '{name}' is {array.dtype}, model {graph.name} expects {expected}; "
                             f"convert it first (numpy: x.astype(np.{expected}))")
        log.warning("%s: input '%s' is %s; cast to %s (lossless)", path, name, array.dtype, expected)
        array = array.astype(expected)
    if np.issubdtype(array.dtype, np.floating) and not allow_nonfinite:
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{path}: input '{name}' holds {bad} NaN/Inf values of {array.size}; "
                             "fix the data, or pass --allow-nonfinite to run on it anyway")
    return array


def _samples(graph: Graph, name: str, array: np.ndarray, path: str, extra_axis: bool) -> tuple[int | None, bool]:
    """(None, _) when the array is one request; (N, indexed) when it stacks N samples along a
    leading axis: the model's batch axis of 1 (indexed False), or, with ``extra_axis``, a new
    first axis before the model's full input shape (indexed True)."""
    spec = next(s for s in graph.inputs if s.name == name)
    if array.ndim == 0:
        raise InputError(f"{path}: input '{name}' is a scalar; model {graph.name} expects shape {list(spec.shape)}")
    if tuple(array.shape) == spec.shape:
        return None, False
    along_batch = array.ndim == len(spec.shape) and spec.shape[0] == 1 and array.shape[1:] == spec.shape[1:]
    along_new = extra_axis and array.ndim == len(spec.shape) + 1 and tuple(array.shape[1:]) == spec.shape
    if (along_batch or along_new) and array.shape[0] == 0:
        raise InputError(f"{path}: input '{name}' has shape {list(array.shape)}: no samples; give at least one")
    if along_batch or along_new:
        return int(array.shape[0]), along_new
    if extra_axis:  # a calibration set
        raise InputError(f"{path}: calibration samples have shape {list(array.shape[1:])}, model {graph.name} input "
                         f"'{name}' is {list(spec.shape)}; stack samples along a first axis")
    stacked = f" (or N x {list(spec.shape[1:])} for N samples)" if spec.shape[:1] == (1,) else ""
    raise InputError(f"{path}: input '{name}' has shape {list(array.shape)}, model {graph.name} expects "
                     f"{list(spec.shape)}{stacked}")


def requests_from(graph: Graph, loaded: np.ndarray | Mapping[str, np.ndarray], path: str,
                  allow_nonfinite: bool = False, extra_axis: bool = False) -> list[dict[str, np.ndarray]]:
    """Checked requests from a loaded input file: one per sample along a leading axis, or one.

    ``extra_axis`` also accepts samples stacked along a new first axis (calibration sets)."""
    names = [s.name for s in graph.inputs]
    if not isinstance(loaded, Mapping):
        if len(names) != 1:
            raise InputError(f"{path}: model {graph.name} has {len(names)} inputs ({', '.join(names)}); "
                             "pass an .npz with one array per input name")
        loaded = {names[0]: loaded}
    unknown = sorted(set(loaded) - set(names))
    if unknown:
        raise InputError(f"{path}: model {graph.name} has no input '{unknown[0]}' (inputs: {', '.join(names)})"
                         f"{did_you_mean(unknown[0], names)}")
    missing = [n for n in names if n not in loaded]
    if missing:
        raise InputError(f"{path}: no array for input '{missing[0]}' (the .npz needs one per input: {', '.join(names)})")
    layout = {n: _samples(graph, n, np.asarray(loaded[n]), path, extra_axis) for n in names}
    arrays = {n: check_array(graph, n, np.asarray(loaded[n]), path, allow_nonfinite) for n in names}
    counts = {n: count for n, (count, _) in layout.items()}
    if len(set(counts.values())) > 1:
        raise InputError(f"{path}: inputs stack different numbers of samples ({counts}); give each the same")
    count = counts[names[0]]
    if count is None:
        return [arrays]
    return [{n: arrays[n][i] if layout[n][1] else arrays[n][i : i + 1] for n in names} for i in range(count)]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(".")


def check_target(path: str | os.PathLike[str], option: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot take a new file; the path as given."""
    target = Path(path)
    name = str(path)
    if not name or name.endswith(os.sep):
        raise OutputError(f"{option} {name!r}: give a file name, not a folder")
    if target.is_dir():
        raise OutputError(f"{option} {name}: is a folder; give a file name inside it")
    if target.exists() and not target.is_file():
        raise OutputError(f"{option} {name}: is not a regular file (a device or pipe); write to a regular file")
    folder = _nearest_existing(target)
    if not folder.is_dir():
        raise OutputError(f"{option} {name}: {folder} is a file, not a folder; choose another path")
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".hetero-probe.", suffix=".tmp")
    except OSError as err:
        raise OutputError(f"{option} {name}: cannot create files in {folder} ({err.strerror or err}); choose another path") from None
    os.close(handle)
    os.unlink(probe)
    return target


def check_folder(path: str | os.PathLike[str], option: str = "-o") -> Path:
    """Refuse, before any work, an output folder that is a file, lies under one, or cannot take files."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a folder; give a folder for the outputs")
    if not folder.exists():
        existing = _nearest_existing(folder)
        if not existing.is_dir():
            raise OutputError(f"{option} {path}: {existing} is a file, not a folder; choose another path")
    check_target(folder / ".hetero-probe", option)
    return folder


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike[str], option: str = "-o") -> Iterator[Path]:
    """A temporary folder next to ``path`` to write a command's many outputs into; when the block
    ends without error its files are moved into ``path`` (replacing files of the same name, keeping
    the others), and when it fails the temporary folder is removed, so ``path`` is left as it was."""
    target = check_folder(path, option)
    staging = Path(tempfile.mkdtemp(dir=_nearest_existing(target / "x"), prefix=".hetero-staging."))
    try:
        yield staging
        _make_parents(target)
        target.mkdir(exist_ok=True)
        for source in sorted(staging.rglob("*")):
            destination = target / source.relative_to(staging)
            if source.is_dir():
                destination.mkdir(exist_ok=True)
            else:
                os.replace(source, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class _Pending:
    option: str
    path: Path
    data: bytes | None = None


class OutputSet:
    """A command's output files, checked up front and written all or none.

        outputs = OutputSet({"-o": args.output, "--trace": args.trace})   # None: not wanted
        ... the work ...
        if outputs.wants("--trace"):
            outputs.put("--trace", trace_bytes)
        outputs.put("-o", result_bytes)
        outputs.commit()
    """

    def __init__(self, targets: Mapping[str, str | os.PathLike[str] | None]) -> None:
        self._pending: dict[str, _Pending] = {}
        seen: dict[str, str] = {}
        for option, path in targets.items():
            if path is None:
                continue
            target = check_target(path, option)
            key = os.path.realpath(target)
            if key in seen:
                raise OutputError(f"{option} {path}: {seen[key]} writes the same file; give each output its own path")
            seen[key] = option
            self._pending[option] = _Pending(option, target)

    def wants(self, option: str) -> bool:
        return option in self._pending

    def path(self, option: str) -> Path:
        return self._pending[option].path

    def put(self, option: str, data: bytes) -> None:
        """The rendered bytes of one output (only for an option given a path)."""
        self._pending[option].data = bytes(data)

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self._pending.values()]

    def commit(self) -> list[Path]:
        """Write every output; on any failure remove what was written and raise OutputError."""
        missing = [p.option for p in self._pending.values() if p.data is None]
        if missing:
            raise OutputError(f"{missing[0]}: nothing was rendered for it (a bug in hetero)")
        created_dirs: list[Path] = []
        temps: list[tuple[_Pending, str]] = []
        placed: list[tuple[Path, str | None]] = []  # (target, backup of the file it replaced)
        mode = 0o666 & ~_umask()
        current: _Pending | None = None
        try:
            for pending in self._pending.values():
                current = pending
                created_dirs += _make_parents(pending.path.parent)
                handle, temp = tempfile.mkstemp(dir=pending.path.parent, prefix=f".{pending.path.name}.", suffix=".tmp")
                temps.append((pending, temp))
                with os.fdopen(handle, "wb") as out:
                    os.fchmod(out.fileno(), mode)
                    out.write(pending.data or b"")
            for pending, temp in temps:
                current = pending
                backup = _backup(pending.path)
                os.replace(temp, pending.path)
                placed.append((pending.path, backup))
            for _, backup in placed:
                if backup is not None:
                    os.unlink(backup)
        except BaseException as err:
            _undo(temps, placed, created_dirs)
            if isinstance(err, OSError) and current is not None:
                raise OutputError(f"{current.option} {current.path}: cannot write ({err.strerror or err}); "
                                  "nothing was written") from None
            raise
        return self.paths


def _make_parents(folder: Path) -> list[Path]:
    """Create missing folders; the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir()
    return list(reversed(missing))


def _backup(path: Path) -> str | None:
    """A hard link to a file about to be replaced, so a failed commit can put it back."""
    if not path.is_file():
        return None
    backup = path.with_name(f".{path.name}.{os.getpid()}.bak")
    try:
        os.link(path, backup)
    except OSError:
        return None
    return str(backup)


def _undo(temps: list[tuple[_Pending, str]], placed: list[tuple[Path, str | None]], created_dirs: list[Path]) -> None:
    for _, temp in temps:
        if os.path.exists(temp):
            os.unlink(temp)
    for target, backup in placed:
        try:
            if backup is not None:
                os.replace(backup, target)
            else:
                os.unlink(target)
        except OSError as err:
            log.warning("could not remove %s after a failed write: %s", target, err)
    for folder in reversed(created_dirs):
        try:
            folder.rmdir()
        except OSError:
            pass


def write_atomic(path: str | os.PathLike[str], data: bytes, option: str = "output") -> None:
    """Write one file all or nothing (see :class:`OutputSet`)."""
    outputs = OutputSet({option: path})
    outputs.put(option, data)
    outputs.commit()


def array_bytes(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> bytes:
    """One array as .npy, several as .npz (by name): the bytes to write at path."""
    buffer = io.BytesIO()
    if str(path).endswith(".npz"):
        np.savez(buffer, **arrays)
    elif len(arrays) == 1:
        np.save(buffer, next(iter(arrays.values())))
    else:
        raise InputError(f"{path}: the model has {len(arrays)} outputs; write them to an .npz file")
    return buffer.getvalue()


def write_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """One array to .npy, several to .npz (by name), atomically."""
    write_atomic(path, array_bytes(path, arrays))


def json_safe(value: Any) -> Any:
    """NaN and infinity become null, tuples lists, so the value dumps as standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
