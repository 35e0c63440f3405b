"""Execution backends, one module per device kind: reference (numpy), cpu (numba),
opencl (pyopencl), cuda (cupy). ``open_device`` turns a device name into a Device."""

from __future__ import annotations

from hetero.backends.base import Device
from hetero.backends.discovery import discover
from hetero.errors import DeviceError


def open_device(name: str, **options: object) -> Device:
    """Open a usable device by name (reference, cpu, opencl:N, cuda:N); options go to its backend.

    A name that is not usable here is a DeviceError saying why (the backend's or the failing
    devices' reasons) and which devices are usable."""
    kind = name.split(":")[0]
    devices, absent = discover([kind])
    info = next((d for d in devices if d.name == name), None)
    if info is None:
        present = [d.name for d in discover()[0]]
        reasons = [a.reason for a in absent if a.kind == kind]
        if kind not in ("reference", "cpu", "opencl", "cuda"):
            why = " (device kinds: reference, cpu, opencl:N, cuda:N)"
        elif reasons:
            why = f" ({'; also '.join(reasons)})"
        else:
            usable = [d.name for d in devices]
            why = f" (usable {kind} devices: {', '.join(usable)})" if usable else ""
        raise DeviceError(f"device '{name}' is not usable here{why}; usable devices: {', '.join(present)}")
    if info.kind == "reference":
        from hetero.backends.reference import ReferenceDevice

        return ReferenceDevice(info)
    if info.kind == "cpu":
        from hetero.backends.cpu.device import CpuDevice

        return CpuDevice(info, **options)  # type: ignore[arg-type]
    if info.kind == "opencl":
        from hetero.backends.opencl import OpenCLDevice

        return OpenCLDevice(info, **options)  # type: ignore[arg-type]
    if info.kind == "cuda":
        from hetero.backends.cuda import CudaDevice

        return CudaDevice(info, **options)  # type: ignore[arg-type]
    raise DeviceError(f"device '{name}' has unknown kind {info.kind}")


__all__ = ["Device", "open_device"]
