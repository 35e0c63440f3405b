"""A model-independent kernel profile of a device: sampled kernel configurations and their times.

``profile_kernels(devices, budget_s=...)`` samples, per device, configurations of every kernel
family (hetero.cost.kernel_space: a prior drawn from real architectures' shapes), builds each
as a small graph, lets the device's plan choose the kernel (its class, hetero.cost.kernel_model)
and times it inside the plan's runs as ``hetero profile`` times a model's ops (median of
repeats, ``profiler.time_ops_in_graph``; the timing lives in hetero.cost.kernel_timing); layout
conversions are timed alone. Half the budget goes to the prior; the rest to adaptive rounds (nn-Meter's scheme): fit each class, take its
held-out samples predicted more than 10% off and sample ``around`` new configurations near
each. Stored: the samples (class, op type, config, features, seconds), each class's chosen
predictor kind, the plan's per-op dispatch cost, the runtime's, links, host and libraries.

Schema (JSON, ``kind: "kernels"``)::

    {"schema_version": 1, "kind": "kernels", "created", "host", "libraries", "precisions": [..],
     "budget_s", "seed", "links": [...as a profile's...],
     "devices": {name: {"identity": {...}, "plan_dispatch_s", "runtime_dispatch_s",
                        "classes": {class: {"kind", "holdout_rmspe", "n"}},
                        "samples": [{"class", "op_type", "config", "features", "seconds", "p10_s", "p90_s"}]}}}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.kernel_estimate import classify_ops, fused_ops, plan_dispatch_s
from hetero.cost.kernel_model import ClassSamples, Fitted, KernelPredictor, choose_kind, holdout_split, \
    kernel_features, op_type_of, relative_errors
from hetero.cost.kernel_space import LAYOUT_FAMILIES, build_sample, draw_config, families, perturb
from hetero.cost.kernel_timing import (SAMPLE_BUDGET_S, _helper_waker, _learns_threads, _time_layout,  # noqa: F401
                                       flush_caches, time_in_plan, time_settled)
from hetero.cost.profile import DeviceProfile, Profile, identity_of
from hetero.cost.protocol import Link
from hetero.errors import DeviceError, HeteroError, ProfileError
from hetero.io import write_atomic

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "kernels"
PRIOR_SHARE = 0.5
AROUND = 6  # new configurations per badly predicted point (nn-Meter: 20)
BAD = 0.10
INT8_SHARE = 0.75  # of the samples when profiling int8 and fp32


@dataclass(frozen=True)
class KernelSample:
    kernel_class: str
    op_type: str
    config: Mapping[str, Any]
    features: Mapping[str, float]
    seconds: float
    p10_s: float
    p90_s: float
    speed: float = 1.0  # the speed probe's time when sampled over the profile's median probe (hetero.cost.speed)


@dataclass(frozen=True)
class DeviceKernels:
    """One device's samples, plan and runtime dispatch cost per op, and chosen predictor kinds."""

    identity: Mapping[str, Any]
    samples: tuple[KernelSample, ...]
    plan_dispatch_s: float = 0.0
    runtime_dispatch_s: float = 0.0
    kinds: Mapping[str, str] = field(default_factory=dict)
    holdout: Mapping[str, float] = field(default_factory=dict)
    probe_s: float | None = None  # the speed probe's median time (hetero.cost.speed): what predictions are for

    def by_class(self) -> dict[str, ClassSamples]:
        """Samples per class, each brought to the median probe's machine speed (seconds / speed)."""
        grouped: dict[str, list[KernelSample]] = {}
        for sample in self.samples:
            grouped.setdefault(sample.kernel_class, []).append(sample)
        return {c: ClassSamples(tuple(s.features for s in v), tuple(s.seconds / s.speed for s in v))
                for c, v in grouped.items()}

    def predictor(self) -> KernelPredictor:
        """Per-class predictors refitted from the samples (kept per object: fitting takes a while)."""
        cached = _PREDICTORS.get(id(self))
        if cached is None or cached[0] is not self:
            cached = _PREDICTORS[id(self)] = (self, KernelPredictor(self.by_class(), self.kinds))
        return cached[1]


_PREDICTORS: dict[int, tuple[DeviceKernels, KernelPredictor]] = {}


@dataclass(frozen=True)
class KernelProfile:
    created: str
    host: Mapping[str, Any]
    libraries: Mapping[str, str]
    precisions: tuple[str, ...]
    devices: Mapping[str, DeviceKernels]
    links: tuple[Link, ...] = ()
    budget_s: float = 0.0
    seed: int = 0


# --- measuring (the timing itself: hetero.cost.kernel_timing) ---------------------------------


def time_config(device: Device, config: Mapping[str, Any], rng: np.random.Generator) -> KernelSample | None:
    """Build, classify (by the device's plan) and time one configuration; None where the device
    has no kernel for it."""
    if config["family"] in LAYOUT_FAMILIES:
        if device.kind != "cpu":
            return None
        kernel_class, features, median, p10, p90 = _time_layout(config, rng)
        return KernelSample(kernel_class, "layout", dict(config), features, median, p10, p90)
    try:
        graph, op = build_sample(config, rng)
    except (HeteroError, ValueError, IndexError, AssertionError) as err:
        log.debug("configuration %s builds no op: %s", config, err)
        return None
    if not all(device.supports(o) for o in graph.ops_in_order()):
        return None
    try:
        kernel_class = classify_ops(device, graph).get(op.name, op.type)
        runs = fused_ops(device, graph, op)  # a fused tail's step: the op's timing is its share
        median, p10, p90 = (runs * t for t in time_settled(device, graph, op, rng, int(config["flush_bytes"])))
    finally:
        device.close()  # drop the plan and its packed weights
        getattr(device, "_thread_trials", {}).clear()  # the cpu device's per-op thread trials hold the ops (and weights)
    features = kernel_features(op, int(config["flush_bytes"]))
    return KernelSample(kernel_class, op.type, dict(config), features, median, p10, p90)


def _adaptive_configs(samples: Sequence[KernelSample], rng: np.random.Generator, around: int) -> list[dict[str, Any]]:
    """New configurations near each held-out sample predicted more than 10% off, worst first;
    near every sample of a class too small to fit."""
    grouped: dict[str, list[KernelSample]] = {}
    for s in samples:
        grouped.setdefault(s.kernel_class, []).append(s)
    bad: list[tuple[float, KernelSample]] = []
    for kernel_class, group in grouped.items():
        if len(group) < 12:
            bad += [(1.0, s) for s in group]
            continue
        seconds = [s.seconds / s.speed for s in group]  # at the median probe's speed, as the predictors fit
        kind, _ = choose_kind([s.features for s in group], seconds)
        train, test = holdout_split(len(group), seed=len(group))
        model = Fitted(kind, [group[i].features for i in train], [seconds[i] for i in train])
        errors = np.abs(relative_errors(model.predict([group[i].features for i in test]), [seconds[i] for i in test]))
        bad += [(float(e), group[i]) for e, i in zip(errors, test) if e > BAD]
    bad.sort(key=lambda pair: -pair[0])
    return [perturb(s.config, rng) for _, s in bad for _ in range(around)]


def measure_device(device: Device, precisions: Sequence[str], budget_s: float, seed: int = 0, around: int = AROUND,
                   progress: Callable[[float, str], None] | None = None) -> DeviceKernels:
    """Sample one device's kernels for ``budget_s`` seconds of wall time (prior, then adaptive rounds)."""
    from hetero.cost.speed import SpeedTracker

    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    samples: list[KernelSample] = []
    probed: list[float | None] = []  # the latest probe's seconds when each sample was taken
    speed = SpeedTracker(device)

    def spent() -> float:
        return time.perf_counter() - started

    def take(config: Mapping[str, Any], phase: str) -> None:
        try:
            sample = time_config(device, config, rng)
        except DeviceError as err:
            log.warning("%s: %s %s failed: %s", device.name, config["precision"], config["family"], err)
            return
        if sample is not None and sample.seconds > 0:
            samples.append(sample)
            probed.append(speed.latest_s())
        if progress:
            progress(min(spent() / budget_s, 1.0), f"{device.name}: {phase} {config['precision']} {config['family']} ({len(samples)})")

    shares = {p: (INT8_SHARE if p == "int8" else 1.0 - INT8_SHARE) if len(precisions) > 1 else 1.0 for p in precisions}
    choices = [(p, f, shares[p] * w) for p in precisions for f, w in families(p).items()]
    weights = np.array([w for _, _, w in choices]) / sum(w for _, _, w in choices)
    for p, family, _ in choices:  # every family once, then by the prior's shares
        take(draw_config(family, p, rng), "prior")
    while spent() < PRIOR_SHARE * budget_s:
        p, family, _ = choices[int(rng.choice(len(choices), p=weights))]
        take(draw_config(family, p, rng), "prior")
    round_ = 0
    while spent() < budget_s:
        round_ += 1
        queue = _adaptive_configs(samples, rng, around)
        if not queue:
            p, family, _ = choices[int(rng.choice(len(choices), p=weights))]
            queue = [draw_config(family, p, rng)]
        for config in queue:
            if spent() >= budget_s:
                break
            take(config, f"round {round_}")
    log.info("%s: %d kernel samples in %.0f s (%d adaptive rounds)", device.name, len(samples), spent(), round_)
    reference = speed.reference_s()
    samples = [replace(s, speed=1.0 if reference is None or seconds is None else seconds / reference)
               for s, seconds in zip(samples, probed)]
    kinds, holdout = {}, {}
    for kernel_class, group in DeviceKernels({}, tuple(samples)).by_class().items():
        kinds[kernel_class], holdout[kernel_class] = choose_kind(group.features, group.seconds)
    from hetero.exec.dispatch import measure_dispatch

    if speed.probes:
        log.info("%s: speed probe %.0f-%.0f us (median %.0f us)", device.name, 1e6 * min(speed.probes),
                 1e6 * max(speed.probes), 1e6 * reference)
    return DeviceKernels(identity=identity_of(device.info), samples=tuple(samples), plan_dispatch_s=plan_dispatch_s(device),
                         runtime_dispatch_s=measure_dispatch([device]), kinds=kinds, holdout=holdout,
                         probe_s=reference)


def profile_kernels(devices: Sequence[Device], precisions: Sequence[str] = ("int8", "fp32"), budget_s: float = 180.0,
                    seed: int = 0, progress: Callable[[float, str], None] | None = None,
                    transfer_sizes: Sequence[int] | None = None) -> KernelProfile:
    """A kernel profile of each device (``budget_s`` each) plus the host links."""
    from hetero.cost.profiler import TRANSFER_SIZES, calibrate_links, host_identity, library_versions

    sizes = list(TRANSFER_SIZES[:7] if transfer_sizes is None else transfer_sizes)
    measured = {d.name: measure_device(d, precisions, budget_s, seed, progress=progress) for d in devices}
    return KernelProfile(created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), host=host_identity(),
                         libraries=library_versions() | _sklearn_version(), precisions=tuple(precisions), devices=measured,
                         links=tuple(calibrate_links(devices, sizes)), budget_s=budget_s, seed=seed)


def _sklearn_version() -> dict[str, str]:
    import sklearn

    return {"scikit-learn": sklearn.__version__}


# --- storing and loading --------------------------------------------------------------------


def to_json(profile: KernelProfile) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "kind": KIND, "created": profile.created, "host": dict(profile.host),
        "libraries": dict(profile.libraries), "precisions": list(profile.precisions), "budget_s": profile.budget_s,
        "seed": profile.seed,
        "links": [{"src": l.src, "dst": l.dst, "via": l.via, "latency_s": l.latency_s, "bandwidth_Bps": l.bandwidth_Bps,
                   "points": [list(p) for p in l.points]} for l in profile.links],
        "devices": {name: {
            "identity": dict(d.identity), "plan_dispatch_s": d.plan_dispatch_s, "runtime_dispatch_s": d.runtime_dispatch_s,
            "probe_s": d.probe_s,
            "classes": {c: {"kind": d.kinds[c], "holdout_rmspe": None if math.isnan(d.holdout.get(c, math.nan)) else d.holdout[c],
                            "n": sum(1 for s in d.samples if s.kernel_class == c)} for c in sorted(d.kinds)},
            "samples": [{"class": s.kernel_class, "op_type": s.op_type, "config": dict(s.config), "features": dict(s.features),
                         "seconds": s.seconds, "p10_s": s.p10_s, "p90_s": s.p90_s, "speed": s.speed} for s in d.samples],
        } for name, d in profile.devices.items()},
    }


def save_kernel_profile(profile: KernelProfile, path: str | os.PathLike[str]) -> None:
    write_atomic(path, (json.dumps(to_json(profile), indent=None) + "\n").encode())


def is_kernel_profile(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def _field(data: Any, key: str, where: str, kinds: type | tuple[type, ...]) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ProfileError(f"{where} lacks '{key}'; the kernel profile was edited or truncated, re-run hetero profile --kernels")
    value = data[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool):
        wanted = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ProfileError(f"{where}.{key} is {type(value).__name__}, not {wanted}; re-run hetero profile --kernels")
    return value


def _duration(data: Any, key: str, where: str) -> float:
    value = float(_field(data, key, where, (int, float)))
    if not math.isfinite(value) or value < 0:
        raise ProfileError(f"{where}.{key} = {value} is not a duration in seconds")
    return value


def parse_kernel_profile(data: Mapping[str, Any]) -> KernelProfile:
    """A kernel profile from its JSON; ProfileError (naming the field) for anything malformed."""
    from hetero.ir.ops import REGISTRY

    version = _field(data, "schema_version", "kernel profile", int)
    if version != SCHEMA_VERSION:
        raise ProfileError(f"kernel profile schema version {version} is not {SCHEMA_VERSION}; re-run hetero profile --kernels")
    precisions = tuple(_field(data, "precisions", "kernel profile", list))
    if not precisions or any(p not in ("int8", "fp32") for p in precisions):
        raise ProfileError(f"precisions is {list(precisions)}, not a list of int8 / fp32")
    devices = {}
    for name, entry in _field(data, "devices", "kernel profile", dict).items():
        at = f"devices.{name}"
        samples = []
        for i, s in enumerate(_field(entry, "samples", at, list)):
            where = f"{at}.samples[{i}]"
            kernel_class = _field(s, "class", where, str)
            op_type = _field(s, "op_type", where, str)
            if op_type_of(kernel_class) != op_type or (op_type not in REGISTRY and op_type != "layout"):
                raise ProfileError(f"{where}.class '{kernel_class}' is not a kernel class of op type '{op_type}' "
                                   "hetero knows; re-run hetero profile --kernels")
            features = _field(s, "features", where, dict)
            speed = s.get("speed", 1.0)
            if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not 0 < speed < math.inf:
                raise ProfileError(f"{where}.speed is {speed!r}, not a positive number; re-run hetero profile --kernels")
            samples.append(KernelSample(kernel_class, op_type, dict(_field(s, "config", where, dict)),
                                        {k: float(v) for k, v in features.items()}, _duration(s, "seconds", where),
                                        _duration(s, "p10_s", where), _duration(s, "p90_s", where), float(speed)))
        classes = _field(entry, "classes", at, dict)
        kinds = {}
        for c, info in classes.items():
            kinds[c] = _field(info, "kind", f"{at}.classes[{c}]", str)
            if kinds[c] not in ("rf", "hgb", "lin+rf", "loglin"):
                raise ProfileError(f"{at}.classes[{c}].kind is '{kinds[c]}', not rf, hgb, lin+rf or loglin")
        probe = entry.get("probe_s")
        devices[name] = DeviceKernels(identity=_field(entry, "identity", at, dict), samples=tuple(samples),
                                      plan_dispatch_s=_duration(entry, "plan_dispatch_s", at),
                                      runtime_dispatch_s=_duration(entry, "runtime_dispatch_s", at), kinds=kinds,
                                      probe_s=None if probe is None else _duration(entry, "probe_s", at))
    links = tuple(Link(_field(l, "src", f"links[{i}]", str), _field(l, "dst", f"links[{i}]", str),
                       _duration(l, "latency_s", f"links[{i}]"), float(_field(l, "bandwidth_Bps", f"links[{i}]", (int, float))),
                       via=str(l.get("via", "direct")), points=tuple((int(b), float(t)) for b, t in l.get("points", [])))
                  for i, l in enumerate(data.get("links", [])))
    return KernelProfile(created=str(data.get("created", "")), host=dict(data.get("host", {})),
                         libraries=dict(data.get("libraries", {})), precisions=precisions, devices=devices, links=links,
                         budget_s=float(data.get("budget_s", 0.0)), seed=int(data.get("seed", 0)))


def as_profile(kernels: KernelProfile) -> Profile:
    """The kernel profile as a Profile with no measured op entries: the cost model predicts every
    op from ``Profile.kernels``. ``runtime.dispatch_s`` is what the Runtime adds per op (as in a
    model profile: schedule, simulate and validate plan for the Runtime); ``runtime.plan_dispatch_s``
    is the compiled plan's own per-op cost, what ``hetero run --repeat`` and ``--evaluate`` see."""
    devices = {name: DeviceProfile(identity=d.identity, ops={}) for name, d in kernels.devices.items()}
    runtime = {"dispatch_s": max((d.runtime_dispatch_s for d in kernels.devices.values()), default=0.0),
               "plan_dispatch_s": max((d.plan_dispatch_s for d in kernels.devices.values()), default=0.0)}
    return Profile(model="", precision=kernels.precisions[0], created=kernels.created, host=kernels.host,
                   libraries=kernels.libraries, devices=devices, links=kernels.links, runtime=runtime, kernels=kernels)


def load_kernel_profile(path: str | os.PathLike[str]) -> KernelProfile:
    """Read a kernel profile (``hetero profile --kernels``); one ProfileError naming the file and field."""
    from hetero.cost.profile import load_profile

    profile = load_profile(path)
    if profile.kernels is None:
        raise ProfileError(f"{path}: a model profile, not a kernel profile (hetero profile --kernels makes one)")
    return profile.kernels
