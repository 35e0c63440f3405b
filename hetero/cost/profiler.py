"""Measure every op of a graph on real devices with each device's own clock, and the links.

Per (device, op signature): warm-up launches, then timed launches until the estimate is
stable (relative spread (p90 - p10) / median at most ``target_spread``) or the per-op time
budget is spent. Spikes (beyond median + 5 MAD, as a context switch or a page fault gives)
are dropped before the statistics, so one outlier cannot corrupt the profile.

Sweep (``sweep`` > 0): per device and kernel class of the graph, extra synthetic variants of the
graph's ops of that class (channels x0.5..x2, spatial size x0.5..x2, conv strides 1/2) are timed
alone and scaled by the class's in-graph / isolated ratio, so they agree with the graph's own
entries; they are stored with ``features["synthetic"] = 1.0`` and give the regressions many
points per class, as nn-Meter samples each kernel.

Transfers: host->device and device->host are timed for sizes from 1 KiB to 64 MiB and
fitted as latency + bytes/bandwidth; device->device goes through the host (download then
upload) and is timed the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.errors import DeviceError, HeteroError
from hetero.exec.executor import OpTiming, run_on_device
from hetero.ir.graph import Graph, Op, TensorSpec, make_op
from hetero.cost.protocol import HOST, Link
from hetero.cost.profile import DeviceProfile, OpStats, Profile, identity_of, op_features, same_device

log = logging.getLogger(__name__)

KIB = 1024
TRANSFER_SIZES = tuple(KIB * 4**i for i in range(9))  # 1 KiB .. 64 MiB
LIBRARIES = ("numpy", "numba", "pyopencl", "cupy", "onnx", "onnxruntime", "hetero")


@dataclass(frozen=True)
class Budget:
    """When to stop timing one op: enough samples and a small spread, or time used up."""

    warmup: int = 2
    min_count: int = 5
    max_count: int = 200
    target_spread: float = 0.05
    seconds_per_op: float = 0.5


def robust_stats(samples: Sequence[float]) -> tuple[float, float, float, int, int]:
    """(median, p10, p90, kept, dropped) after dropping spikes beyond median + 5 MAD."""
    values = np.asarray(samples, np.float64)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    limit = median + 5.0 * max(mad, 1e-3 * median, 1e-9)
    kept = values[values <= limit]
    return (
        float(np.median(kept)),
        float(np.percentile(kept, 10)),
        float(np.percentile(kept, 90)),
        int(kept.size),
        int(values.size - kept.size),
    )


def random_input(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """A plausible input array for timing: normal floats, full-range small ints, zero indices."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(dtype)
    if dtype.kind == "b":  # masks (And, Where's condition)
        return rng.integers(0, 2, spec.shape).astype(dtype)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, spec.shape).astype(dtype)
    return np.zeros(spec.shape, dtype)


def time_op(device: Device, op: Op, budget: Budget, rng: np.random.Generator) -> OpStats:
    """Time one op on one device until stable; statistics are robust to spikes."""
    arrays = [random_input(s, rng) for s in op.input_specs if s is not None and s.name not in op.weights]
    buffers = [device.upload(a) for a in arrays]
    for _ in range(budget.warmup):
        device.run(op, buffers)
    device.synchronize()
    samples: list[float] = []
    walls: list[float] = []
    started = time.perf_counter()
    while len(samples) < budget.max_count:
        launch = time.perf_counter()
        _, seconds = device.timed_run(op, buffers)
        device.synchronize()
        walls.append(time.perf_counter() - launch)
        samples.append(seconds)
        if len(samples) >= budget.min_count:
            median, p10, p90, _, _ = robust_stats(samples)
            if (p90 - p10) <= budget.target_spread * median:
                break
            if time.perf_counter() - started > budget.seconds_per_op:
                break
    return _stats(op, samples, walls)


def _stats(op: Op, samples: Sequence[float], walls: Sequence[float]) -> OpStats:
    median, p10, p90, kept, dropped = robust_stats(samples)
    return OpStats(
        op_type=op.type,
        median_s=median,
        p10_s=p10,
        p90_s=p90,
        count=kept,
        outliers=dropped,
        spread=(p90 - p10) / median if median > 0 else 0.0,
        features=op_features(op),
        wall_median_s=max(robust_stats(walls)[0], median),
    )


def time_ops_in_graph(device: Device, graph: Graph, budget: Budget, rng: np.random.Generator) -> dict[str, OpStats]:
    """Time every op where it really runs: inside whole-graph runs on the device, in topological
    order, so each op meets the caches, thread wake-ups and launch gaps a runtime gives it.
    Ops with one signature pool their samples. Stops when every signature is stable or the
    budget (seconds_per_op per signature) is spent."""
    order = list(graph.ops_in_order())
    feeds = {spec.name: random_input(spec, rng) for spec in graph.inputs}
    samples: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    first = {op.signature(): op for op in reversed(order)}
    budget_s = budget.seconds_per_op * len(first)

    def record(op: Op, outputs: Sequence[object], timing: OpTiming | None) -> None:
        assert timing is not None  # a timed run times every op
        samples.setdefault(op.signature(), []).append(timing.device_s)
        walls.setdefault(op.signature(), []).append(timing.wall_s)

    def one_run(sampled: bool) -> None:
        run_on_device(graph, device, feeds, observe=record if sampled else None, timed=True)

    for _ in range(budget.warmup):
        one_run(False)
    started = time.perf_counter()
    runs = 0
    while runs < budget.max_count:
        one_run(True)
        runs += 1
        if runs >= budget.min_count:
            stable = all(
                (lambda m, lo, hi: hi - lo <= budget.target_spread * m)(*robust_stats(v)[:3]) for v in samples.values()
            )
            if stable or time.perf_counter() - started > budget_s:
                break
    return {signature: _stats(first[signature], samples[signature], walls[signature]) for signature in samples}


SWEEP_CHANNELS = (0.5, 1.0, 2.0)
SWEEP_SPATIAL = (0.5, 0.75, 1.0, 1.5, 2.0)
SWEEP_STRIDES = (1, 2)
MAX_CHANNELS = 2048
SWEEP_BUDGET = Budget(warmup=1, min_count=3, max_count=30, target_spread=0.1, seconds_per_op=0.1)
SWEEP_RATIO_OPS = 4  # graph ops per class re-timed alone to learn the in-graph / isolated ratio


def _channels(n: int, factor: float) -> int:
    if factor == 1.0 or n <= 1:
        return n
    scaled = n * factor
    value = max(8, int(round(scaled / 8)) * 8) if n >= 16 else max(1, int(round(scaled)))
    return min(value, max(n, MAX_CHANNELS))


def _spatial(n: int, factor: float) -> int:
    return n if n <= 1 else max(1, int(round(n * factor)))


def _scale_shape(shape: tuple[int, ...], channels: float, spatial: float) -> tuple[int, ...]:
    if len(shape) < 2:
        return shape
    return (shape[0], _channels(shape[1], channels), *(_spatial(d, spatial) for d in shape[2:]))


def _resample(array: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values of the array's dtype drawn from its own values (scales stay positive)."""
    return rng.choice(array.reshape(-1), size=shape).astype(array.dtype)


def make_variant(op: Op, channels: float, spatial: float, stride: int | None, rng: np.random.Generator) -> Op | None:
    """``op`` with channels and spatial size scaled (and a conv's stride set), random constants
    of the right dtypes and shapes; None where that gives no valid op."""
    conv = op.type in ("Conv", "QLinearConv")
    gemm = op.type in ("Gemm", "QGemm", "MatMul", "QLinearMatMul")
    specs: dict[str, TensorSpec] = {}
    for spec in op.input_specs:
        if spec is not None and spec.name not in op.weights:
            specs[spec.name] = TensorSpec(spec.name, _scale_shape(spec.shape, channels, spatial), spec.dtype)
    attrs = dict(op.attrs)
    weights: dict[str, np.ndarray] = {}
    if conv or gemm:
        w_name = op.inputs[3 if op.type.startswith("Q") else 1]
        w = op.weights.get(w_name)
        if w is None:
            return None
        if conv:
            x = op.input_specs[0]
            assert x is not None
            c_old, c_new = x.shape[1], specs[x.name].shape[1]
            group = int(op.attrs.get("group", 1))
            m_old = w.shape[0]
            if group == 1:
                m_new = _channels(m_old, channels)
                w_shape = (m_new, c_new, *w.shape[2:])
            elif group == c_old:
                m_new = c_new * (m_old // c_old)
                attrs["group"] = c_new
                w_shape = (m_new, 1, *w.shape[2:])
            elif c_new == c_old:
                m_new, w_shape = m_old, tuple(w.shape)
            else:
                return None
            if stride is not None:
                attrs["strides"] = (stride,) * (len(w.shape) - 2)
        else:
            trans_b = bool(op.attrs.get("transB", 0)) and op.type != "MatMul"
            a = op.input_specs[0]
            assert a is not None
            k_new = specs[a.name].shape[-1] if not op.attrs.get("transA", 0) else specs[a.name].shape[0]
            m_old = w.shape[0] if trans_b else w.shape[-1]
            m_new = _channels(m_old, channels)
            w_shape = (m_new, k_new) if trans_b else (k_new, m_new)
        weights[w_name] = _resample(w, w_shape, rng)
        for name in op.inputs:
            if name in op.weights and name != w_name:
                v = op.weights[name]
                per_channel = v.ndim == 1 and v.size == m_old and m_old > 1
                weights[name] = _resample(v, (m_new,), rng) if per_channel else v
    else:
        for name in op.inputs:
            if name in op.weights:
                v = op.weights[name]
                weights[name] = v if v.size <= 1 else _resample(v, _scale_shape(v.shape, channels, spatial), rng)
    try:
        variant = make_op(f"{op.name}~sweep", op.type, op.inputs, op.outputs, attrs, specs, weights)
    except (HeteroError, ValueError, IndexError, AssertionError):
        return None
    if any(d < 1 for s in variant.output_specs for d in s.shape):
        return None
    return variant


def sweep_variants(bases: Sequence[Op], count: int, rng: np.random.Generator, max_flops: float, max_bytes: float) -> list[Op]:
    """Up to ``count`` valid variants of ``bases`` (taken in turn) with distinct signatures that
    none of the bases has, each at most ``max_flops`` and ``max_bytes``: the channel x spatial
    (x stride for convs) grid first, then random factors in the same ranges."""
    seen = {op.signature() for op in bases}
    conv = bases[0].type in ("Conv", "QLinearConv")
    strides: tuple[int | None, ...] = SWEEP_STRIDES if conv else (None,)
    grid = [(c, s, t) for c in SWEEP_CHANNELS for s in SWEEP_SPATIAL for t in strides]
    order = [grid[i] for i in rng.permutation(len(grid))]
    variants: list[Op] = []
    attempts = 0
    while len(variants) < count and attempts < 8 * count + len(grid):
        if attempts < len(order):
            c, s, t = order[attempts]
        else:
            c, s = (float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) for _ in range(2))
            t = int(rng.choice(SWEEP_STRIDES)) if conv else None
        base = bases[attempts % len(bases)]
        attempts += 1
        variant = make_variant(base, c, s, t, rng)
        if variant is None or variant.flops > max_flops or variant.bytes_read + variant.bytes_written > max_bytes:
            continue
        signature = variant.signature()
        if signature not in seen:
            seen.add(signature)
            variants.append(variant)
    return variants


def _scaled_stats(stats: OpStats, device_ratio: float, wall_ratio: float) -> OpStats:
    wall = stats.wall_median_s * wall_ratio if stats.wall_median_s is not None else None
    return OpStats(
        op_type=stats.op_type,
        median_s=stats.median_s * device_ratio,
        p10_s=stats.p10_s * device_ratio,
        p90_s=stats.p90_s * device_ratio,
        count=stats.count,
        outliers=stats.outliers,
        spread=stats.spread,
        features={**stats.features, "synthetic": 1.0, "sweep_ratio": wall_ratio},
        wall_median_s=max(wall, stats.median_s * device_ratio) if wall is not None else None,
    )


def sweep_device(
    device: Device,
    unique: Mapping[str, Op],
    measured: Mapping[str, OpStats],
    count: int,
    rng: np.random.Generator,
    budget: Budget = SWEEP_BUDGET,
    progress: Callable[[str], None] | None = None,
) -> dict[str, OpStats]:
    """Per kernel class of the measured graph ops: ``count`` synthetic variants timed alone,
    scaled by the median in-graph / isolated ratio of the class's own ops (re-timed alone)."""
    from hetero.cost.model import kernel_class

    classes: dict[str, list[Op]] = {}
    for signature, op in unique.items():
        if signature in measured and device.supports(op):
            classes.setdefault(kernel_class(op.type, measured[signature].features), []).append(op)
    out: dict[str, OpStats] = {}
    for name, bases in classes.items():
        bases = sorted(bases, key=lambda o: o.flops)
        max_flops = 2.0 * max(op.flops for op in bases) + 1.0
        max_bytes = 2.0 * max(op.bytes_read + op.bytes_written for op in bases) + 1.0
        variants = sweep_variants(bases, count, rng, max_flops, max_bytes)
        if progress:
            progress(f"{device.name}: sweep {name} ({len(variants)} variants)")
        device_ratios, wall_ratios = [], []
        step = max(1, len(bases) // SWEEP_RATIO_OPS)
        for op in bases[::step][:SWEEP_RATIO_OPS]:
            try:
                alone = time_op(device, op, budget, rng)
            except DeviceError as err:
                log.warning("%s: %s failed while sweeping: %s", device.name, op.name, err)
                continue
            inside = measured[op.signature()]
            if alone.median_s > 0 and alone.expected_s > 0:
                device_ratios.append(inside.median_s / alone.median_s)
                wall_ratios.append(inside.expected_s / alone.expected_s)
        if not device_ratios:
            continue
        device_ratio, wall_ratio = float(np.median(device_ratios)), float(np.median(wall_ratios))
        for variant in variants:
            signature = variant.signature()
            if signature in measured or signature in out or not device.supports(variant):
                continue
            try:
                out[signature] = _scaled_stats(time_op(device, variant, budget, rng), device_ratio, wall_ratio)
            except DeviceError as err:
                log.warning("%s: sweep variant of %s failed: %s", device.name, variant.name, err)
    return out


def fit_link(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares latency + bytes/bandwidth, weighted by 1/seconds so small sizes count too."""
    nbytes = np.array([p[0] for p in points], np.float64)
    seconds = np.array([p[1] for p in points], np.float64)
    weights = 1.0 / np.maximum(seconds, 1e-9)
    design = np.stack([np.ones_like(nbytes), nbytes], axis=1) * weights[:, None]
    (latency, per_byte), *_ = np.linalg.lstsq(design, seconds * weights, rcond=None)
    if per_byte <= 0:  # transfers this cheap are all latency; keep the model well defined
        per_byte = 1e-15
    return max(float(latency), 0.0), float(1.0 / per_byte)


def _median_time(action: Callable[[], object], device: Device, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        device.synchronize()
        start = time.perf_counter()
        action()
        device.synchronize()
        samples.append(time.perf_counter() - start)
    return robust_stats(samples)[0]


def calibrate_links(devices: Sequence[Device], sizes: Iterable[int] = TRANSFER_SIZES, repeat: int = 5) -> list[Link]:
    """Fit host<->device for each device and device->device (through the host) for each pair."""
    sizes = list(sizes)
    host_arrays = {n: np.ones(n, np.uint8) for n in sizes}
    resident = {d.name: {n: d.upload(host_arrays[n]) for n in sizes} for d in devices}
    links = []
    for device in devices:
        up = [(n, _median_time(lambda: device.upload(host_arrays[n]), device, repeat)) for n in sizes]
        down = [(n, _median_time(lambda: device.download(resident[device.name][n]), device, repeat)) for n in sizes]
        for src, dst, points in ((HOST, device.name, up), (device.name, HOST, down)):
            latency, bandwidth = fit_link(points)
            links.append(Link(src, dst, latency, bandwidth, via="direct", points=tuple(points)))
    for src in devices:
        for dst in devices:
            if src is dst:
                continue
            points = [
                (n, _median_time(lambda: dst.upload(src.download(resident[src.name][n])), dst, repeat)) for n in sizes
            ]
            latency, bandwidth = fit_link(points)
            links.append(Link(src.name, dst.name, latency, bandwidth, via=HOST, points=tuple(points)))
    return links


HANDOFF_CHAIN = 24  # Identity ops in the calibration chain: device a, a, b, b, a, a, ...
HANDOFF_REQUESTS = 40


def calibrate_handoffs(devices: Sequence[Device], links: Sequence[Link], length: int = HANDOFF_CHAIN,
                       requests: int = HANDOFF_REQUESTS) -> dict[str, dict[str, float]]:
    """Per ordered pair of devices: what a runtime hand-off from src to dst costs beyond the fitted
    src->dst link transfer. A chain of tiny Identity ops placed a, a, b, b, a, a, ... is served
    through the real Runtime; for each edge kind the gap is the consumer's start minus the
    producer's end (the runtime's trace events). The hand-off cost is the median cross-device gap
    minus the median same-device gap (the per-op dispatch the cost model already charges) minus the
    link's fitted time for the tensor; never below 0. Pairs where a device lacks Identity are left out."""
    from hetero.cost.protocol import TableCostModel
    from hetero.exec.dispatch import identity_chain, op_wall_s
    from hetero.exec.runtime import Runtime
    from hetero.policy import PolicyContext, make_policy
    from hetero.schedulers import fixed_schedule

    graph = identity_chain(length)
    nbytes = int(graph.inputs[0].nbytes)
    fits = {(link.src, link.dst): link for link in links}
    probe = next(iter(graph.ops_in_order()))
    out: dict[str, dict[str, float]] = {}
    for i, a in enumerate(devices):
        for b in devices[i + 1:]:
            if not (a.supports(probe) and b.supports(probe)) or (a.name, b.name) not in fits or (b.name, a.name) not in fits:
                log.info("hand-off %s <-> %s: not measured (no Identity kernel or no link fit)", a.name, b.name)
                continue
            placement = {op.name: (a.name if (k // 2) % 2 == 0 else b.name) for k, op in enumerate(graph.ops_in_order())}
            seconds = {d.name: op_wall_s(d, graph) for d in (a, b)}
            cost = TableCostModel([a.name, b.name], {n: dict(seconds) for n in graph.nodes},
                                  [l for l in links if {l.src, l.dst} <= {HOST, a.name, b.name}], host=HOST)
            plan = fixed_schedule(graph, cost, placement)
            runtime = Runtime(graph, {a.name: a, b.name: b}, make_policy("static"), PolicyContext(graph, cost), initial=plan)
            feeds = [{"t0": np.zeros(16, np.float32)}] * requests
            runtime.serve(feeds[:5])
            report = runtime.serve(feeds)
            start = {(e.args["request"], e.name): e.start_s for e in report.events if e.kind == "compute"}
            end = {(e.args["request"], e.name): e.end_s for e in report.events if e.kind == "compute"}
            gaps: dict[tuple[str, str], list[float]] = {}
            for u, v in graph.edges:
                pair = (placement[u], placement[v])
                for r in range(requests):
                    if (r, u) in end and (r, v) in start:
                        gaps.setdefault(pair, []).append(start[(r, v)] - end[(r, u)])
            local = float(np.median(gaps.get((a.name, a.name), []) + gaps.get((b.name, b.name), [])))
            for src, dst in ((a.name, b.name), (b.name, a.name)):
                extra = float(np.median(gaps[(src, dst)])) - local - fits[(src, dst)].seconds(nbytes)
                out.setdefault(src, {})[dst] = max(0.0, extra)
                log.info("hand-off %s -> %s: %.1f us beyond the link", src, dst, out[src][dst] * 1e6)
    return out


# CPU flags that matter to hetero's figures: the int8 GEMM path (VNNI) and PoCL's compiler
# (LLVM 14 knows no CPU with avx512_vp2intersect, Zen 5).
CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_vp2intersect", "amx_int8")


def host_identity() -> dict[str, object]:
    """The machine a profile is measured on: CPU model, x86 family/model/stepping, the flags that matter."""
    from hetero.backends.base import host_cpu_name

    identity: dict[str, object] = {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": host_cpu_name(),
                                   "cores": __import__("os").cpu_count()}
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError as err:
        log.debug("cannot read /proc/cpuinfo: %s", err)
    if "cpu family" in fields:
        identity["cpu_id"] = (f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
                              f"stepping {fields.get('stepping', '?')}")
    if "flags" in fields:
        flags = set(fields["flags"].split())
        identity["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in flags]
        identity["virtual_machine"] = "hypervisor" in flags
    return identity


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def profile_graph(
    graph: Graph,
    devices: Sequence[Device],
    model: str,
    precision: str,
    budget: Budget = Budget(),
    previous: Profile | None = None,
    transfer_sizes: Iterable[int] = TRANSFER_SIZES,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    in_graph: bool = True,
    dispatch_s: float = 0.0,
    sweep: int = 0,
    sweep_budget: Budget = SWEEP_BUDGET,
    handoffs: bool = False,
) -> Profile:
    """Measure every op signature of the graph on every device (reusing ``previous`` entries
    measured on the same hardware), plus the links; ops a device has no kernel for are skipped. A
    device that fails on an op it has a kernel for is a DeviceError: no profile is returned.

    With ``in_graph`` (the default) a device that runs every op is timed inside whole-graph runs
    (what a runtime sees); otherwise, and for the rest, each op is timed alone in a loop.
    With ``sweep`` > 0, each kernel class also gets that many synthetic variants (see the module doc).
    ``dispatch_s`` is the runtime's own cost per op, recorded as ``runtime.dispatch_s``: measure it
    with ``hetero.exec.dispatch.measure_dispatch(devices)`` (0.0: not measured). With ``handoffs`` and
    two or more devices, each device pair's hand-off cost is measured (:func:`calibrate_handoffs`)."""
    rng = np.random.default_rng(seed)
    unique: dict[str, Op] = {}
    for op in graph.ops_in_order():
        unique.setdefault(op.signature(), op)
    device_profiles: dict[str, DeviceProfile] = {}
    for device in devices:
        reused: Mapping[str, OpStats] = {}
        if previous is not None and device.name in previous.devices:
            entry = previous.devices[device.name]
            if same_device(entry.identity, device.info):
                reused = entry.ops
        measured: dict[str, OpStats] = dict(reused)
        if in_graph and all(device.supports(op) for op in unique.values()) and not set(unique) <= set(measured):
            if progress:
                progress(f"{device.name}: whole-graph runs")
            try:
                fresh = time_ops_in_graph(device, graph, budget, rng)
                measured.update({s: st for s, st in fresh.items() if s not in reused})
            except DeviceError as err:
                log.warning("%s: whole-graph timing failed (%s); timing ops one by one", device.name, err)
        for signature, op in unique.items():
            if signature in measured:
                continue
            if not device.supports(op):
                log.info("%s: no kernel for %s, not profiled", device.name, op.name)
                continue
            if progress:
                progress(f"{device.name}: {op.type} {op.name}")
            try:
                measured[signature] = time_op(device, op, budget, rng)
            except DeviceError as err:  # a device that cannot run an op it claims is broken: say so, stop
                done = sum(1 for s in unique if s in measured)
                raise DeviceError(f"device {device.name} failed on {op.type} node {op.name} after {done} of {len(unique)} "
                                  f"op signatures were measured ({err}); fix the device or leave it out of --devices") from None
        if sweep > 0:
            measured.update(sweep_device(device, unique, measured, sweep, rng, sweep_budget, progress))
        device_profiles[device.name] = DeviceProfile(identity=identity_of(device.info), ops=measured)
    power = {device.name: _device_power(device, unique.values(), rng) for device in devices}
    if progress:
        progress("links")
    links = calibrate_links(devices, transfer_sizes)
    measured_handoffs = calibrate_handoffs(devices, links) if handoffs and len(devices) > 1 else {}
    return Profile(
        model=model,
        precision=precision,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        host=host_identity(),
        libraries=library_versions(),
        devices=device_profiles,
        links=tuple(links),
        runtime={"dispatch_s": dispatch_s},
        power=power,
        handoffs=measured_handoffs,
    )


def _device_power(device: Device, ops: Iterable[Op], rng: np.random.Generator) -> dict[str, object]:
    """The device's power entry (hetero.cost.power), busy running its heaviest op."""
    from hetero.cost.power import measure_power

    supported = [op for op in ops if device.supports(op)]
    if not supported:
        return {"unavailable": "the device runs none of the model's ops"}
    op = max(supported, key=lambda o: o.flops)
    buffers = [device.upload(random_input(s, rng)) for s in op.input_specs if s is not None and s.name not in op.weights]

    def busy() -> None:
        device.run(op, buffers)
        device.synchronize()

    index = int(device.name.split(":")[1]) if device.name.count(":") == 1 and device.name.split(":")[1].isdigit() else 0
    return measure_power(device.info.kind, index, busy)


def quick_profile(graph: Graph, devices: list, model: str, precision: str):
    """A fast profile (a few launches per op, small transfers) when the user gave none."""
    log.warning("no --profile given: measuring each op briefly on %s to plan (hetero profile gives better plans)",
                ", ".join(d.name for d in devices))
    from hetero.exec.dispatch import measure_dispatch

    budget = Budget(warmup=1, min_count=3, max_count=20, target_spread=0.2, seconds_per_op=0.02)
    return profile_graph(graph, devices, model, precision, budget, transfer_sizes=[4096, 65536, 1 << 20],
                         dispatch_s=measure_dispatch(devices))
