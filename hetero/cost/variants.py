"""The profiler's sweep: synthetic variants of a graph's ops (channels x0.5..x2, spatial size
x0.5..x2, conv strides 1/2) timed alone on a device and scaled by their kernel class's in-graph /
isolated ratio, so they agree with the graph's own entries; stored with
``features["synthetic"] = 1.0``, they give the per-op-type regressions many points per class."""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.profile import OpStats
from hetero.cost.timing import Budget, time_op
from hetero.errors import DeviceError, HeteroError
from hetero.ir.graph import Op, TensorSpec, make_op

log = logging.getLogger(__name__)

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
