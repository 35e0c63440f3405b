"""How well the cost model predicts op times it never saw: held-out signatures or another profile."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr

from hetero.cost.model import fit_regressions
from hetero.errors import ProfileError
from hetero.cost.profile import OpStats, Profile


def is_synthetic(stats: OpStats) -> bool:
    """Whether an entry is a sweep variant (``hetero profile --sweep``), not an op of the model."""
    return bool(stats.features.get("synthetic", 0.0))


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within +-10% / +-20%, RMSPE and Spearman rank correlation of predictions."""
    p = np.asarray(predicted, np.float64)
    m = np.asarray(measured, np.float64)
    if p.size == 0:
        return {"within_10pct": math.nan, "within_20pct": math.nan, "rmspe": math.nan, "spearman": math.nan, "n": 0}
    relative = (p - m) / m
    rho = float(spearmanr(p, m).statistic) if p.size > 2 else math.nan
    return {
        "within_10pct": float(np.mean(np.abs(relative) <= 0.10)),
        "within_20pct": float(np.mean(np.abs(relative) <= 0.20)),
        "rmspe": float(np.sqrt(np.mean(relative**2))),
        "spearman": rho,
        "n": int(p.size),
    }


def _predict(train: Mapping[str, OpStats], test: Mapping[str, OpStats]) -> tuple[list[float], list[float], list[dict[str, Any]], int]:
    regressions = fit_regressions(train)
    predicted, measured, rows, skipped = [], [], [], 0
    for signature, stats in test.items():
        model = regressions.get(stats.op_type, stats.features)
        if model is None or stats.expected_s <= 0:
            skipped += 1
            continue
        guess = model.predict(stats.features)
        predicted.append(guess)
        measured.append(stats.expected_s)
        rows.append({"signature": signature, "op_type": stats.op_type, "predicted_s": guess, "measured_s": stats.expected_s, "model": model.kind})
    return predicted, measured, rows, skipped


def _report(per_device: dict[str, tuple[list[float], list[float], list[dict[str, Any]], int]]) -> dict[str, Any]:
    all_p = [x for p, _, _, _ in per_device.values() for x in p]
    all_m = [x for _, m, _, _ in per_device.values() for x in m]
    report: dict[str, Any] = error_metrics(all_p, all_m)
    report["unpredictable"] = sum(s for _, _, _, s in per_device.values())
    report["devices"] = {
        name: {**error_metrics(p, m), "unpredictable": s, "rows": rows} for name, (p, m, rows, s) in per_device.items()
    }
    return report


def evaluate_holdout(profile: Profile, fraction: float = 0.3, seed: int = 0, devices: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit on (1 - fraction) of each device's real signatures plus every synthetic one, predict
    the held-out real ones by regression alone."""
    if not 0 < fraction < 1:
        raise ProfileError(f"--holdout must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    per_device = {}
    for name in devices or list(profile.devices):
        ops = profile.devices[name].ops
        signatures = sorted(s for s, st in ops.items() if not is_synthetic(st))
        rng.shuffle(signatures)
        n_test = max(1, int(round(fraction * len(signatures)))) if signatures else 0
        test = {s: ops[s] for s in signatures[:n_test]}
        train = {s: st for s, st in ops.items() if s not in test}
        per_device[name] = _predict(train, test)
    return _report(per_device)


def evaluate_against(profile: Profile, other: Profile, devices: Sequence[str] | None = None) -> dict[str, Any]:
    """Predict every real (non-synthetic) entry of ``other`` (same device names) from ``profile``
    alone; shared signatures excluded."""
    names = [n for n in (devices or list(other.devices)) if n in profile.devices]
    if not names:
        raise ProfileError(f"the profiles share no device (have {sorted(profile.devices)} and {sorted(other.devices)})")
    per_device = {}
    for name in names:
        known = profile.devices[name].ops
        unseen = {s: st for s, st in other.devices[name].ops.items() if s not in known and not is_synthetic(st)}
        per_device[name] = _predict(known, unseen)
    return _report(per_device)
