"""The device protocol every backend implements, and the base class that says what is missing.

A Device moves arrays to and from its memory (``upload``/``download``), runs one op on
buffers already in its memory (``run``), and times one launch with its own clock
(``timed_run``: OpenCL event profiling, CUDA events, perf_counter on the host). Kernels are
registered per op type in the backend's kernel table; an op whose type has no kernel, or
whose kernel declines the op's dtypes or attributes (``supports``), cannot run there.

Each backend module also has a ``probe()`` returning the devices of its kind usable here
(:class:`DeviceInfo`) and why the others are absent (:class:`AbsentBackend`); the registry
(``hetero.backends.registry``) asks them. The options backends share (``throttle``, ``int8_gemm``)
are checked here, once.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetero.errors import DeviceError
from hetero.ir.graph import Op
from hetero.ir.ops.mlas import feeds_quantize

log = logging.getLogger(__name__)

Buffer = Any  # a device-resident array: numpy for host devices, pyopencl/cupy arrays elsewhere
Kernel = Callable[["Device", Op, Sequence[Buffer]], list[Buffer]]
Predicate = Callable[[Op], bool]


@dataclass(frozen=True)
class DeviceInfo:
    """A device hetero can run on: its name (reference, cpu, opencl:N, cuda:N) and identity."""

    name: str
    kind: str
    description: str
    vendor: str
    compute_units: int
    memory_bytes: int
    platform: str = ""  # OpenCL: the platform's name and version ("" for other kinds)
    driver: str = ""  # OpenCL: the driver library, and who installed it when known

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class AbsentBackend:
    """A backend (or one device of it) hetero knows but cannot use here, and why."""

    kind: str
    reason: str
    device: str = ""  # the unusable device and its platform, when one was found


#: what a backend's ``probe()`` returns: its usable devices and its absent ones with their reasons
Probe = tuple[tuple[DeviceInfo, ...], tuple[AbsentBackend, ...]]

INT8_GEMM_PATHS = ("packed", "tiled")


def check_throttle(device: str, factor: object) -> float:
    """The ``throttle`` option (a slow-down factor, finite and >= 1) as a float, else a DeviceError."""
    try:
        value = float(factor)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DeviceError(f"device {device}: throttle must be a number >= 1, got {factor!r}") from None
    if not math.isfinite(value) or value < 1.0:
        raise DeviceError(f"device {device}: throttle must be a finite factor >= 1, got {factor}")
    return value


def check_int8_gemm(device: str, path: object) -> str:
    """The ``int8_gemm`` option (the kernel backends' int8 product path), else a DeviceError."""
    if path not in INT8_GEMM_PATHS:
        raise DeviceError(f"device {device}: int8_gemm must be 'packed' or 'tiled', got {path!r}")
    return str(path)


def on_host_cores(identity: Mapping[str, object]) -> bool:
    """Whether a device (its identity: ``DeviceInfo.to_dict()`` or a profile's record) computes on
    the host's CPU cores: the cpu device, an OpenCL device on the CPU (PoCL's pthread driver)."""
    kind = str(identity.get("kind", ""))
    description = str(identity.get("description", "")).lower()
    return kind == "cpu" or (kind == "opencl" and ("pthread" in description or "cpu" in description.split("-")[0]))


def host_cpu_name() -> str:
    """The host CPU's model name (/proc/cpuinfo, else what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError as err:
        log.debug("cannot read /proc/cpuinfo: %s", err)
    return platform.processor() or platform.machine()


def host_memory_bytes() -> int:
    """The host's physical memory (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


class Device(ABC):
    """One execution device. Subclasses fill ``kernels`` and the memory methods."""

    #: op type -> kernel; a backend module fills its own table
    kernels: Mapping[str, Kernel] = {}
    #: op type -> extra condition on the op (dtype, attributes) beyond having a kernel
    conditions: Mapping[str, Predicate] = {}
    same_bits_as_reference: frozenset[str] = frozenset()  # float op types whose kernels round as the reference

    def __init__(self, info: DeviceInfo) -> None:
        self.info = info
        self.name = info.name
        self.kind = info.kind
        self._prepared: dict[int, Any] = {}
        self._fail_countdown: int | None = None
        self._throttle = 1.0

    @property
    def throttle(self) -> float:
        """Slow-down factor >= 1 (1: full speed); backends that honour it (cpu, opencl, cuda)
        make each op really take this many times its own time."""
        return self._throttle

    @throttle.setter
    def throttle(self, factor: float) -> None:
        self._throttle = check_throttle(self.name, factor)

    def supports(self, op: Op) -> bool:
        """Whether this device has a kernel for the op as it is (type, dtypes, attributes). A float
        op whose output an int8 graph quantizes (``mlas.feeds_quantize``) runs only where the
        kernel gives the reference's float32 bits (``same_bits_as_reference``)."""
        if op.type not in self.kernels:
            return False
        if feeds_quantize(op) and op.type not in self.same_bits_as_reference:
            return False
        condition = self.conditions.get(op.type)
        return condition is None or bool(condition(op))

    def why_not(self, op: Op) -> str:
        """One line saying why an op cannot run here."""
        if op.type not in self.kernels:
            return f"device {self.name} has no kernel for {op.type} (node {op.name})"
        if feeds_quantize(op) and op.type not in self.same_bits_as_reference:
            return (f"device {self.name}: node {op.name} ({op.type}) feeds a QuantizeLinear or DynamicQuantizeLinear and this device's "
                    f"{op.type} does not give the reference's float32 bits; run it on another device")
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

    def timed_run_native(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        """``timed_run`` for a caller that hands buffers from op to op on this device and only
        ever ``download``s them (the runtime): a backend may then return buffers in its own
        layout (the cpu device keeps channels-last tensors as they are). The default is ``timed_run``."""
        return self.timed_run(op, inputs)

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
