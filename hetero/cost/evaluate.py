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


def _class_report(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall and per-class metrics of rows with kernel_class, predicted_s, measured_s."""
    report: dict[str, Any] = error_metrics([r["predicted_s"] for r in rows], [r["measured_s"] for r in rows])
    classes: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        classes.setdefault(row["kernel_class"], []).append(row)
    report["classes"] = {c: error_metrics([r["predicted_s"] for r in v], [r["measured_s"] for r in v]) for c, v in sorted(classes.items())}
    report["rows"] = list(rows)
    return report


def evaluate_kernels_holdout(kernels: Any, fraction: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """A kernel profile's own held-out samples: per device and class, fit on the rest, predict these."""
    from hetero.cost.kernel_model import Fitted, choose_kind

    if not 0 < fraction < 1:
        raise ProfileError(f"--holdout must be between 0 and 1, got {fraction}")
    devices = {}
    for name, entry in kernels.devices.items():
        rows = []
        for kernel_class, group in entry.by_class().items():
            n = len(group.seconds)
            if n < 4:
                continue
            order = np.random.default_rng(seed).permutation(n)
            test, train = order[: max(1, int(round(fraction * n)))], order[max(1, int(round(fraction * n))):]
            feats = [group.features[i] for i in train]
            secs = [group.seconds[i] for i in train]
            kind = entry.kinds.get(kernel_class) or choose_kind(feats, secs)[0]
            model = Fitted(kind if len(train) >= 12 else "loglin", feats, secs)
            guesses = model.predict([group.features[i] for i in test])
            rows += [{"kernel_class": kernel_class, "predicted_s": float(g), "measured_s": group.seconds[i]} for g, i in zip(guesses, test)]
        devices[name] = _class_report(rows)
    return _kernel_summary(devices)


def evaluate_kernels_against(kernels: Any, other: Profile, graph: Any) -> dict[str, Any]:
    """Predict every real entry of a model profile (``other``, of ``graph``) from a kernel profile
    alone: per op kernel time vs the measured one, per class and overall, and the whole model's
    predicted latency (kernels, layout conversions, the plan's dispatch per op) vs the sum measured."""
    from hetero.cost.kernel_estimate import graph_kernel_cost
    from hetero.cost.speed import probe_key

    names = [n for n in other.devices if n in kernels.devices]
    if not names:
        raise ProfileError(f"the profiles share no device (have {sorted(kernels.devices)} and {sorted(other.devices)})")
    devices = {}
    scaled_rows: list[dict[str, Any]] = []  # every device's rows at its model profile's speed
    for name in names:
        estimate = graph_kernel_cost(graph, name, kernels)
        measured = other.devices[name].ops
        rows, skipped = [], 0
        model_predicted = model_measured = 0.0
        dispatch = kernels.devices[name].plan_dispatch_s
        for op in graph.ops_in_order():
            stats = measured.get(op.signature())
            guess = estimate.kernel_s(op.name) if estimate.covers(op.name) else math.inf
            if stats is None or is_synthetic(stats) or not math.isfinite(guess) or stats.expected_s <= 0:
                skipped += 1
                continue
            model_predicted += estimate.op_s(op.name) + dispatch
            model_measured += stats.expected_s
            rows.append({"node": op.name, "kernel_class": estimate.classes.get(op.name, op.type), "predicted_s": guess,
                         "measured_s": stats.expected_s})
        report = _class_report(rows)
        report.update(unpredictable=skipped, model_predicted_s=model_predicted, model_ops_measured_s=model_measured)
        reference, then = kernels.devices[name].probe_s, other.runtime.get(probe_key(name))
        if reference and then:  # the machine ran at another speed when OTHER was measured
            factor = then / reference
            scaled = [dict(r, predicted_s=r["predicted_s"] * factor) for r in rows]
            scaled_rows.extend(scaled)
            at_speed = _class_report(scaled)
            at_speed.pop("rows")
            report["speed"] = dict(factor=factor, model_predicted_s=model_predicted * factor, **at_speed)
        devices[name] = report
    summary = _kernel_summary(devices)
    if scaled_rows and all("speed" in d for d in devices.values()):
        overall = _class_report(scaled_rows)
        overall.pop("rows")
        summary["speed"] = overall
    return summary


def _kernel_summary(devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = [r for d in devices.values() for r in d["rows"]]
    report = _class_report(rows)
    report.pop("rows")
    report["unpredictable"] = sum(d.get("unpredictable", 0) for d in devices.values())
    report["devices"] = devices
    return report
