"""The backend registry: every device kind hetero knows, the module whose ``probe()`` finds its
devices, and the class that opens one.

A backend module is imported only when its kind is probed or opened, so importing hetero needs
neither numba, pyopencl nor cupy; each probe runs once per process (OpenCL's child-process probe
also caches itself, see ``hetero.backends.discovery``). Adding a backend is one line here plus
its module with ``probe()`` and a Device class.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from hetero.backends.base import AbsentBackend, Device, DeviceInfo, Probe
from hetero.errors import DeviceError


@dataclass(frozen=True)
class Backend:
    """One device kind: how its devices are named, where its probe and its Device class live."""

    kind: str
    names: str  # how its devices are named: "cpu", "opencl:N"
    probe_module: str  # a module with probe() -> (usable DeviceInfos, AbsentBackends)
    device_class: str  # "module:Class", constructed as Class(info, **options)


#: every device kind, in the order devices are listed
BACKENDS: tuple[Backend, ...] = (
    Backend("reference", "reference", "hetero.backends.reference", "hetero.backends.reference:ReferenceDevice"),
    Backend("cpu", "cpu", "hetero.backends.cpu", "hetero.backends.cpu.device:CpuDevice"),
    Backend("opencl", "opencl:N", "hetero.backends.opencl", "hetero.backends.opencl:OpenCLDevice"),
    Backend("cuda", "cuda:N", "hetero.backends.cuda", "hetero.backends.cuda:CudaDevice"),
)
_BY_KIND = {backend.kind: backend for backend in BACKENDS}


@lru_cache(maxsize=None)
def probe(kind: str) -> Probe:
    """The usable devices of one kind and the absent ones with their reasons (once per process)."""
    found, absent = importlib.import_module(_BY_KIND[kind].probe_module).probe()
    return tuple(found), tuple(absent)


def discover(kinds: Iterable[str] | None = None) -> tuple[list[DeviceInfo], list[AbsentBackend]]:
    """Every usable device (reference, cpu, opencl:N, cuda:N) and every absent backend or device
    with its reason; ``kinds`` limits the search (and its cost) to those device kinds."""
    wanted = None if kinds is None else set(kinds)
    devices: list[DeviceInfo] = []
    absent: list[AbsentBackend] = []
    for backend in BACKENDS:
        if wanted is None or backend.kind in wanted:
            found, missing = probe(backend.kind)
            devices.extend(found)
            absent.extend(missing)
    return devices, absent


def device_class(kind: str) -> type[Device]:
    """The Device subclass that opens devices of ``kind``."""
    module, _, name = _BY_KIND[kind].device_class.partition(":")
    return getattr(importlib.import_module(module), name)


def open_device(name: str, **options: object) -> Device:
    """Open a usable device by name (reference, cpu, opencl:N, cuda:N); options go to its backend.

    A name that is not usable here, or an option its backend does not take, is a DeviceError
    saying why (the backend's or the failing devices' reasons) and which devices are usable."""
    if "/" in name:  # HOST/DEVICE: served by a hetero worker, opened by hetero.remote.open_devices
        raise DeviceError(f"device '{name}' is on another host: give --cluster tcp://SCHEDULER:8786 "
                          f"(where 'hetero worker SCHEDULER --name {name.split('/')[0]}' serves it)")
    kind = name.split(":")[0]
    devices, absent = discover([kind])
    info = next((d for d in devices if d.name == name), None)
    if info is None:
        present = [d.name for d in discover()[0]]
        reasons = [a.reason for a in absent if a.kind == kind]
        if kind not in _BY_KIND:
            why = f" (device kinds: {', '.join(b.names for b in BACKENDS)})"
        elif reasons:
            why = f" ({'; also '.join(reasons)})"
        else:
            usable = [d.name for d in devices]
            why = f" (usable {kind} devices: {', '.join(usable)})" if usable else ""
        raise DeviceError(f"device '{name}' is not usable here{why}; usable devices: {', '.join(present)}")
    cls = device_class(info.kind)
    accepted = [p for p in inspect.signature(cls).parameters if p != "info"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DeviceError(f"device {name} has no option '{unknown[0]}' (its options: {', '.join(accepted) or 'none'})")
    return cls(info, **options)


def kernel_coverage() -> dict[str, dict[str, bool]]:
    """For every op type in the registry, whether each device kind has a kernel for it.

    Read from the Device classes' kernel tables, so it needs no device present; a kind whose
    backend cannot be imported here (e.g. numba missing) has no kernels. A kernel may still decline
    particular forms of its op (dtype, rank, attributes): ``Device.supports`` says, per node."""
    from hetero.ir import ops

    tables: dict[str, frozenset[str]] = {}
    for backend in BACKENDS:
        try:
            tables[backend.kind] = frozenset(device_class(backend.kind).kernels)
        except ImportError:
            tables[backend.kind] = frozenset()
    return {op: {kind: op in table for kind, table in tables.items()} for op in sorted(ops.supported_ops())}
