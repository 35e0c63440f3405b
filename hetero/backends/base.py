"""The device protocol every backend implements, and the base class that says what is missing.

A Device moves arrays to and from its memory (``upload``/``download``), runs one op on
buffers already in its memory (``run``), and times one launch with its own clock
(``timed_run``: OpenCL event profiling, CUDA events, perf_counter on the host). Kernels are
registered per op type in the backend's kernel table; an op whose type has no kernel, or
whose kernel declines the op's dtypes or attributes (``supports``), cannot run there.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetero.backends.discovery import DeviceInfo
from hetero.errors import DeviceError
from hetero.ir.graph import Op

Buffer = Any  # a device-resident array: numpy for host devices, pyopencl/cupy arrays elsewhere
Kernel = Callable[["Device", Op, Sequence[Buffer]], list[Buffer]]
Predicate = Callable[[Op], bool]


class Device(ABC):
    """One execution device. Subclasses fill ``kernels`` and the memory methods."""

    #: op type -> kernel; a backend module fills its own table
    kernels: Mapping[str, Kernel] = {}
    #: op type -> extra condition on the op (dtype, attributes) beyond having a kernel
    conditions: Mapping[str, Predicate] = {}

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self.name = info.name
        self.kind = info.kind
        self._prepared: dict[int, Any] = {}
        self._fail_countdown: int | None = None

    def supports(self, op: Op) -> bool:
        """Whether this device has a kernel for the op as it is (type, dtypes, attributes)."""
        if op.type not in self.kernels:
            return False
        condition = self.conditions.get(op.type)
        return condition is None or bool(condition(op))

    def why_not(self, op: Op) -> str:
        """One line saying why an op cannot run here."""
        if op.type not in self.kernels:
            return f"device {self.name} has no kernel for {op.type} (node {op.name})"
        return f"device {self.name} has no {op.type} kernel for node {op.name} as configured ({op.signature()})"

    def prepared(self, op: Op, make: Callable[[], Any]) -> Any:
        """Per-op state built once (weights uploaded, packed, kernels compiled) and cached."""
        key = id(op)
        if key not in self._prepared:
            self._prepared[key] = (op, make())  # keep op alive so its id stays unique
        return self._prepared[key][1]

    def inject_failure(self, after_ops: int = 0) -> None:
        """Make the device break: after ``after_ops`` more ops, every run raises DeviceError
        (as a device that hangs or loses its context does), until ``repair()``."""
        self._fail_countdown = max(0, int(after_ops))

    def repair(self) -> None:
        """Undo ``inject_failure``."""
        self._fail_countdown = None

    def run(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        """Run one op on device buffers (its activation inputs, in order); return its outputs."""
        if self._fail_countdown is not None:
            if self._fail_countdown == 0:
                raise DeviceError(f"device {self.name} failed while running {op.name} (injected fault)")
            self._fail_countdown -= 1
        if not self.supports(op):
            raise DeviceError(self.why_not(op))
        return self.kernels[op.type](self, op, inputs)

    def timed_run(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        """Run one op and return its outputs and the seconds it took by the device's clock.

        The default times on the host around a synchronised launch; device backends override.
        """
        self.synchronize()
        start = time.perf_counter()
        outputs = self.run(op, inputs)
        self.synchronize()
        return outputs, time.perf_counter() - start

    @abstractmethod
    def upload(self, array: np.ndarray) -> Buffer:
        """Copy a host array into device memory."""

    @abstractmethod
    def download(self, buffer: Buffer) -> np.ndarray:
        """Copy a device buffer back to a host array."""

    def synchronize(self) -> None:
        """Wait until all work queued on the device has finished (host devices: nothing to do)."""

    def close(self) -> None:
        """Release device resources."""
        self._prepared.clear()


class HostDevice(Device):
    """A device whose memory is the host's: buffers are numpy arrays."""

    def upload(self, array: np.ndarray) -> Buffer:
        return np.require(array, requirements="C")

    def download(self, buffer: Buffer) -> np.ndarray:
        return np.asarray(buffer)
