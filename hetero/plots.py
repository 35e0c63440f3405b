"""Gantt charts of schedules (PNG, matplotlib's Agg backend, written atomically).

One row per device (its compute slots, coloured per device) and one row per link that carries
transfers (grey); slot labels are drawn when they fit. matplotlib is imported only here, so the
rest of hetero works without it.
"""

from __future__ import annotations

import io
import os

from hetero.errors import InputError
from hetero.io import write_atomic
from hetero.schedule import Schedule

MAX_LABELS = 80


def gantt_png(schedule: Schedule, title: str | None = None) -> bytes:
    """A Gantt chart of the schedule as PNG bytes."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError(f"--gantt needs matplotlib ({err}); pip install matplotlib") from None
    devices = list(schedule.devices)
    links = sorted({(t.src_device, t.dst_device) for t in schedule.transfers})
    rows = [f"{d}" for d in devices] + [f"{a} → {b}" for a, b in links]
    figure = Figure(figsize=(11, 1.0 + 0.45 * len(rows)), dpi=110)
    axes = figure.add_subplot(1, 1, 1)
    palette = [f"C{i % 10}" for i in range(len(devices))]
    span = max(schedule.makespan_s, 1e-12)
    label_slots = len(schedule.slots) <= MAX_LABELS
    for slot in schedule.slots:
        row = devices.index(slot.device)
        width = slot.end_s - slot.start_s
        axes.barh(row, width, left=slot.start_s, height=0.7, color=palette[row], edgecolor="black", linewidth=0.4)
        if label_slots and width > 0.04 * span:
            axes.text(slot.start_s + width / 2, row, slot.node, ha="center", va="center", fontsize=7, clip_on=True)
    for transfer in schedule.transfers:
        row = len(devices) + links.index((transfer.src_device, transfer.dst_device))
        width = transfer.end_s - transfer.start_s
        axes.barh(row, width, left=transfer.start_s, height=0.5, color="0.7", edgecolor="0.3", linewidth=0.3)
    axes.set_yticks(range(len(rows)), rows)
    axes.invert_yaxis()
    axes.set_xlim(0, span * 1.02)
    axes.set_xlabel("seconds")
    axes.grid(axis="x", linestyle=":", linewidth=0.5)
    summary = f"{schedule.algorithm}: makespan {schedule.makespan_s:.6g} s"
    if schedule.period_s is not None:
        summary += f", period {schedule.period_s:.6g} s"
    axes.set_title(f"{title} — {summary}" if title else summary, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_gantt(path: str | os.PathLike[str], schedule: Schedule, title: str | None = None) -> None:
    """Write the Gantt chart PNG atomically."""
    write_atomic(path, gantt_png(schedule, title))
