"""Device discovery: what is really present on this machine, and why each absent device is absent.

``discover()`` asks every backend's ``probe()`` through the registry (``hetero.backends.registry``).
This module holds the part of discovery that needs more than an import: OpenCL devices are usable
only when they build and run a kernel, so the first OpenCL probe in a process runs
``backends/opencl_probe.py`` in a child process (a driver whose compiler crashes, as an old LLVM
does on a CPU newer than it knows, takes down only the child) and caches the verdict for the
process. ``opencl:N`` numbers the usable OpenCL devices only, in platform order, so ``opencl:0``
is the first device that works on every machine; a device that fails is listed as absent with the
compiler's first error line and the fix.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from hetero.backends.base import AbsentBackend, DeviceInfo
from hetero.backends.registry import discover
from hetero.errors import DeviceError

log = logging.getLogger(__name__)

OPENCL_FIX = "apt-get install pocl-opencl-icd"  # Debian's PoCL builds for every x86-64 CPU
PROBE_SCRIPT = Path(__file__).resolve().parent / "opencl_probe.py"
PROBE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class OpenCLProbe:
    """What probing every OpenCL device found: usable devices (numbered opencl:N), absent ones,
    and where each usable device is in pyopencl's listing (platform index, device index)."""

    usable: tuple[DeviceInfo, ...]
    absent: tuple[AbsentBackend, ...]
    addresses: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def short_platform(name: str, version: str) -> str:
    """"PoCL 3.1+debian, LLVM 15.0.6" for a PoCL platform, else the platform's name and version."""
    pocl = re.search(r"PoCL (\S+)", version)
    if pocl is None:
        return f"{name} {version}".strip()
    llvm = re.search(r"LLVM (\S+?),?(\s|$)", version)
    return f"PoCL {pocl.group(1)}" + (f", LLVM {llvm.group(1)}" if llvm else "")


@dataclass(frozen=True)
class _ProbeRun:
    """One run of the probe process: its JSON records, and why it did not end normally ("" if it did)."""

    records: tuple[dict[str, Any], ...]
    failure: str = ""
    timed_out: bool = False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _run_probe(request: Mapping[str, Any], timeout_s: float) -> _ProbeRun:
    try:
        done = subprocess.run([sys.executable, str(PROBE_SCRIPT)], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout_s, check=False)
        stdout, stderr, code, failure = done.stdout, done.stderr, done.returncode, ""
    except subprocess.TimeoutExpired as err:
        out = err.stdout or ""
        stdout = out.decode(errors="replace") if isinstance(out, bytes) else out
        return _ProbeRun(_records(stdout), f"the probe did not finish in {timeout_s:g} s", timed_out=True)
    except OSError as err:
        return _ProbeRun((), f"the probe cannot start ({err})")
    if code < 0:
        failure = f"the driver crashed the probe ({_signal_name(-code)})"
    elif code > 0:
        last = [line for line in stderr.splitlines() if line.strip()][-1:] or [f"exit status {code}"]
        failure = f"the probe failed: {last[0].strip()}"
    return _ProbeRun(_records(stdout), failure)


def _records(stdout: str) -> tuple[dict[str, Any], ...]:
    records = []
    for line in stdout.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.debug("opencl probe wrote a non-JSON line: %r", line)
    return tuple(records)


def probe_opencl(source: str | None = None, options: Sequence[str] | None = None,
                 timeout_s: float = PROBE_TIMEOUT_S) -> OpenCLProbe:
    """Build and run a kernel (``source`` with build ``options``; None: the probe's own tiny kernel
    and the backend's options) on every OpenCL device, in child processes; a crash costs only the
    device it happened on."""
    if importlib.util.find_spec("pyopencl") is None:
        reason = "pyopencl is not installed; pip install pyopencl pocl-binary-distribution"
        return OpenCLProbe((), (AbsentBackend("opencl", reason),))
    started = time.perf_counter()
    listing: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    start = 0
    while True:
        run = _run_probe({"source": source, "options": options, "start": start}, timeout_s)
        for record in run.records:
            if record.get("event") == "fatal":
                reason = f"{record['error']}; for a CPU device on Debian/Ubuntu: {OPENCL_FIX}, else pip install pocl-binary-distribution"
                return OpenCLProbe((), (AbsentBackend("opencl", reason),))
            if record.get("event") == "device":
                listing[int(record["index"])] = record
            elif record.get("event") == "result":
                errors[int(record["index"])] = "" if record["ok"] else str(record["error"])
        if not run.failure:
            break
        unprobed = [i for i in sorted(listing) if i not in errors]
        if not listing or not unprobed:
            reason = f"listing OpenCL devices failed: {run.failure}; for a CPU device on Debian/Ubuntu: {OPENCL_FIX}"
            return OpenCLProbe((), (AbsentBackend("opencl", reason),))
        errors[unprobed[0]] = run.failure  # the device being probed when the process died
        if run.timed_out:  # do not wait as long again for each device left
            errors.update({i: f"not probed: {run.failure} on an earlier device" for i in unprobed[1:]})
            break
        start = unprobed[0] + 1
    log.info("probed %d OpenCL devices in %.2f s", len(listing), time.perf_counter() - started)
    return opencl_verdict(listing, errors)


def _driver(entry: Mapping[str, Any]) -> str:
    """"/usr/lib/.../libpocl.so.2 via /etc/OpenCL/vendors/pocl.icd (Debian pocl-opencl-icd)"."""
    text = entry.get("library") or "unknown library"
    if entry.get("icd"):
        text += f" via {entry['icd']}"
    return text + (f" ({entry['origin']})" if entry.get("origin") else "")


def opencl_verdict(listing: Mapping[int, Mapping[str, Any]], errors: Mapping[int, str]) -> OpenCLProbe:
    """Usable devices (no error; numbered opencl:N in listing order) and absent ones, from the
    probe's device records by index and each one's first error line ("" when it worked)."""
    usable: list[DeviceInfo] = []
    absent: list[AbsentBackend] = []
    addresses: dict[str, tuple[int, int]] = {}
    for index in sorted(listing):
        entry = listing[index]
        platform_short = short_platform(entry["platform_name"], entry["platform_version"])
        origin = entry["origin"] or os.path.basename(entry["library"]) or "unknown driver"
        where = f"{entry['name']} on {platform_short} ({origin})"
        error = errors.get(index, "not probed")
        if error:
            reason = f"{where} cannot build and run a kernel: {error}; for a working CPU OpenCL on Debian/Ubuntu: {OPENCL_FIX}"
            absent.append(AbsentBackend("opencl", reason, device=where))
            continue
        name = f"opencl:{len(usable)}"
        addresses[name] = (int(entry["platform_index"]), int(entry["device_index"]))
        usable.append(DeviceInfo(
            name=name, kind="opencl", description=f"{entry['name']} ({platform_short}; {origin})",
            vendor=entry["vendor"], compute_units=int(entry["compute_units"]), memory_bytes=int(entry["memory_bytes"]),
            platform=f"{entry['platform_name']} {entry['platform_version']}",
            driver=_driver(entry),
        ))
    if not listing:
        reason = f"OpenCL platforms exist but list no devices; for a CPU device on Debian/Ubuntu: {OPENCL_FIX}"
        absent.append(AbsentBackend("opencl", reason))
    return OpenCLProbe(tuple(usable), tuple(absent), addresses)


@lru_cache(maxsize=1)
def opencl_probe() -> OpenCLProbe:
    """The OpenCL probe of this process (run once, on first use)."""
    return probe_opencl()


def opencl_address(info: DeviceInfo) -> tuple[int, int]:
    """(platform index, device index) in pyopencl's listing of the usable device ``info`` names."""
    probe = opencl_probe()
    address = probe.addresses.get(info.name)
    if address is None:
        raise DeviceError(f"device {info.name} is not a usable OpenCL device here; run hetero devices")
    return address


__all__ = ["AbsentBackend", "DeviceInfo", "OPENCL_FIX", "OpenCLProbe", "discover", "opencl_address", "opencl_probe",
           "opencl_verdict", "probe_opencl", "short_platform"]
