"""The Pareto front of a sweep's results: points no other point beats on both axes.

Rows of the same point (one per seed) are averaged first; rows with an error or an empty
value on either axis are left out (and counted). ``cost`` on an axis means ``cost_usd`` (the
devices' catalog prices) where the results have it, else ``energy_per_request_J``. Throughput
and completed requests are maximised, every other metric minimised.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from hetero.sweep.results import ENERGY, KEY_COLUMNS, METRICS
from hetero.sweep.spec import SweepError

MAXIMISED = ("throughput_per_s", "completed")
AXIS_COLUMNS = ("cost_usd", *METRICS, ENERGY)


@dataclass(frozen=True)
class PointSummary:
    """One point of the results: its swept values and the mean of each axis over its seeds."""

    point: int
    values: tuple[tuple[str, str], ...]
    x: float
    y: float
    seeds: int

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values)


@dataclass(frozen=True)
class Front:
    x: str
    y: str
    points: tuple[PointSummary, ...]
    front: tuple[PointSummary, ...]
    left_out: int


def resolve_axis(name: str, rows: Sequence[Mapping[str, str]]) -> str:
    """The column an axis name means (``cost``: cost_usd where known, else energy)."""
    columns = set(rows[0]) if rows else set()
    if name == "cost":
        for column in ("cost_usd", ENERGY):
            if column in columns and any(r.get(column) for r in rows):
                return column
        raise SweepError("--x/--y cost: the results have no cost_usd (the devices' catalog specs give no price_usd) "
                         f"and no {ENERGY}; name another column ({', '.join(c for c in AXIS_COLUMNS if c in columns)})")
    if name not in columns or name in KEY_COLUMNS or name == "error":
        known = ", ".join(["cost", *(c for c in AXIS_COLUMNS if c in columns)])
        raise SweepError(f"'{name}' is not a metric column of the results (known: {known})")
    return name


def select_rows(rows: Sequence[Mapping[str, str]], conditions: Sequence[str]) -> list[Mapping[str, str]]:
    """The rows where every ``COLUMN=VALUE`` holds (values compared as written in the CSV)."""
    selected = list(rows)
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep:
            raise SweepError(f"--where {condition}: write COLUMN=VALUE, e.g. workload.rate=400/s")
        if rows and column not in rows[0]:
            raise SweepError(f"--where {condition}: the results have no column '{column}' (columns: {', '.join(rows[0])})")
        selected = [r for r in selected if r.get(column) == value]
        if not selected:
            values = sorted({r.get(column, "") for r in rows})
            raise SweepError(f"--where {condition}: no row has {column}={value} (values: {', '.join(values[:20])})")
    return selected


def pareto_front(rows: Sequence[Mapping[str, str]], x: str, y: str) -> Front:
    """Average each point's rows over seeds, then keep the points no other point dominates."""
    x_column, y_column = resolve_axis(x, rows), resolve_axis(y, rows)
    axes = [c for c in rows[0] if c not in (*KEY_COLUMNS, *AXIS_COLUMNS, "error")] if rows else []
    grouped: dict[tuple[str, str], list[Mapping[str, str]]] = {}
    left_out = 0
    for row in rows:
        if row.get("error") or not row.get(x_column) or not row.get(y_column):
            left_out += 1
            continue
        grouped.setdefault((row["point"], row["scenario_hash"]), []).append(row)
    points = []
    for (point, _), group in grouped.items():
        xs = [float(r[x_column]) for r in group]
        ys = [float(r[y_column]) for r in group]
        points.append(PointSummary(int(point), tuple((a, group[0][a]) for a in axes), math.fsum(xs) / len(xs),
                                   math.fsum(ys) / len(ys), len(group)))
    if not points:
        raise SweepError(f"no row has both {x_column} and {y_column} without an error ({left_out} rows left out)")
    sign_x = -1.0 if x_column in MAXIMISED else 1.0
    sign_y = -1.0 if y_column in MAXIMISED else 1.0

    def dominates(a: PointSummary, b: PointSummary) -> bool:
        ax, ay, bx, by = sign_x * a.x, sign_y * a.y, sign_x * b.x, sign_y * b.y
        return ax <= bx and ay <= by and (ax < bx or ay < by)

    front = [p for p in points if not any(dominates(q, p) for q in points)]
    front.sort(key=lambda p: (sign_x * p.x, sign_y * p.y))
    return Front(x_column, y_column, tuple(sorted(points, key=lambda p: p.point)), tuple(front), left_out)


def front_image(front: Front, format: str = "png", title: str | None = None) -> bytes:
    """A scatter of every point with the front marked and joined, as PNG, SVG or PDF bytes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    others = [p for p in front.points if p not in front.front]
    axes.scatter([p.x for p in others], [p.y for p in others], s=18, color="0.6", label="points")
    axes.plot([p.x for p in front.front], [p.y for p in front.front], "-o", color="tab:red", markersize=6,
              drawstyle="steps-post", label="Pareto front")
    for p in front.front:
        axes.annotate(str(p.point), (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ys = [p.y for p in front.points]
    if min(ys) > 0 and max(ys) / min(ys) > 50:
        axes.set_yscale("log")
    axes.set_xlabel(front.x)
    axes.set_ylabel(front.y + " (mean over seeds)")
    axes.set_title(title or f"{len(front.front)} of {len(front.points)} points on the front", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format, dpi=120)
    return buffer.getvalue()
