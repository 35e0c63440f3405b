"""Execution backends, one module per device kind: reference (numpy), cpu (numba),
opencl (pyopencl), cuda (cupy). ``open_device`` turns a device name into a Device."""

from __future__ import annotations

from hetero.backends.base import Device
from hetero.devices import discover
from hetero.errors import DeviceError


def open_device(name: str, **options: object) -> Device:
    """Open a present device by name (reference, cpu, opencl:N, cuda:N); options go to its backend."""
    devices, absent = discover()
    by_name = {d.name: d for d in devices}
    info = by_name.get(name)
    if info is None:
        kind = name.split(":")[0]
        reasons = [a.reason for a in absent if a.kind == kind]
        why = f" ({reasons[0]})" if reasons else ""
        raise DeviceError(f"device '{name}' is not present{why}; present devices: {', '.join(by_name)}")
    if info.kind == "reference":
        from hetero.backends.reference import ReferenceDevice

        return ReferenceDevice(info)
    if info.kind == "cpu":
        from hetero.backends.cpu import CpuDevice

        return CpuDevice(info, **options)  # type: ignore[arg-type]
    if info.kind == "opencl":
        from hetero.backends.opencl import OpenCLDevice

        return OpenCLDevice(info, **options)  # type: ignore[arg-type]
    if info.kind == "cuda":
        from hetero.backends.cuda import CudaDevice

        return CudaDevice(info, **options)  # type: ignore[arg-type]
    raise DeviceError(f"device '{name}' has unknown kind {info.kind}")


__all__ = ["Device", "open_device"]
