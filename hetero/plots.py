"""Gantt charts of schedules and simulation plots (PNG, matplotlib's Agg backend, written atomically).

One row per device (its compute slots, coloured per device) and one row per link that carries
transfers (grey); slot labels are drawn when they fit. matplotlib is imported only here, so the
rest of hetero works without it.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from hetero.errors import InputError
from hetero.io import write_atomic
from hetero.schedule import Schedule

if TYPE_CHECKING:
    from hetero.sim.metrics import SimResult

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


MAX_POINTS = 20000
EVENT_COLOURS = {"slowdown": "tab:orange", "load": "tab:olive", "bandwidth": "tab:purple", "fail": "tab:red",
                 "recover": "tab:green"}


def simulation_png(result: "SimResult", title: str | None = None) -> bytes:
    """Latency over time (events shaded, plan changes dashed) above utilisation per device, as PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError(f"--plot needs matplotlib ({err}); pip install matplotlib") from None
    import numpy as np

    figure = Figure(figsize=(11, 7), dpi=110)
    latency_axes, busy_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    done = result.request_arrival_s + result.request_latency_s
    step = max(1, len(done) // MAX_POINTS)
    latency_axes.scatter(done[::step], result.request_latency_s[::step] * 1e3, s=3, alpha=0.3, color="0.4",
                         label="request" if step == 1 else f"every {step}th request")
    times = np.array([row["t_s"] for row in result.timeline])
    for key, colour in (("p50_s", "tab:blue"), ("p95_s", "tab:red")):
        values = np.array([np.nan if row[key] is None else row[key] * 1e3 for row in result.timeline])
        latency_axes.plot(times, values, color=colour, linewidth=1.2, drawstyle="steps-post", label=key[:3])
    for event in result.events:
        end = result.end_s if event.get("duration_s") is None else event["at_s"] + event["duration_s"]
        what = event.get("device") or " - ".join(event.get("link", []))
        colour = EVENT_COLOURS.get(event["kind"], "0.5")
        for axes in (latency_axes, busy_axes):
            if event["kind"] == "recover":
                axes.axvline(event["at_s"], color=colour, linewidth=1.0)
            else:
                axes.axvspan(event["at_s"], end, color=colour, alpha=0.12)
        latency_axes.annotate(f"{event['kind']} {what}", (event["at_s"], 1.0), xycoords=("data", "axes fraction"),
                              fontsize=7, rotation=90, va="top", ha="right", color=colour)
    for plan in result.plans[1:]:
        latency_axes.axvline(plan["at_s"], color="black", linestyle="--", linewidth=0.6, alpha=0.6)
    latency_axes.set_ylabel("latency (ms)")
    latency_axes.grid(linestyle=":", linewidth=0.5)
    latency_axes.legend(loc="upper right", fontsize=8)
    for device in result.devices:
        busy_axes.plot(times, [row["utilisation"][device] * 100 for row in result.timeline], drawstyle="steps-post",
                       linewidth=1.2, label=device)
    busy_axes.set_ylabel("utilisation (%)")
    busy_axes.set_ylim(0, 105)
    busy_axes.set_xlim(0, result.end_s)
    busy_axes.set_xlabel("simulated seconds")
    busy_axes.grid(linestyle=":", linewidth=0.5)
    busy_axes.legend(loc="upper right", fontsize=8, ncol=min(4, len(result.devices)))
    summary = (f"{result.scenario}: {result.policy}, p50 {result.latency_s['p50'] * 1e3:.3g} ms, "
               f"{result.throughput_per_s:.4g} req/s, {result.rebalances} rebalances")
    latency_axes.set_title(f"{title} — {summary}" if title else summary, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_simulation_plot(path: str | os.PathLike[str], result: "SimResult", title: str | None = None) -> None:
    """Write the simulation plot PNG atomically."""
    write_atomic(path, simulation_png(result, title))
