"""Measured device power for profiles: RAPL (Linux powercap) for the host CPU, NVML for NVIDIA GPUs.

:func:`measure_power` gives a profile's ``power`` entry of one device: ``{"idle_W", "busy_W",
"source"}`` from an energy counter read over ``seconds`` idle and over ``seconds`` of the device
running a given workload, or ``{"unavailable": why}`` when the machine exposes no counter hetero
can read (no /sys/class/powercap, RAPL readable by root only, nvidia-ml-py not installed, ...).
RAPL counts the whole CPU package (and NVML the whole board), so other load on the machine
while profiling shows up in the figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)
POWERCAP = Path("/sys/class/powercap")
HOST_KINDS = ("cpu", "reference")  # devices that run on the host CPU's cores


def rapl_zones(root: Path = POWERCAP) -> tuple[list[Path], str]:
    """The readable top-level RAPL package zones, or ([], why none)."""
    if not root.is_dir():
        return [], f"no {root} (no RAPL driver: a virtual machine or a kernel without powercap)"
    zones = sorted(p for p in root.iterdir() if p.name.count(":") == 1 and (p / "energy_uj").exists())
    if not zones:
        return [], f"{root} has no RAPL package zone with an energy_uj counter"
    readable = []
    for zone in zones:
        try:
            int((zone / "energy_uj").read_text())
            readable.append(zone)
        except PermissionError:
            return [], f"{zone / 'energy_uj'} is readable by root only (since Linux 5.10); run as root or chmod it"
        except (OSError, ValueError) as err:
            return [], f"{zone / 'energy_uj'} cannot be read ({err})"
    return readable, ""


def _rapl_joules(zones: list[Path]) -> float:
    return sum(int((zone / "energy_uj").read_text()) for zone in zones) * 1e-6


def _rapl_wrapped(zones: list[Path]) -> float:
    """The counters' range in joules (a counter that wraps during a reading adds this)."""
    total = 0.0
    for zone in zones:
        try:
            total += int((zone / "max_energy_range_uj").read_text()) * 1e-6
        except (OSError, ValueError):
            pass
    return total


def _watts(read: Callable[[], float], wrap_J: float, action: Callable[[], None], seconds: float) -> float:
    """Average watts while ``action`` runs repeatedly (or nothing, when it is a sleep) for ``seconds``."""
    before, started = read(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        action()
    after, elapsed = read(), time.perf_counter() - started
    used = after - before
    if used < 0:
        used += wrap_J
    return used / elapsed


def measure_power(kind: str, index: int, busy: Callable[[], None], seconds: float = 0.5,
                  powercap: Path = POWERCAP) -> dict[str, object]:
    """The power entry of a device of ``kind`` (its ``index`` among NVIDIA GPUs for cuda), ``busy``
    being one short unit of its work; ``powercap`` is where RAPL zones are looked for."""
    def idle() -> None:
        time.sleep(0.05)

    if kind in HOST_KINDS:
        zones, why = rapl_zones(powercap)
        if not zones:
            return {"unavailable": f"RAPL: {why}"}
        read, wrap, what = (lambda: _rapl_joules(zones)), _rapl_wrapped(zones), f"RAPL {', '.join(z.name for z in zones)}"
    elif kind == "cuda":
        counter = _nvml_counter(index)
        if isinstance(counter, str):
            return {"unavailable": f"NVML: {counter}"}
        read, wrap, what = counter, 0.0, f"NVML total energy of GPU {index}"
    else:
        return {"unavailable": f"{kind} devices: hetero reads power only through RAPL (host CPU) and NVML (NVIDIA GPUs)"}
    idle_W = _watts(read, wrap, idle, seconds)
    busy_W = _watts(read, wrap, busy, seconds)
    log.info("%s: %.3g W idle, %.3g W busy (%s)", kind, idle_W, busy_W, what)
    return {"idle_W": idle_W, "busy_W": max(busy_W, idle_W),
            "source": f"measured: {what} over {seconds:g} s idle and {seconds:g} s busy (whole package/board)"}


def _nvml_counter(index: int) -> Callable[[], float] | str:
    """A reader of the GPU's total energy in joules, or why there is none."""
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py to measure GPU power)"
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as err:
        return f"cannot read GPU {index}'s energy counter ({err})"
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) * 1e-3
