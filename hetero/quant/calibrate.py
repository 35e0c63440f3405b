"""Calibration: checked feeds, and the range of every float tensor over a calibration set.

Calibration runs the fp32 graph on the reference device (``hetero.exec.executor.run_on_device``
with an ``observe`` hook) and records, per float tensor, its min/max over the calibration set
("minmax"), or that range clipped to [-t, t] where t is the given percentile of |x| read from
a 2048-bin histogram over [0, max|x|] ("percentile"). NaN or Inf in the calibration data, or
produced by the model on it, is refused, with one exception: an infinity that flows from an
infinite constant of the model (an attention mask: ``Where(mask, -inf, scores)``, a masked_fill)
is what the model means. Such a tensor's range keeps its infinite bound, over its finite values
otherwise, and the quantizer leaves the ops that read or write it in float.

:func:`calibration_for` gives the calibration set a MODEL argument uses when none is given:
the data its builtin entry names (``hetero.ir.source.calibration_of``: the digits for the
seed CNN), seeded random inputs otherwise (standard normal; token ids below their embedding's size).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hetero.backends.reference import ReferenceDevice
from hetero.errors import InputError
from hetero.exec.executor import OpTiming, run_on_device
from hetero.ir.graph import Graph, Op, check_feeds
from hetero.ir.source import calibration_of

log = logging.getLogger(__name__)

METHODS = ("minmax", "percentile")
HISTOGRAM_BINS = 2048
Feeds = dict[str, np.ndarray]
Range = tuple[float, float]


def calibration_feeds(graph: Graph, calibration: Any, source: str = "calibration data") -> list[Feeds]:
    """Checked feed dicts from samples (an N x input shape array or a list of arrays) or feed dicts.

    ``source`` names the data in errors (the file it came from, say). Non-finite values are refused.
    """
    if isinstance(calibration, Mapping):
        calibration = [calibration]
    elif isinstance(calibration, (list, tuple)) and calibration:
        if all(isinstance(c, np.ndarray) for c in calibration):
            calibration = np.stack(calibration)
    if isinstance(calibration, np.ndarray):
        if len(graph.inputs) != 1:
            raise InputError(
                f"model {graph.name} has {len(graph.inputs)} inputs; pass calibration as a list of feed dicts"
            )
        spec = graph.inputs[0]
        samples = np.asarray(calibration)
        if samples.shape[1:] != spec.shape:
            if spec.shape[:1] != (1,) or samples.shape[1:] != spec.shape[1:]:
                raise InputError(
                    f"{source}: calibration array has shape {list(samples.shape)}; model {graph.name} input "
                    f"'{spec.name}' needs N x {list(spec.shape)} (samples stacked along a first axis)"
                )
            samples = samples[:, None]
        calibration = [{spec.name: sample} for sample in samples]
    feeds = []
    for index, feed in enumerate(calibration):
        try:
            feeds.append(check_feeds(graph, feed))
        except InputError as err:
            raise InputError(f"{source}: calibration sample {index}: {err}") from None
    if not feeds:
        raise InputError(f"{source}: the calibration set for model {graph.name} is empty")
    _check_finite(feeds, source)
    return feeds


def _check_finite(feeds: list[Feeds], source: str) -> None:
    """Refuse NaN/Inf in calibration feeds with their count: they would make every range meaningless."""
    bad: Counter[str] = Counter()
    samples: Counter[str] = Counter()
    for feed in feeds:
        for name, array in feed.items():
            if np.issubdtype(array.dtype, np.floating):
                count = int(array.size - np.count_nonzero(np.isfinite(array)))
                bad[name] += count
                samples[name] += count > 0
    for name, count in bad.items():
        if count:
            raise InputError(
                f"{source}: {count} NaN/Inf values in input '{name}' (in {samples[name]} of {len(feeds)} "
                f"calibration samples); calibration needs finite data: drop or replace those samples"
            )


def _visit_tensors(graph: Graph, feeds: Feeds, visit: Callable[[str, np.ndarray, Op | None], None]) -> None:
    """Run the graph on the reference device and call visit(name, array, producer) on every
    float32 tensor (producer None for a graph input)."""
    for name, array in feeds.items():
        if array.dtype == np.float32:
            visit(name, array, None)

    def observe(op: Op, outputs: Sequence[np.ndarray], _: OpTiming | None) -> None:
        for tensor, result in zip(op.outputs, outputs):
            if result.dtype == np.float32:
                visit(tensor, result, op)

    run_on_device(graph, ReferenceDevice(), feeds, observe=observe)


def calibrate(
    graph: Graph, calibration: Any, method: str = "minmax", percentile: float = 99.99, source: str = "calibration data"
) -> dict[str, Range]:
    """Per float tensor, its calibrated (min, max) over the calibration set (named ``source`` in errors)."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r} (use {' or '.join(METHODS)})")
    if method == "percentile" and not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    feeds = calibration_feeds(graph, calibration, source)
    ranges: dict[str, Range] = {}
    masked: set[str] = set()  # tensors whose infinities flow from an infinite constant (a mask)
    sample = 0

    def from_mask(op: Op | None) -> bool:
        if op is None:
            return False
        constants = (op.weights[t] for t in op.inputs if t in op.weights)
        infinite_constant = any(np.issubdtype(c.dtype, np.floating) and np.isinf(c).any() for c in constants)
        return infinite_constant or any(t in masked for t in op.activation_inputs)

    def record(name: str, array: np.ndarray, op: Op | None) -> None:
        finite = np.isfinite(array)
        if not finite.all():
            if np.isnan(array).any() or not from_mask(op):
                count = int(array.size - np.count_nonzero(finite))
                raise InputError(
                    f"model {graph.name}: tensor '{name}' holds {count} NaN/Inf values on calibration sample "
                    f"{sample}: the fp32 model overflows on this data; check the calibration inputs' scale"
                )
            masked.add(name)
        low, high = float(array.min(initial=np.inf)), float(array.max(initial=-np.inf))
        old = ranges.get(name, (np.inf, -np.inf))
        ranges[name] = (min(old[0], low), max(old[1], high))

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # non-finite results are refused above
        for sample, feed in enumerate(feeds):
            _visit_tensors(graph, feed, record)
    if method == "minmax":
        return ranges
    histograms: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(HISTOGRAM_BINS, np.int64))

    def count(name: str, array: np.ndarray, _: Op | None) -> None:
        top = max(abs(ranges[name][0]), abs(ranges[name][1]))
        if 0 < top < np.inf:
            histograms[name] += np.histogram(np.abs(array), bins=HISTOGRAM_BINS, range=(0.0, top))[0]

    for feed in feeds:
        _visit_tensors(graph, feed, count)
    clipped = dict(ranges)
    for name, histogram in histograms.items():
        low, high = ranges[name]
        top = max(abs(low), abs(high))
        cumulative = np.cumsum(histogram) / max(int(histogram.sum()), 1)
        index = int(np.searchsorted(cumulative, percentile / 100.0))
        threshold = top * min(index + 1, HISTOGRAM_BINS) / HISTOGRAM_BINS
        clipped[name] = (max(low, -threshold), min(high, threshold))
    return clipped


def calibration_for(model: str | Path, graph: Graph, n: int = 32, seed: int = 0) -> list[Feeds]:
    """A calibration set for a MODEL argument: the data the model registry names for it (the
    digits for the seed CNN), seeded random inputs otherwise: standard normal, and integer inputs
    (token ids, masks) uniform in [0, :func:`integer_input_bound`)."""
    name = str(model)
    if calibration_of(name) == "digits":
        from hetero.ir.datasets import calibration_digits

        return calibration_feeds(graph, calibration_digits(n))
    log.warning(
        "calibrating %s on %d seeded random inputs (seed %d; standard normal, integer ids below their embedding's "
        "size), not real data; pass --calibration for real accuracy", name, n, seed,
    )
    rng = np.random.default_rng(seed)
    bounds = {s.name: integer_input_bound(graph, s.name) for s in graph.inputs if not np.issubdtype(np.dtype(s.dtype), np.floating)}
    return [
        {s.name: rng.integers(0, bounds[s.name], s.shape).astype(s.dtype) if s.name in bounds
         else rng.standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}
        for _ in range(n)
    ]


def integer_input_bound(graph: Graph, name: str) -> int:
    """Random integer inputs are drawn from [0, bound): token ids below the size of the smallest
    constant table a Gather indexes with them (an embedding), 0/1 for any other integer input."""
    sizes = [
        int(op.weights[op.inputs[0]].shape[int(op.attrs.get("axis", 0))])
        for op in graph.ops_in_order()
        if op.type == "Gather" and len(op.inputs) > 1 and op.inputs[1] == name and op.inputs[0] in op.weights
    ]
    return min(sizes) if sizes else 2
