"""The spec catalog: devices a user may not own, described by datasheet figures.

Each ``profiles/catalog/NAME.json`` gives peak throughput per precision, memory bandwidth and
size, launch overhead and the link to the host; every figure is ``{"value": ..., "source": ...}``
where the source is a public document or says "estimate: why". Such a device is marked
``"basis": "spec"`` (a measured device comes from a profile instead) and gets roofline costs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from hetero.cost.model import SpecDevice
from hetero.errors import ProfileError
from hetero.resources import data_dir

_KEYS = {"name", "measured", "basis", "description", "kind", "peak_ops_per_s", "memory_bandwidth_Bps",
         "memory_bytes", "launch_overhead_s", "link", "supported_ops"}


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
    folder = Path(folder) if folder is not None else data_dir("profiles") / "catalog"
    specs: dict[str, SpecDevice] = {}
    for path in sorted(folder.glob("*.json")):
        spec = load_spec(path)
        if spec.name in specs:
            raise ProfileError(f"{path}: device name '{spec.name}' is used twice in the catalog")
        specs[spec.name] = spec
    return specs
