"""The profile-based cost model: measured lookup, per-op-type regression, spec roofline.

``compute(node, device)`` for a measured device looks the op's signature up in the profile (the
wall-clock median of a synchronous launch, which includes the launch overhead a runtime pays,
plus the runtime's own dispatch cost per op that the profile calibrated);
for a signature never measured it predicts with a regression fitted per (device, op type) on
the measured points (as nn-Meter and Neurosurgeon predict per kernel or layer type); a spec
device from the catalog gets a roofline: launch overhead + max(FLOPs / peak, bytes / bandwidth).

The regression chooses, per (device, op type), by leave-one-out relative error, between
  * relative least squares: t = a + b*FLOPs + c*bytes (weights 1/t, so every size counts), and
  * log-linear: log t = w . [1, log FLOPs, log bytes, log output elements],
and falls back to the per-op-type median when there are too few points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from hetero.errors import ProfileError
from hetero.ir.graph import Graph, Op
from hetero.cost.profile import HOST, OpStats, Profile, load_profile, op_features

FEATURE_KEYS_LINEAR = ("flops", "bytes_read", "bytes_written")
FEATURE_KEYS_LOG = ("flops", "bytes_read", "bytes_written", "out_elements")


def _linear_design(features: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[1.0] + [f[k] for k in FEATURE_KEYS_LINEAR] for f in features])


def _log_design(features: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[1.0] + [math.log1p(f[k]) for k in FEATURE_KEYS_LOG] for f in features])


@dataclass(frozen=True)
class Regression:
    """A fitted per-op-type model: kind is 'linear', 'log' or 'median'."""

    kind: str
    coefficients: tuple[float, ...]
    scale: tuple[float, ...] = ()

    def predict(self, features: Mapping[str, float]) -> float:
        if self.kind == "median":
            return self.coefficients[0]
        if self.kind == "linear":
            x = _linear_design([features])[0] / np.asarray(self.scale)
            return max(float(x @ np.asarray(self.coefficients)), 1e-9)
        x = _log_design([features])[0]
        return float(math.exp(float(x @ np.asarray(self.coefficients))))


def _fit_kind(kind: str, features: Sequence[Mapping[str, float]], seconds: np.ndarray) -> Regression:
    if kind == "median":
        return Regression("median", (float(np.median(seconds)),))
    if kind == "linear":
        design = _linear_design(features)
        scale = np.maximum(np.abs(design).max(axis=0), 1e-12)
        weights = 1.0 / seconds
        coef, *_ = np.linalg.lstsq(design / scale * weights[:, None], seconds * weights, rcond=None)
        return Regression("linear", tuple(float(c) for c in coef), tuple(float(s) for s in scale))
    design = _log_design(features)
    ridge = 1e-3 * np.eye(design.shape[1])
    ridge[0, 0] = 0.0
    coef = np.linalg.solve(design.T @ design + ridge, design.T @ np.log(seconds))
    return Regression("log", tuple(float(c) for c in coef))


def fit_regression(stats: Sequence[OpStats]) -> Regression:
    """The per-op-type model with the smallest leave-one-out relative error."""
    seconds = np.array([s.expected_s for s in stats], np.float64)
    features = [s.features for s in stats]
    n = len(stats)
    candidates = ["median"] + (["linear"] if n >= 5 else []) + (["log"] if n >= 6 else [])
    if len(candidates) == 1:
        return _fit_kind("median", features, seconds)
    best, best_error = "median", math.inf
    for kind in candidates:
        errors = []
        for i in range(n):
            keep = [j for j in range(n) if j != i]
            model = _fit_kind(kind, [features[j] for j in keep], seconds[keep])
            errors.append(abs(model.predict(features[i]) - seconds[i]) / seconds[i])
        error = float(np.mean(np.square(errors)))
        if error < best_error:
            best, best_error = kind, error
    return _fit_kind(best, features, seconds)


def kernel_class(op_type: str, features: Mapping[str, float]) -> str:
    """The kernel variant an op takes: convolutions split into depthwise, pointwise (1x1) and
    spatial, because backends run them through different code paths of different efficiency."""
    if op_type in ("Conv", "QLinearConv"):
        group = features.get("group", 1.0)
        if group > 1 and group == features.get("in_channels"):
            return f"{op_type}/depthwise"
        if features.get("kernel_area", 1.0) == 1.0:
            return f"{op_type}/pointwise"
        return f"{op_type}/spatial"
    return op_type


class Regressions:
    """Per-kernel-class regressions with a per-op-type fallback for classes too rare to fit."""

    MIN_POINTS = 3

    def __init__(self, ops: Mapping[str, OpStats]) -> None:
        by_class: dict[str, list[OpStats]] = {}
        by_type: dict[str, list[OpStats]] = {}
        for stats in ops.values():
            if stats.expected_s > 0:
                by_class.setdefault(kernel_class(stats.op_type, stats.features), []).append(stats)
                by_type.setdefault(stats.op_type, []).append(stats)
        self.by_class = {c: fit_regression(v) for c, v in by_class.items() if len(v) >= self.MIN_POINTS}
        self.by_type = {t: fit_regression(v) for t, v in by_type.items()}

    def get(self, op_type: str, features: Mapping[str, float]) -> Regression | None:
        return self.by_class.get(kernel_class(op_type, features)) or self.by_type.get(op_type)

    def __contains__(self, op_type: str) -> bool:
        return op_type in self.by_type


def fit_regressions(ops: Mapping[str, OpStats]) -> Regressions:
    """The regressions of one device's measured entries."""
    return Regressions(ops)


@dataclass(frozen=True)
class SpecDevice:
    """A device known only by its datasheet (profiles/catalog/*.json)."""

    name: str
    peak_ops_per_s: Mapping[str, float]  # precision -> ops/s
    memory_bandwidth_Bps: float
    launch_overhead_s: float
    link_latency_s: float
    link_bandwidth_Bps: float
    supported_ops: frozenset[str] | None = None  # None: every op
    memory_bytes: int | None = None

    def roofline(self, op: Op, precision: str) -> float:
        peak = self.peak_ops_per_s.get(precision)
        if not peak:
            raise ProfileError(f"spec device {self.name} gives no peak throughput for {precision}")
        compute = op.flops / peak
        memory = (op.bytes_read + op.bytes_written) / self.memory_bandwidth_Bps
        return self.launch_overhead_s + max(compute, memory)


class ProfileCostModel:
    """compute(node, device) and transfer(nbytes, src, dst) from profiles and spec devices."""

    def __init__(
        self,
        graph: Graph,
        profile: Profile | None,
        devices: Sequence[str],
        precision: str = "fp32",
        specs: Mapping[str, SpecDevice] | None = None,
        can_run: Callable[[Op, str], bool] | None = None,
    ) -> None:
        self.graph = graph
        self.profile = profile
        self.devices = tuple(devices)
        self.host = HOST
        self.precision = precision
        self.specs = dict(specs or {})
        self._can_run = can_run
        self._regressions: dict[str, Regressions] = {}
        for device in self.devices:
            if device in self.specs:
                continue
            if profile is None or device not in profile.devices:
                raise ProfileError(f"device '{device}' is neither in the profile nor a catalog spec device")
            self._regressions[device] = fit_regressions(profile.devices[device].ops)
        self._cache: dict[tuple[str, str], float] = {}

    def can_run(self, node: str, device: str) -> bool:
        op = self.graph.op(node)
        spec = self.specs.get(device)
        if spec is not None:
            if self.precision not in spec.peak_ops_per_s:
                return False
            return spec.supported_ops is None or op.type in spec.supported_ops
        if self._can_run is not None and not self._can_run(op, device):
            return False
        assert self.profile is not None
        measured = self.profile.devices[device].ops
        kernels = self._kernel_cost(device)
        if kernels is not None and op.signature() not in measured:
            return kernels.covers(node)
        return op.signature() in measured or op.type in self._regressions[device]

    def compute(self, node: str, device: str) -> float:
        key = (node, device)
        if key not in self._cache:
            self._cache[key] = self._compute(node, device)
        return self._cache[key]

    def _compute(self, node: str, device: str) -> float:
        if not self.can_run(node, device):
            return math.inf
        op = self.graph.op(node)
        spec = self.specs.get(device)
        if spec is not None:
            return spec.roofline(op, self.precision)
        assert self.profile is not None
        kernels = self._kernel_cost(device)
        if kernels is not None and op.signature() not in self.profile.devices[device].ops:
            return kernels.op_s(node) + self.profile.runtime.get("dispatch_s", 0.0)
        return self.predict_op(op, device) + self.profile.runtime.get("dispatch_s", 0.0)

    def _kernel_cost(self, device: str):
        """The kernel profile's estimate of this graph on the device (hetero.cost.kernel_estimate), or None."""
        kernels = getattr(self.profile, "kernels", None)
        if kernels is None or device not in kernels.devices:
            return None
        from hetero.cost.kernel_estimate import graph_kernel_cost

        return graph_kernel_cost(self.graph, device, kernels)

    def predict_op(self, op: Op, device: str) -> float:
        """Measured median when the signature was profiled, else the op type's regression."""
        assert self.profile is not None
        stats = self.profile.devices[device].ops.get(op.signature())
        if stats is not None:
            return stats.expected_s
        features = op_features(op)
        regression = self._regressions[device].get(op.type, features)
        if regression is None:
            return math.inf
        return regression.predict(features)

    def transfer(self, nbytes: int, src: str, dst: str) -> float:
        """The link's fitted time for nbytes, plus the profile's hand-off cost (the consumer's
        queue wake-up and synchronisation; a request's start or end for the host; 0 where not
        measured) and, between two devices, the consumer's wake-up after idling (see handoff_s)
        and the layout conversions (layout_s)."""
        if src == dst or nbytes == 0:
            return 0.0
        return self._link_transfer(nbytes, src, dst) + self.handoff_s(src, dst) + self.layout_s(nbytes, src, dst)

    def layout_s(self, nbytes: int, src: str, dst: str) -> float:
        """Between two devices, the layout conversions of the tensor on each side that keeps its own
        layout (the cpu device's channels-last; the profile's ``layout``); 0.0 for the host."""
        if self.profile is None or src == dst or HOST in (src, dst):
            return 0.0
        return self.profile.layout_s(src, nbytes) + self.profile.layout_s(dst, nbytes)

    def handoff_s(self, src: str, dst: str) -> float:
        """What a hand-off from src to dst adds to the link: the profile's ``handoffs`` entry (for
        the host: a request's start on dst, or its end on src) plus, between two devices, dst's
        wake-up after idling as long as its table's last point (the simulators charge the wake-up
        after the idle time they see; hetero.sim.effects). 0.0 where the profile measured neither."""
        if self.profile is None or src == dst:
            return 0.0
        if HOST in (src, dst):
            return self.profile.handoff_s(src, dst)
        table = self.profile.wakeup.get(dst, ())
        return self.profile.handoff_s(src, dst) + (table[-1][1] if table else 0.0)

    def _link_transfer(self, nbytes: int, src: str, dst: str) -> float:
        direct = self._link(src, dst)
        if direct is not None:
            return direct(nbytes)
        up, down = self._link(src, HOST), self._link(HOST, dst)
        if up is None or down is None:
            raise ProfileError(f"no transfer path from {src} to {dst} in the profile or catalog")
        return up(nbytes) + down(nbytes)

    def _link(self, src: str, dst: str) -> Callable[[int], float] | None:
        if src == HOST and dst == HOST:
            return lambda n: 0.0
        if self.profile is not None:
            fit = self.profile.link(src, dst)
            if fit is not None:
                return fit.seconds
        for name in (src, dst):
            spec = self.specs.get(name)
            other = dst if name == src else src
            if spec is not None and other == HOST:
                return lambda n, s=spec: s.link_latency_s + n / s.link_bandwidth_Bps
        return None


def cost_model_for(graph: Graph, profile_path: str | None, device_names: list[str], precision: str):
    """A ProfileCostModel over measured devices (from the profile) and catalog spec devices, plus
    each device's memory capacity in bytes."""
    from hetero.cost.catalog import load_catalog

    profile = load_profile(profile_path) if profile_path else None
    catalog = load_catalog()
    specs, memory = {}, {}
    for name in device_names:
        if profile is not None and name in profile.devices:
            memory[name] = int(profile.devices[name].identity.get("memory_bytes") or 0) or None
        elif name in catalog:
            specs[name] = catalog[name]
            memory[name] = catalog[name].memory_bytes
        else:
            known = sorted(set(profile.devices if profile else ()) | set(catalog))
            raise ProfileError(f"device '{name}' is in neither the profile nor the catalog (known: {', '.join(known)})")
    kernel_precisions = profile.kernels.precisions if profile is not None and profile.kernels is not None else ()
    if profile is not None and profile.precision != precision and precision not in kernel_precisions:
        raise ProfileError(f"{profile_path}: measured at {profile.precision}, but {precision} was asked; re-profile with --precision {precision}")
    cost = ProfileCostModel(graph, profile, device_names, precision=precision, specs=specs)
    return cost, {k: v for k, v in memory.items() if v}
