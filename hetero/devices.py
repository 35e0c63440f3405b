"""Device discovery: what is really present on this machine, and why each absent backend is absent."""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    """A device hetero can run on: its name (reference, cpu, opencl:N, cuda:N) and identity."""

    name: str
    kind: str
    description: str
    vendor: str
    compute_units: int
    memory_bytes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class AbsentBackend:
    """A backend hetero knows but cannot use here, and why."""

    kind: str
    reason: str


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError as err:
        log.debug("cannot read /proc/cpuinfo: %s", err)
    return platform.processor() or platform.machine()


def _host_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _cpu_devices() -> tuple[list[DeviceInfo], list[AbsentBackend]]:
    name, memory, cores = _cpu_name(), _host_memory_bytes(), os.cpu_count() or 1
    found = [DeviceInfo("reference", "reference", f"numpy on {name}", "numpy", 1, memory)]
    try:
        import numba
    except ImportError as err:
        return found, [AbsentBackend("cpu", f"numba cannot be imported ({err}); pip install numba")]
    found.append(DeviceInfo("cpu", "cpu", f"{name} (numba {numba.__version__})", "numba", cores, memory))
    return found, []


def _opencl_devices() -> tuple[list[DeviceInfo], list[AbsentBackend]]:
    try:
        import pyopencl as cl
    except ImportError as err:
        return [], [AbsentBackend("opencl", f"pyopencl cannot be imported ({err}); pip install pyopencl pocl-binary-distribution")]
    try:
        platforms = cl.get_platforms()
    except cl.Error as err:
        return [], [AbsentBackend("opencl", f"no OpenCL platform ({err}); install an ICD, e.g. pip install pocl-binary-distribution")]
    found = []
    for platform_ in platforms:
        try:
            devices = platform_.get_devices()
        except cl.Error as err:
            log.info("OpenCL platform %s lists no devices: %s", platform_.name, err)
            continue
        for device in devices:
            found.append(
                DeviceInfo(
                    name=f"opencl:{len(found)}",
                    kind="opencl",
                    description=f"{device.name.strip()} ({platform_.name.strip()} {platform_.version.strip()})",
                    vendor=device.vendor.strip(),
                    compute_units=int(device.max_compute_units),
                    memory_bytes=int(device.global_mem_size),
                )
            )
    if not found:
        return [], [AbsentBackend("opencl", "OpenCL platforms exist but list no devices")]
    return found, []


def _cuda_devices() -> tuple[list[DeviceInfo], list[AbsentBackend]]:
    try:
        import cupy
    except ImportError:
        return [], [AbsentBackend("cuda", "cupy is not installed; pip install 'hetero[cuda]' on a machine with an NVIDIA GPU")]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as err:
        return [], [AbsentBackend("cuda", f"no usable NVIDIA GPU: {err}")]
    found = []
    for index in range(count):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        found.append(
            DeviceInfo(
                name=f"cuda:{index}",
                kind="cuda",
                description=f"{props['name'].decode()} (compute capability {props['major']}.{props['minor']})",
                vendor="NVIDIA",
                compute_units=int(props["multiProcessorCount"]),
                memory_bytes=int(props["totalGlobalMem"]),
            )
        )
    if not found:
        return [], [AbsentBackend("cuda", "the CUDA runtime reports no GPU")]
    return found, []


def discover() -> tuple[list[DeviceInfo], list[AbsentBackend]]:
    """Every device present (reference, cpu, opencl:N, cuda:N) and every absent backend with its reason."""
    devices: list[DeviceInfo] = []
    absent: list[AbsentBackend] = []
    for probe in (_cpu_devices, _opencl_devices, _cuda_devices):
        found, missing = probe()
        devices.extend(found)
        absent.extend(missing)
    return devices, absent
