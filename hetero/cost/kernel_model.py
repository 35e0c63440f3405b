"""Kernel classes, features and the per-class predictors of a kernel profile.

A kernel class is what a device's compiled plan runs for an op: on the cpu device, the op type
and the plan step bound to it (``hetero.backends.cpu.plan.build_step``: the step function's name,
the kernel of the device's table it calls, and the build-time choices set in the step, e.g.
``QLinearConv/qconv.depthwise[three_s2]``). It is read from the plan, never derived by separate
rules, so a class cannot contradict the kernels; other devices' classes are the op type.

Predictors are refitted from the stored samples whenever a profile is loaded (no pickles): per
class, scikit-learn's random forest, histogram gradient boosting, or a log-linear fit with a
random forest on its residuals (which extrapolates in size), predicting log seconds from shape
dimensions, FLOPs, bytes, tile remainders and log features. The kind is chosen per class by
held-out error when the profile is measured and stored with it; every fit has a fixed seed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hetero.ir.graph import Op

log = logging.getLogger(__name__)

KINDS = ("rf", "hgb", "lin+rf", "loglin")
EXTRAPOLATE = 4.0  # predictions stay within this factor of the class's fastest and slowest sample
MIN_LEARNED = 12  # below this many samples a class gets the log-linear fit only
PIXEL_TILE, COLUMN_TILE = 6, 64  # the int8 GEMM micro-kernel: 6 pixel rows x 64 output columns
FEATURES = (
    "log_flops", "log_bytes", "log_bytes_read", "log_bytes_written", "log_out_elements", "log_in_elements", "log_param_bytes",
    "cin", "cout", "h", "w", "ho", "wo", "kh", "kw", "stride", "group", "cin_per_group", "cout_per_group",
    "k_depth", "rows", "parts", "signed",
    "cin_mod16", "cin_mod32", "cin_mod64", "cout_mod16", "cout_mod32", "cout_mod64", "k_depth_mod4",
    "wo_mod_tile", "pixels_mod_tile", "pixel_tile_waste", "column_tile_waste", "log_flush_bytes",
)
DERIVED = ("log_cold_param_bytes", "log_cold_bytes_read")  # computed from the stored features (old profiles too)
CACHE_BYTES = 32 << 20  # what a flush must pass to evict everything (the last-level cache, order of magnitude)
LINEAR = ("log_flops", "log_bytes", "log_cold_param_bytes")  # the log-linear part: few, so that it extrapolates calmly


def step_class(step: Any) -> str:
    """The kernel class of a cpu plan step: op type, step function, table kernel, the true flags
    the step's builder fixed (read from the step function's closure)."""
    run = step.run
    name = run.__qualname__.replace(".<locals>", "")
    cells: dict[str, Any] = {}
    for var, cell in zip(run.__code__.co_freevars, run.__closure__ or ()):
        try:
            cells[var] = cell.cell_contents
        except ValueError:  # a cell not yet bound
            continue
    kernel = cells.get("kernel")
    if callable(kernel):
        name = f"table.{getattr(kernel, '__name__', 'kernel')}"
    flags = sorted(var for var, value in cells.items() if isinstance(value, (bool, np.bool_)) and value)
    return f"{step.op.type}/{name}" + (f"[{','.join(flags)}]" if flags else "")


def op_type_of(kernel_class: str) -> str:
    return kernel_class.split("/", 1)[0]


def kernel_features(op: Op, flush_bytes: int) -> dict[str, float]:
    """The numbers the predictors see for an op (the same for a sample and a model's op);
    ``flush_bytes``: what passes through the caches between two launches of the op (a sample's
    flush, a model's bytes per run: hetero.cost.kernel_estimate.bytes_per_run)."""
    x = next((s for s in op.input_specs if s is not None and s.name not in op.weights), None)
    y = op.output_specs[0]
    w = next((op.weights[t] for t in op.inputs if t in op.weights and op.weights[t].ndim == 4), None)
    in_shape = tuple(x.shape) if x is not None else ()
    out_shape = tuple(y.shape)
    cin = in_shape[1] if len(in_shape) > 1 else (in_shape[-1] if in_shape else 1)
    cout = out_shape[1] if len(out_shape) > 1 else 1
    if len(in_shape) == 2:  # a GEMM's rows x depth
        cout = out_shape[-1]
    h, wd = (in_shape[2], in_shape[3]) if len(in_shape) == 4 else (1, 1)
    ho, wo = (out_shape[2], out_shape[3]) if len(out_shape) == 4 else (1, 1)
    group = int(op.attrs.get("group", 1))
    kh, kw = (w.shape[2], w.shape[3]) if w is not None else tuple(op.attrs.get("kernel_shape", (1, 1)))[:2] or (1, 1)
    stride = int(tuple(op.attrs.get("strides", (1,)))[0]) if op.attrs.get("strides") else 1
    k_depth = kh * kw * max(1, cin // group) if w is not None else cin
    pixels = ho * wo
    parts = len(op.activation_inputs)
    signed = float(x is not None and np.dtype(x.dtype) == np.int8)

    def log(v: float) -> float:
        return math.log1p(max(float(v), 0.0))

    return {
        "log_flops": log(op.flops), "log_bytes": log(op.bytes_read + op.bytes_written), "log_bytes_read": log(op.bytes_read), "log_bytes_written": log(op.bytes_written),
        "log_out_elements": log(y.numel), "log_in_elements": log(x.numel if x is not None else 0),
        "log_param_bytes": log(op.param_bytes),
        "cin": float(cin), "cout": float(cout), "h": float(h), "w": float(wd), "ho": float(ho), "wo": float(wo),
        "kh": float(kh), "kw": float(kw), "stride": float(stride), "group": float(group),
        "cin_per_group": float(cin // max(group, 1)), "cout_per_group": float(cout // max(group, 1)),
        "k_depth": float(k_depth), "rows": float(in_shape[0] if len(in_shape) == 2 else pixels), "parts": float(parts),
        "signed": signed,
        "cin_mod16": float(cin % 16), "cin_mod32": float(cin % 32), "cin_mod64": float(cin % 64),
        "cout_mod16": float(cout % 16), "cout_mod32": float(cout % 32), "cout_mod64": float(cout % 64),
        "k_depth_mod4": float(k_depth % 4),
        "wo_mod_tile": float(wo % PIXEL_TILE), "pixels_mod_tile": float(pixels % PIXEL_TILE),
        "pixel_tile_waste": -(-wo // PIXEL_TILE) * PIXEL_TILE / wo - 1.0,
        "column_tile_waste": -(-cout // COLUMN_TILE) * COLUMN_TILE / cout - 1.0,
        "log_flush_bytes": log(flush_bytes),
    }


def layout_features(shape: Sequence[int], itemsize: int, flush_bytes: int) -> dict[str, float]:
    """Features of a layout conversion of a 4-D tensor (its NCHW shape)."""
    n, c, h, w = shape
    elements = n * c * h * w
    base = dict.fromkeys(FEATURES, 0.0)
    base.update({"log_bytes": math.log1p(2 * elements * itemsize), "log_bytes_read": math.log1p(elements * itemsize), "log_bytes_written": math.log1p(elements * itemsize),
                 "log_out_elements": math.log1p(elements), "log_in_elements": math.log1p(elements),
                 "cin": float(c), "cout": float(c), "h": float(h), "w": float(w), "ho": float(h), "wo": float(w),
                 "cin_mod16": float(c % 16), "cin_mod32": float(c % 32), "cin_mod64": float(c % 64),
                 "signed": float(itemsize), "log_flush_bytes": math.log1p(flush_bytes)})
    return base


def derived(f: Mapping[str, float]) -> list[float]:
    """The bytes an op must fetch from memory: its weights (and inputs) times the share of the
    cache the flush before it evicted; a product of two features, which trees cannot form and
    which sets a small op's time after a flush (a 512 KiB QGemm: 27 us warm, 57 us after 15 MB)."""
    evicted = min(1.0, math.expm1(float(f.get("log_flush_bytes", 0.0))) / CACHE_BYTES)
    return [math.log1p(math.expm1(float(f.get(k, 0.0))) * evicted) for k in ("log_param_bytes", "log_bytes_read")]


def _matrix(features: Sequence[Mapping[str, float]]) -> np.ndarray:
    return np.array([[float(f.get(k, 0.0)) for k in FEATURES] + derived(f) for f in features], np.float64)


def _linear(features: Sequence[Mapping[str, float]]) -> np.ndarray:
    rows = [{**f, **dict(zip(DERIVED, derived(f)))} for f in features]
    return np.array([[1.0] + [float(f.get(k, 0.0)) for k in LINEAR] for f in rows], np.float64)


class Fitted:
    """One class's fitted predictor of log seconds."""

    def __init__(self, kind: str, features: Sequence[Mapping[str, float]], seconds: Sequence[float]) -> None:
        from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

        self.kind = kind
        target = np.log(np.maximum(np.asarray(seconds, np.float64), 1e-9))
        self.range = (float(target.min()) - math.log(EXTRAPOLATE), float(target.max()) + math.log(EXTRAPOLATE))
        x = _matrix(features)
        self.coef = None
        self.model = None
        if kind in ("loglin", "lin+rf"):
            design = _linear(features)
            ridge = 1e-2 * np.eye(design.shape[1])
            ridge[0, 0] = 0.0
            self.coef = np.linalg.solve(design.T @ design + ridge, design.T @ target)
            target = target - design @ self.coef
        if kind in ("rf", "lin+rf"):
            self.model = RandomForestRegressor(n_estimators=60, min_samples_leaf=1, max_features=0.7, random_state=0, n_jobs=1)
        elif kind == "hgb":
            self.model = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.1, min_samples_leaf=4, random_state=0)
        if self.model is not None:
            self.model.fit(x, target)

    def predict(self, features: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Seconds, one per feature row."""
        out = np.zeros(len(features))
        if self.coef is not None:
            out += _linear(features) @ self.coef
        if self.model is not None:
            out += self.model.predict(_matrix(features))
        return np.exp(np.clip(out, *self.range))


def relative_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return (np.asarray(predicted) - np.asarray(measured)) / np.asarray(measured)


def holdout_split(n: int, fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of n samples (a fixed permutation)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(fraction * n)))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def choose_kind(features: Sequence[Mapping[str, float]], seconds: Sequence[float]) -> tuple[str, float]:
    """The kind with the smallest held-out RMSPE on this class's samples, and that error."""
    n = len(seconds)
    if n < MIN_LEARNED:
        return "loglin", math.nan
    train, test = holdout_split(n)
    y = np.asarray(seconds, np.float64)
    best, best_error = "loglin", math.inf
    for kind in KINDS:
        model = Fitted(kind, [features[i] for i in train], y[train])
        error = float(np.sqrt(np.mean(relative_errors(model.predict([features[i] for i in test]), y[test]) ** 2)))
        if error < best_error:
            best, best_error = kind, error
    return best, best_error


@dataclass(frozen=True)
class ClassSamples:
    """A class's samples as the predictors need them."""

    features: tuple[Mapping[str, float], ...]
    seconds: tuple[float, ...]


class KernelPredictor:
    """Per-class predictors of one device, fitted on first use from its samples; an op whose class
    has no samples is predicted from all samples of its op type, else not at all (None)."""

    def __init__(self, samples: Mapping[str, ClassSamples], kinds: Mapping[str, str] | None = None) -> None:
        self.samples = dict(samples)
        self.kinds = dict(kinds or {})
        self._fitted: dict[str, Fitted | None] = {}

    def classes(self) -> list[str]:
        return sorted(self.samples)

    def fitted(self, kernel_class: str) -> Fitted | None:
        if kernel_class not in self._fitted:
            self._fitted[kernel_class] = self._fit(kernel_class)
        return self._fitted[kernel_class]

    def _fit(self, kernel_class: str) -> Fitted | None:
        found = self.samples.get(kernel_class)
        if found is None:  # pooled over the op type's classes
            op_type = op_type_of(kernel_class)
            pooled = [s for c, s in self.samples.items() if op_type_of(c) == op_type and not c.startswith("layout/")]
            if not pooled:  # an op type never sampled: a coarse size law over every sample (FLOPs, bytes)
                log.info("kernel class %s: no samples of %s, predicted from all samples by size", kernel_class, op_type)
                found = ClassSamples(tuple(f for s in self.samples.values() for f in s.features),
                                     tuple(t for s in self.samples.values() for t in s.seconds))
                return Fitted("loglin", found.features, found.seconds) if found.seconds else None
            found = ClassSamples(tuple(f for s in pooled for f in s.features), tuple(t for s in pooled for t in s.seconds))
        if len(found.seconds) < 2:
            return Fitted("loglin", list(found.features) * 2, list(found.seconds) * 2)
        kind = self.kinds.get(kernel_class) or choose_kind(found.features, found.seconds)[0]
        return Fitted(kind, found.features, found.seconds)

    def predict(self, kernel_class: str, features: Mapping[str, float]) -> float | None:
        model = self.fitted(kernel_class)
        return None if model is None else float(model.predict([features])[0])

    def covers(self, kernel_class: str) -> bool:
        return self.fitted(kernel_class) is not None
