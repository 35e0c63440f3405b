"""The spec catalog: devices a user may not own, described by datasheet figures.

Each ``profiles/catalog/NAME.json`` gives peak throughput per precision, memory bandwidth and
size, launch overhead and the link to the host; every figure is ``{"value": ..., "source": ...}``
where the source is a public document or says "estimate: why". Such a device is marked
``"basis": "spec"`` (a measured device comes from a profile instead) and gets roofline costs.

Power: ``"power": {"idle_W": figure, "busy_W": figure, "busy_W_by_precision": {"int8": figure}}``
(the last optional) and the host link's ``"energy_J_per_bit"`` (:func:`load_catalog_energy`).
``links.json`` in the same folder gives the energy per bit of link classes (wifi, lte, pcie, ...)
that a scenario may name (:func:`load_link_energy`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hetero.cost.energy import DevicePower, EnergyModel
from hetero.cost.model import SpecDevice
from hetero.errors import ProfileError
from hetero.resources import data_dir

_KEYS = {"name", "measured", "basis", "description", "kind", "peak_ops_per_s", "memory_bandwidth_Bps",
         "memory_bytes", "launch_overhead_s", "link", "supported_ops", "power", "price_usd"}  # price_usd: read by hetero sweep
_POWER_KEYS = {"idle_W", "busy_W", "busy_W_by_precision"}
LINKS_FILE = "links.json"
BITS_PER_BYTE = 8


def _figure(entry: Mapping[str, Any], key: str, where: str) -> float:
    figure = entry.get(key)
    if not isinstance(figure, dict) or "value" not in figure or "source" not in figure:
        raise ProfileError(f"{where}: '{key}' must be {{\"value\": number, \"source\": text}}")
    value = figure["value"]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ProfileError(f"{where}: '{key}' value must be a non-negative number, got {value!r}")
    if not str(figure["source"]).strip():
        raise ProfileError(f"{where}: '{key}' needs a source")
    return float(value)


def parse_spec(data: Mapping[str, Any], where: str) -> SpecDevice:
    """Validate one catalog entry into a SpecDevice."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ProfileError(f"{where}: unknown field '{unknown[0]}' (allowed: {', '.join(sorted(_KEYS))})")
    if data.get("basis") != "spec":
        raise ProfileError(f"{where}: 'basis' must be \"spec\" for a catalog device")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}: 'name' must be a non-empty string")
    peaks_raw = data.get("peak_ops_per_s")
    if not isinstance(peaks_raw, dict) or not peaks_raw:
        raise ProfileError(f"{where}: 'peak_ops_per_s' must map precisions (fp32, int8) to figures")
    peaks = {precision: _figure(peaks_raw, precision, f"{where}: peak_ops_per_s") for precision in peaks_raw}
    link = data.get("link")
    if not isinstance(link, dict):
        raise ProfileError(f"{where}: 'link' must give latency_s and bandwidth_Bps")
    bandwidth = _figure(data, "memory_bandwidth_Bps", where)
    link_bandwidth = _figure(link, "bandwidth_Bps", f"{where}: link")
    if bandwidth <= 0 or link_bandwidth <= 0 or any(p <= 0 for p in peaks.values()):
        raise ProfileError(f"{where}: peaks and bandwidths must be positive")
    supported = data.get("supported_ops")
    if supported is not None and not (isinstance(supported, list) and all(isinstance(s, str) for s in supported)):
        raise ProfileError(f"{where}: 'supported_ops' must be null (every op) or a list of op types")
    parse_energy(data, where)  # checked with the rest; read by load_catalog_energy
    return SpecDevice(
        name=name,
        peak_ops_per_s=peaks,
        memory_bandwidth_Bps=bandwidth,
        launch_overhead_s=_figure(data, "launch_overhead_s", where),
        link_latency_s=_figure(link, "latency_s", f"{where}: link"),
        link_bandwidth_Bps=link_bandwidth,
        supported_ops=None if supported is None else frozenset(supported),
        memory_bytes=int(_figure(data, "memory_bytes", where)) if "memory_bytes" in data else None,
    )


@dataclass(frozen=True)
class SpecEnergy:
    """A catalog device's power figures and its host link's energy per byte."""

    idle_W: float
    busy_W: float
    link_J_per_byte: float = 0.0
    busy_W_by_precision: Mapping[str, float] = field(default_factory=dict)

    def power(self, precision: str | None = None) -> DevicePower:
        """The device's power running ``precision`` (its own busy figure where the catalog gives one)."""
        busy = self.busy_W_by_precision.get(precision, self.busy_W) if precision else self.busy_W
        return DevicePower(self.idle_W, busy, "catalog")


def parse_energy(data: Mapping[str, Any], where: str) -> SpecEnergy | None:
    """The power and link-energy figures of one catalog entry (None when it gives no power)."""
    link = data.get("link") if isinstance(data.get("link"), dict) else {}
    link_J_per_byte = _figure(link, "energy_J_per_bit", f"{where}: link") * BITS_PER_BYTE if "energy_J_per_bit" in link else 0.0
    power = data.get("power")
    if power is None:
        return None
    if not isinstance(power, dict):
        raise ProfileError(f"{where}: 'power' must give idle_W and busy_W figures")
    unknown = sorted(set(power) - _POWER_KEYS)
    if unknown:
        raise ProfileError(f"{where}: power: unknown field '{unknown[0]}' (allowed: {', '.join(sorted(_POWER_KEYS))})")
    idle, busy = _figure(power, "idle_W", f"{where}: power"), _figure(power, "busy_W", f"{where}: power")
    by_precision_raw = power.get("busy_W_by_precision", {})
    if not isinstance(by_precision_raw, dict):
        raise ProfileError(f"{where}: power: 'busy_W_by_precision' must map precisions to figures")
    by_precision = {p: _figure(by_precision_raw, p, f"{where}: power: busy_W_by_precision") for p in by_precision_raw}
    for label, value in (("busy_W", busy), *((f"busy_W_by_precision.{p}", v) for p, v in by_precision.items())):
        if value < idle:
            raise ProfileError(f"{where}: power: {label} {value:g} W is below idle_W {idle:g} W; busy power includes idle")
    return SpecEnergy(idle, busy, link_J_per_byte, by_precision)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such catalog file") from None
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def _catalog_files(folder: str | os.PathLike[str] | None) -> list[Path]:
    folder = Path(folder) if folder is not None else data_dir("profiles") / "catalog"
    return [path for path in sorted(folder.glob("*.json")) if path.name != LINKS_FILE]


def load_catalog_energy(folder: str | os.PathLike[str] | None = None) -> dict[str, SpecEnergy]:
    """Power and link energy of every catalog device that gives power figures, by name."""
    found: dict[str, SpecEnergy] = {}
    for path in _catalog_files(folder):
        data = _read_json(path)
        if isinstance(data, dict):
            energy = parse_energy(data, str(path))
            if energy is not None:
                found[str(data.get("name"))] = energy
    return found


def load_link_energy(folder: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Joules per byte of each link class in the catalog's links.json (wifi, lte, ethernet, pcie, usb3)."""
    path = (Path(folder) if folder is not None else data_dir("profiles") / "catalog") / LINKS_FILE
    data = _read_json(path)
    classes = data.get("links") if isinstance(data, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise ProfileError(f"{path}: 'links' must map link classes to {{\"value\": J/bit, \"source\": text}}")
    return {name: _figure(classes, name, f"{path}: links") * BITS_PER_BYTE for name in classes}


def load_spec(path: str | os.PathLike[str]) -> SpecDevice:
    """One catalog file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such catalog file") from None
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a catalog entry is a JSON object")
    return parse_spec(data, str(path))


def load_catalog(folder: str | os.PathLike[str] | None = None) -> dict[str, SpecDevice]:
    """Every spec device in the catalog folder (default: hetero's profiles/catalog), by name."""
    specs: dict[str, SpecDevice] = {}
    for path in _catalog_files(folder):
        spec = load_spec(path)
        if spec.name in specs:
            raise ProfileError(f"{path}: device name '{spec.name}' is used twice in the catalog")
        specs[spec.name] = spec
    return specs


def energy_model_for(device_names: list[str], precision: str, profile: Any = None) -> EnergyModel | None:
    """Power and host-link energy of the named devices: measured ones from the profile's power
    figures, catalog ones from the catalog (None when none of them has figures)."""
    from hetero.cost.protocol import HOST, Link

    catalog = load_catalog_energy()
    measured = getattr(profile, "power", {}) if profile is not None else {}
    power: dict[str, DevicePower] = {}
    links = []
    for name in device_names:
        if profile is not None and name in profile.devices:
            figures = measured.get(name, {})
            if "idle_W" in figures and "busy_W" in figures:
                power[name] = DevicePower(float(figures["idle_W"]), float(figures["busy_W"]), str(figures.get("source", "profile")))
        elif name in catalog:
            power[name] = catalog[name].power(precision)
            links.append(Link(name, HOST, 0.0, 1.0, energy_J_per_byte=catalog[name].link_J_per_byte))
    return EnergyModel(power, links, HOST) if power else None
