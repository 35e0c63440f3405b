"""What the kernel backends (OpenCL, CUDA) share: the launch interface the op kernels call, and
the host-side helpers that turn shapes into the small integer tables the kernels read.

Op kernels (``opencl_ops``, ``opencl_qops``) are written once against :class:`KernelDevice`:
``launch`` a named kernel of a ``kernels/*.cl`` file over a global/local grid, ``empty`` and
``view`` device arrays, and ``constant`` for per-op data uploaded once (weights, tables).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np

from hetero.backends.base import Buffer, Device, check_int8_gemm
from hetero.ir.graph import Op
from hetero.resources import data_dir

MAX_RANK = 6  # as MAX_RANK in kernels/common.cl
LOCAL_1D = 256  # work-group size of the one-item-per-element kernels
ROW_LOCAL = 64  # work-group size of the one-group-per-row reductions and packers
TILE = 32  # TM = TN of the tiled kernels
TILE_THREADS = 8  # LX = LY of the tiled kernels (TILE / 4 outputs per item per side)
MAX_INDEX = 2**31 - 1  # the kernels index with 32-bit ints


def i32(value: Any) -> np.int32:
    """A kernel's int argument."""
    return np.int32(value)


def f32(value: Any) -> np.float32:
    """A kernel's float argument."""
    return np.float32(value)


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= value (and >= multiple)."""
    return max(multiple, -(-value // multiple) * multiple)


@lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """kernels/common.cl followed by kernels/<name>.cl, with #line markers for error messages."""
    folder = data_dir("kernels")
    parts = []
    for file in ("common", name):
        path = folder / f"{file}.cl"
        parts.append(f'#line 1 "{path.name}"\n{path.read_text(encoding="utf-8")}')
    return "\n".join(parts)


def source_digest(text: str) -> str:
    """A short stable key for a kernel source."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def kernel_files() -> list[str]:
    """Names (without .cl) of the kernel files besides common.cl."""
    return sorted(p.stem for p in data_dir("kernels").glob("*.cl") if p.stem != "common")


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Row-major element strides of a shape."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= int(dim)
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides that read an array of ``shape`` broadcast to ``out_shape`` (0 where broadcast)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out_shape, contiguous_strides(shape))]


def collapse(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dimensions and merge neighbours every stride list walks contiguously."""
    dims = [(int(d), [int(s[i]) for s in strides]) for i, d in enumerate(shape) if d != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, st in dims:
        if merged and all(prev == cur * size for prev, cur in zip(merged[-1][1], st)):
            merged[-1] = (merged[-1][0] * size, st)
        else:
            merged.append((size, st))
    if not merged:
        merged = [(1, [0] * len(strides))]
    return [m[0] for m in merged], [[m[1][k] for m in merged] for k in range(len(strides))]


def input_shape(op: Op, index: int) -> tuple[int, ...]:
    """The static shape of the op's input at ``index``."""
    spec = op.input_specs[index]
    assert spec is not None
    return spec.shape


def input_dtype(op: Op, index: int = 0) -> str:
    """The dtype name of the op's input at ``index`` ("" when absent)."""
    spec = op.input_specs[index] if index < len(op.input_specs) else None
    return "" if spec is None else spec.dtype


def fits_int32(op: Op) -> bool:
    """Every tensor of the op is indexable with the kernels' 32-bit ints."""
    specs = [s for s in (*op.input_specs, *op.output_specs) if s is not None]
    return all(s.numel <= MAX_INDEX for s in specs)


def walk_table(shape: Sequence[int], *strides: Sequence[int], extra: Sequence[int] = ()) -> np.ndarray | None:
    """[rank, shape[MAX_RANK], strides[MAX_RANK] per operand, *extra] as int32, or None when the
    collapsed rank exceeds MAX_RANK."""
    dims, walks = collapse(shape, *strides)
    if len(dims) > MAX_RANK:
        return None
    pad = [0] * (MAX_RANK - len(dims))
    table = [len(dims), *dims, *pad]
    for walk in walks:
        table += [*walk, *pad]
    return np.asarray(table + list(extra), np.int32)


class KernelDevice(Device):
    """A Device whose kernels are the kernels/*.cl sources; subclasses supply the runtime."""

    _int8_gemm = "packed"
    #: run the CPU-style kernel variants (wide work items, no local memory): OpenCL CPU devices
    cpu_style = False
    #: the CPU-style int8 products may use AVX-512 VNNI (kernels/qvnni.cl): PoCL on such a CPU
    vnni = False

    def vnni_ready(self) -> bool:
        """Whether the VNNI kernels are on and built (a backend that has them checks the build)."""
        return self.cpu_style and self.vnni

    @property
    def int8_gemm(self) -> str:
        """The int8 product path: "packed" runs on packed bytes (DOT4, CUDA dp4a), "tiled" on plain bytes."""
        return self._int8_gemm

    @int8_gemm.setter
    def int8_gemm(self, path: str) -> None:
        self._int8_gemm = check_int8_gemm(self.name, path)

    @abstractmethod
    def launch(self, file: str, name: str, global_size: Sequence[int], local_size: Sequence[int], *args: Any) -> None:
        """Enqueue kernel ``name`` of kernels/<file>.cl; global sizes are multiples of local sizes."""

    @abstractmethod
    def empty(self, shape: Sequence[int], dtype: Any) -> Buffer:
        """An uninitialised contiguous device array."""

    @abstractmethod
    def view(self, buffer: Buffer, shape: Sequence[int]) -> Buffer:
        """The same device memory seen with another shape (no copy)."""

    @property
    @abstractmethod
    def dummy(self) -> Buffer:
        """A small device buffer passed for absent optional kernel arguments."""

    def launch_1d(self, file: str, name: str, n: int, *args: Any) -> None:
        """One work item per element for n elements (nothing when n == 0)."""
        if n > 0:
            self.launch(file, name, (round_up(n, LOCAL_1D),), (LOCAL_1D,), *args)

    def constant(self, op: Op, key: str, make: Callable[[], Any]) -> Buffer:
        """A device copy of ``make()`` built and uploaded once per op (weights, tables)."""
        store = self.prepared(op, dict)
        if key not in store:
            store[key] = self.upload(np.ascontiguousarray(make()))
        return store[key]

    def host_value(self, op: Op, key: str, make: Callable[[], Any]) -> Any:
        """A host-side value computed once per op (multipliers, geometry)."""
        store = self.prepared(op, dict)
        if key not in store:
            store[key] = make()
        return store[key]

    def operands(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        """Every input of the op in ONNX order (None where absent): activations as given,
        constants uploaded once."""
        return op.arguments(inputs, lambda name: self.constant(op, f"w:{name}", lambda: op.weights[name]))

    def int8_gemm_raw(self, left: Buffer, right: Buffer, rows: int, cols: int, k4: int) -> Buffer | None:
        """raw[rows][cols] = left[rows][4*k4] . right[cols][4*k4]^T on signed bytes, by a vendor
        library, or None when the backend has none (the packed DOT4 kernel runs instead)."""
        return None
