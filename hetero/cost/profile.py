"""The device profile: measured seconds per (device, op signature) plus link fits, as JSON.

Schema (version 1)::

    {"schema_version": 1, "created": ISO date, "model": str, "precision": "fp32"|"int8",
     "host": {"hostname", "platform", "cpu", "cores"}, "libraries": {name: version},
     "devices": {name: {"identity": {name, kind, description, vendor, compute_units, memory_bytes,
                                     platform, driver},
                        "ops": {signature: {op_type, median_s, p10_s, p90_s, count, outliers,
                                            spread, wall_median_s, features: {...}}}}},
     "links": [{"src", "dst", "via", "latency_s", "bandwidth_Bps", "points": [[nbytes, seconds], ...]}],
     "runtime": {"dispatch_s": seconds the runtime adds per op (thread hand-offs, bookkeeping)},
     "power": {name: {"idle_W", "busy_W", "source"} or {"unavailable": why}},  (optional)
     "handoffs": {src: {dst: seconds}},  (optional; src or dst may be "host")
     "wakeup": {name: [[idle_s, extra_s], ...]},  (optional)
     "contention": {"groups": {name: group}, "slowdown": {name: factor >= 1}},  (optional)
     "layout": {name: {"latency_s", "bandwidth_Bps"}}}  (optional)

``median_s``/``p10_s``/``p90_s`` are by the device's own clock (event profiling, CUDA events, the
host clock for host devices); ``wall_median_s`` is the host wall clock of a synchronous launch,
which adds the launch overhead a runtime pays. ``features`` are what the cost model's regression
predicts from (see :func:`op_features`). An OpenCL device's ``identity.platform`` is the OpenCL
platform (name and version) it was measured with: the same CPU under another PoCL is another
device, and a profile of it is refused (:func:`check_device`). ``handoffs`` is what a runtime hand-off
from device src to device dst costs beyond the fitted src->dst link transfer (queue wake-up of the
consumer's worker, synchronisation), measured by ``hetero.cost.links.calibrate_handoffs``;
``handoffs.host.D`` / ``handoffs.D.host`` are what a request's start on D and its end there add
beyond the host links (waking D's worker, signalling the caller). ``wakeup`` is what an op on a
device costs beyond back to back after the device idled ``idle_s`` while another ran (increasing
idle times); ``contention`` names the resource group each device shares (the host's cores) and how
much slower it runs while another device of its group runs (``hetero.cost.contention``). A profile
without these sections (older ones) charges none of them. ``layout`` is what one conversion of a
tensor between the device's own layout (the cpu device's channels-last) and NCHW costs, latency +
bytes / bandwidth: a tensor crossing to or from another device is converted once on that side.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hetero.backends.discovery import DeviceInfo, short_platform
from hetero.cost.protocol import HOST, Link  # noqa: F401 (HOST re-exported for hetero.cost.model)
from hetero.errors import ProfileError
from hetero.ir.graph import Op
from hetero.io import write_atomic

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class OpStats:
    """Robust timing statistics of one op signature on one device."""

    op_type: str
    median_s: float
    p10_s: float
    p90_s: float
    count: int
    outliers: int
    spread: float
    features: Mapping[str, float]
    wall_median_s: float | None = None  # host wall clock of a synchronous launch (what a runtime sees)

    @property
    def expected_s(self) -> float:
        """What one launch costs end to end: the wall-clock median when measured, else the device's."""
        return self.wall_median_s if self.wall_median_s is not None else self.median_s


@dataclass(frozen=True)
class DeviceProfile:
    identity: Mapping[str, Any]
    ops: Mapping[str, OpStats]


@dataclass(frozen=True)
class Profile:
    model: str
    precision: str
    created: str
    host: Mapping[str, Any]
    libraries: Mapping[str, str]
    devices: Mapping[str, DeviceProfile]
    links: tuple[Link, ...] = field(default=())  # measured paths: via and points set, never shared
    schema_version: int = SCHEMA_VERSION
    runtime: Mapping[str, float] = field(default_factory=dict)  # dispatch_s: the runtime's own cost per op
    power: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per device: watts, or why none (cost.power)
    handoffs: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # src -> dst -> seconds beyond the link
    kernels: Any = None  # a kernel profile (hetero.cost.kernel_profile.KernelProfile): ops predicted by kernel class
    wakeup: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)  # device -> ((idle_s, extra_s), ...)
    contention: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # groups: {device: group}, slowdown: {device: factor}
    layout: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # device -> latency_s, bandwidth_Bps of one conversion

    def handoff_s(self, src: str, dst: str) -> float:
        """What a runtime hand-off from device src to device dst adds to the link transfer (0.0: not measured)."""
        return float(self.handoffs.get(src, {}).get(dst, 0.0))

    def layout_s(self, device: str, nbytes: int) -> float:
        """One layout conversion of nbytes on the device, to or from NCHW (0.0: the device keeps NCHW, or not measured)."""
        fit = self.layout.get(device)
        return 0.0 if not fit or nbytes <= 0 else float(fit["latency_s"]) + nbytes / float(fit["bandwidth_Bps"])

    def group_of(self, device: str) -> str | None:
        """The resource group the device shares with others (None: its own hardware, or not measured)."""
        group = self.contention.get("groups", {}).get(device)
        return None if group is None else str(group)

    def slowdown(self, device: str) -> float:
        """How much slower the device runs while another device of its group runs (1.0: not measured)."""
        return float(self.contention.get("slowdown", {}).get(device, 1.0))

    def link(self, src: str, dst: str) -> Link | None:
        for fit in self.links:
            if fit.src == src and fit.dst == dst:
                return fit
        return None


def op_features(op: Op) -> dict[str, float]:
    """Numbers that describe an op's work for the regression: FLOPs, bytes, elements, channels."""
    first_in = next((s for s in op.input_specs if s is not None and s.name not in op.weights), None)
    out = op.output_specs[0]
    weight_shape = next((op.weights[t].shape for t in op.inputs if t in op.weights and op.weights[t].ndim == 4), ())
    return {
        "flops": float(op.flops),
        "bytes_read": float(op.bytes_read),
        "bytes_written": float(op.bytes_written),
        "param_bytes": float(op.param_bytes),
        "out_elements": float(out.numel),
        "in_elements": float(first_in.numel if first_in is not None else 0),
        "in_channels": float(first_in.shape[1] if first_in is not None and len(first_in.shape) > 1 else 1),
        "out_channels": float(out.shape[1] if len(out.shape) > 1 else 1),
        "kernel_area": float(np.prod(weight_shape[2:])) if weight_shape else 1.0,
        "group": float(op.attrs.get("group", 1)),
    }


def identity_of(info: DeviceInfo) -> dict[str, Any]:
    return info.to_dict()


def same_device(identity: Mapping[str, Any], info: DeviceInfo) -> bool:
    """Whether a recorded identity is the device described by info (name may differ), on the
    same OpenCL platform for OpenCL devices."""
    keys = ("kind", "description", "vendor", "compute_units")
    return all(identity.get(k) == getattr(info, k) for k in keys) and identity.get("platform", "") == info.platform


def to_json(profile: Profile) -> dict[str, Any]:
    data = asdict(profile)
    data["links"] = [{"src": link.src, "dst": link.dst, "via": link.via, "latency_s": link.latency_s,
                      "bandwidth_Bps": link.bandwidth_Bps, "points": [list(p) for p in link.points]} for link in profile.links]
    return data


def save_profile(profile: Profile, path: str | os.PathLike[str]) -> None:
    """Write a profile atomically."""
    write_atomic(path, (json.dumps(to_json(profile), indent=1, sort_keys=False) + "\n").encode())


def _need(data: Mapping[str, Any], key: str, where: str, kinds: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ProfileError(f"{where} lacks '{key}'; the profile was edited or truncated, re-run hetero profile")
    value = data[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and kinds is not bool:
        wanted = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ProfileError(f"{where}.{key} is {type(value).__name__}, not {wanted}; re-run hetero profile")
    return value


def _seconds(data: Mapping[str, Any], key: str, where: str) -> float:
    value = float(_need(data, key, where, (int, float)))
    if not math.isfinite(value) or value < 0:
        raise ProfileError(f"{where}.{key} = {value} is not a duration in seconds")
    return value


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile; every problem is one ProfileError naming the file and field."""
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"{path}: is a folder, not a profile JSON file")
    if not path.is_file():
        raise ProfileError(f"{path}: no such profile; create one with hetero profile MODEL -o {path.name}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProfileError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); the file is truncated or edited, re-run hetero profile") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text file; is it a profile?") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a JSON object")
    try:
        if data.get("kind") == "kernels":  # hetero profile --kernels: model-independent
            from hetero.cost.kernel_profile import as_profile, parse_kernel_profile

            return as_profile(parse_kernel_profile(data))
        profile = _parse(data, str(path))
    except ProfileError as err:
        message = str(err)
        raise ProfileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of the wrong shape deeper down
        raise ProfileError(f"{path}: malformed profile ({type(err).__name__}: {err}); the file was edited or is "
                           "not a hetero profile, re-run hetero profile") from None
    if profile.precision not in ("fp32", "int8"):
        raise ProfileError(f"{path}: precision is '{profile.precision}', not fp32 or int8; re-run hetero profile")
    return profile


def _parse(data: Mapping[str, Any], where: str) -> Profile:
    version = _need(data, "schema_version", "profile", int)
    if version > SCHEMA_VERSION:
        raise ProfileError(f"schema version {version} is newer than this hetero reads ({SCHEMA_VERSION}); upgrade hetero")
    if version < 1:
        raise ProfileError(f"schema version {version} is not a valid profile version")
    devices = {}
    for name, entry in _need(data, "devices", "profile", dict).items():
        at = f"devices.{name}"
        identity = _need(entry, "identity", at, dict)
        ops = {}
        for signature, stats in _need(entry, "ops", at, dict).items():
            op_at = f"{at}.ops[{signature}]"
            median = _seconds(stats, "median_s", op_at)
            p10, p90 = _seconds(stats, "p10_s", op_at), _seconds(stats, "p90_s", op_at)
            if not p10 <= median <= p90:
                raise ProfileError(f"{op_at}: p10_s <= median_s <= p90_s does not hold ({p10}, {median}, {p90})")
            features = _need(stats, "features", op_at, dict)
            ops[signature] = OpStats(
                op_type=_need(stats, "op_type", op_at, str),
                median_s=median,
                p10_s=p10,
                p90_s=p90,
                count=_need(stats, "count", op_at, int),
                outliers=int(stats.get("outliers", 0)),
                spread=float(stats.get("spread", 0.0)),
                features={k: float(v) for k, v in features.items()},
                wall_median_s=float(stats["wall_median_s"]) if stats.get("wall_median_s") is not None else None,
            )
        devices[name] = DeviceProfile(identity=identity, ops=ops)
    links = []
    for i, link in enumerate(data.get("links", [])):
        at = f"links[{i}]"
        bandwidth = float(_need(link, "bandwidth_Bps", at, (int, float)))
        if not bandwidth > 0:
            raise ProfileError(f"{at}.bandwidth_Bps must be positive, got {bandwidth}")
        links.append(
            Link(
                src=_need(link, "src", at, str),
                dst=_need(link, "dst", at, str),
                via=str(link.get("via", "direct")),
                latency_s=_seconds(link, "latency_s", at),
                bandwidth_Bps=bandwidth,
                points=tuple((int(b), float(s)) for b, s in link.get("points", [])),
            )
        )
    return Profile(
        model=str(data.get("model", "")),
        precision=str(data.get("precision", "fp32")),
        created=str(data.get("created", "")),
        host=dict(data.get("host", {})),
        libraries=dict(data.get("libraries", {})),
        devices=devices,
        links=tuple(links),
        schema_version=version,
        runtime={k: float(v) for k, v in dict(data.get("runtime", {})).items()},
        power=_power(data.get("power", {})),
        handoffs=_handoffs(data.get("handoffs", {})),
        wakeup=_wakeup(data.get("wakeup", {})),
        contention=_contention(data.get("contention", {})),
        layout=_layout(data.get("layout", {})),
    )


def _handoffs(data: Any) -> dict[str, dict[str, float]]:
    """The optional handoffs section: seconds per (src, dst) device pair, finite and >= 0."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ProfileError("handoffs must map a source device to {destination device: seconds}; re-run hetero profile")
    return {src: {dst: _seconds(row, dst, f"handoffs.{src}") for dst in row} for src, row in data.items()}


def _wakeup(data: Any) -> dict[str, tuple[tuple[float, float], ...]]:
    """The optional wakeup section: per device [[idle_s, extra_s], ...], idle_s increasing, both durations."""
    if not isinstance(data, dict):
        raise ProfileError("wakeup must map a device to [[idle_s, extra_s], ...]; re-run hetero profile --update-calibration")
    tables: dict[str, tuple[tuple[float, float], ...]] = {}
    for name, rows in data.items():
        at = f"wakeup.{name}"
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 2 for r in rows):
            raise ProfileError(f"{at} must be a list of [idle_s, extra_s] pairs; re-run hetero profile --update-calibration")
        table = tuple((_seconds({"idle_s": r[0]}, "idle_s", f"{at}[{i}]"), _seconds({"extra_s": r[1]}, "extra_s", f"{at}[{i}]"))
                      for i, r in enumerate(rows))
        if any(b[0] <= a[0] for a, b in zip(table, table[1:])):
            raise ProfileError(f"{at}: idle_s must increase from row to row; re-run hetero profile --update-calibration")
        tables[name] = table
    return tables


def _layout(data: Any) -> dict[str, dict[str, float]]:
    """The optional layout section: per device {latency_s >= 0, bandwidth_Bps > 0}."""
    if not isinstance(data, dict):
        raise ProfileError("layout must map a device to {latency_s, bandwidth_Bps}; re-run hetero profile --update-calibration")
    fits: dict[str, dict[str, float]] = {}
    for name, fit in data.items():
        at = f"layout.{name}"
        if not isinstance(fit, dict):
            raise ProfileError(f"{at} must be {{latency_s, bandwidth_Bps}}; re-run hetero profile --update-calibration")
        bandwidth = float(_need(fit, "bandwidth_Bps", at, (int, float)))
        if not math.isfinite(bandwidth) or bandwidth <= 0:
            raise ProfileError(f"{at}.bandwidth_Bps must be positive, got {bandwidth}; re-run hetero profile --update-calibration")
        fits[str(name)] = {"latency_s": _seconds(fit, "latency_s", at), "bandwidth_Bps": bandwidth}
    return fits


def _contention(data: Any) -> dict[str, dict[str, Any]]:
    """The optional contention section: groups {device: group name}, slowdown {device: factor >= 1}."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict) for k in ("groups", "slowdown")):
        raise ProfileError("contention must be {groups: {device: group}, slowdown: {device: factor}}; "
                           "re-run hetero profile --update-calibration")
    groups = {str(k): v for k, v in data.get("groups", {}).items()}
    for name, group in groups.items():
        if not isinstance(group, str) or not group:
            raise ProfileError(f"contention.groups.{name} is {group!r}, not a group name; re-run hetero profile --update-calibration")
    slowdown: dict[str, float] = {}
    for name, factor in data.get("slowdown", {}).items():
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor < 1:
            raise ProfileError(f"contention.slowdown.{name} = {factor!r} is not a factor >= 1; "
                               "re-run hetero profile --update-calibration")
        slowdown[str(name)] = float(factor)
    return {"groups": groups, "slowdown": slowdown} if groups or slowdown else {}


def _power(data: Any) -> dict[str, dict[str, Any]]:
    """The optional power section: per device idle_W <= busy_W (watts) with a source, or unavailable: why."""
    if not isinstance(data, dict):
        raise ProfileError("power must map device names to {idle_W, busy_W, source} or {unavailable: why}")
    power: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        at = f"power.{name}"
        if isinstance(entry, dict) and "unavailable" in entry:
            power[name] = {"unavailable": str(entry["unavailable"])}
            continue
        idle = float(_need(entry, "idle_W", at, (int, float)))
        busy = float(_need(entry, "busy_W", at, (int, float)))
        if not 0 <= idle <= busy:
            raise ProfileError(f"{at}: 0 <= idle_W <= busy_W does not hold ({idle}, {busy})")
        power[name] = {"idle_W": idle, "busy_W": busy, "source": str(entry.get("source", "profile"))}
    return power


def check_device(profile: Profile, profile_path: str, name: str, info: DeviceInfo) -> DeviceProfile:
    """The profile's entry for a device, checked to be of the same hardware (and, for an OpenCL
    device, measured with the same OpenCL platform)."""
    entry = profile.devices.get(name)
    if entry is None:
        raise ProfileError(f"{profile_path}: has no device '{name}' (it has {', '.join(profile.devices) or 'none'}); profile it first")
    recorded = str(entry.identity.get("platform", ""))
    if info.kind == "opencl" and recorded != info.platform:
        then, now = short_platform("", recorded), short_platform("", info.platform)
        if then == now:  # same release, another build: show both in full
            then, now = recorded, info.platform
        measured_with = (f"'{then}'" if recorded else
                         f"'{short_platform('', str(entry.identity.get('description', '')))}' (by its description)")
        raise ProfileError(
            f"{profile_path}: device '{name}' was measured with OpenCL platform {measured_with}, but {name} here is "
            f"'{now}'; re-measure it: hetero profile {profile.model or 'MODEL'} --precision {profile.precision} "
            f"--devices {','.join(profile.devices)} --reuse -o {profile_path}"
        )
    if not same_device(entry.identity, info):
        raise ProfileError(
            f"{profile_path}: device '{name}' was profiled as '{entry.identity.get('description')}', "
            f"but here it is '{info.description}'; re-profile on this machine"
        )
    return entry
