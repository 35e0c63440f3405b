"""Gantt charts of schedules and simulation plots (PNG, SVG or PDF by the file's suffix, matplotlib's
Agg backend, written atomically).

A Gantt chart has one row per device that runs something (its compute slots, coloured per
device; idle devices are named in the title) and one row per link that carries transfers (grey,
labelled with their bytes); time reads in s, ms or µs by the makespan, and a label is drawn only
inside its bar, shortened with '…' when only that fits. matplotlib is imported only here, so the
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
IMAGE_FORMATS = ("png", "svg", "pdf")
TIME_UNITS = (("s", 1.0, 10.0), ("ms", 1e3, 1e-5), ("µs", 1e6, 0.0))  # (name, per second, from this span up)


def time_unit(span_s: float) -> tuple[str, float]:
    """The unit a time axis of this span reads best in: s from 10 s, ms from 10 µs, else µs."""
    for name, scale, least_s in TIME_UNITS:
        if span_s >= least_s:
            return name, scale
    return TIME_UNITS[-1][0], TIME_UNITS[-1][1]


def _nbytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"


def _fit_label(axes, renderer, text: str, left: float, width: float, row: float) -> None:
    """Write text centred on a bar when it fits inside it, shortened with '…' when only that fits."""
    if width <= 0:
        return
    (x0, _), (x1, _) = axes.transData.transform([(left, row), (left + width, row)])
    room = abs(x1 - x0) - 8.0  # pixels, with a little padding
    candidates = [text] + [text[:keep] + "…" for keep in range(len(text) - 1, 2, -1)]
    label = axes.text(left + width / 2, row, "", ha="center", va="center", fontsize=7)
    for candidate in candidates:
        label.set_text(candidate)
        if label.get_window_extent(renderer).width <= room:
            return
    label.remove()


def _gantt_figure(figure_class, schedule: Schedule, title: str | None):
    """Draw the chart: one row per device that runs something, one per link that carries transfers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    busy = {slot.device for slot in schedule.slots}
    devices = [d for d in schedule.devices if d in busy]
    idle = [d for d in schedule.devices if d not in busy]
    links = sorted({(t.src_device, t.dst_device) for t in schedule.transfers})
    rows = devices + [f"{a} → {b}" for a, b in links]
    figure = figure_class(figsize=(11, 1.5 + 0.5 * len(rows)), dpi=110)
    canvas = FigureCanvasAgg(figure)  # a renderer to measure labels with
    axes = figure.add_subplot(1, 1, 1)
    colour = {d: f"C{i % 10}" for i, d in enumerate(schedule.devices)}
    span_s = max(schedule.makespan_s, 1e-12)
    unit, scale = time_unit(span_s)
    for slot in schedule.slots:
        row = devices.index(slot.device)
        axes.barh(row, (slot.end_s - slot.start_s) * scale, left=slot.start_s * scale, height=0.7,
                  color=colour[slot.device], edgecolor="black", linewidth=0.4)
    for transfer in schedule.transfers:
        row = len(devices) + links.index((transfer.src_device, transfer.dst_device))
        axes.barh(row, (transfer.end_s - transfer.start_s) * scale, left=transfer.start_s * scale, height=0.5,
                  color="0.75", edgecolor="0.3", linewidth=0.3)
    axes.set_yticks(range(len(rows)), rows, fontsize=9)
    axes.set_ylim(len(rows) - 0.5, -0.5)
    axes.set_xlim(0, span_s * scale * 1.02)
    axes.set_xlabel(f"time ({unit})")
    axes.grid(axis="x", linestyle=":", linewidth=0.5)
    summary = f"{schedule.algorithm}: makespan {schedule.makespan_s * scale:.4g} {unit}"
    if schedule.period_s is not None:
        summary += f", period {schedule.period_s * scale:.4g} {unit} ({schedule.objective})"
    if idle:
        summary += f"; idle: {', '.join(idle)}"
    axes.set_title(f"{title}\n{summary}" if title else summary, fontsize=10)
    figure.tight_layout()
    if len(schedule.slots) + len(schedule.transfers) <= MAX_LABELS:
        renderer = canvas.get_renderer()
        for slot in schedule.slots:
            _fit_label(axes, renderer, slot.node, slot.start_s * scale, (slot.end_s - slot.start_s) * scale,
                       devices.index(slot.device))
        for transfer in schedule.transfers:
            row = len(devices) + links.index((transfer.src_device, transfer.dst_device))
            _fit_label(axes, renderer, _nbytes(transfer.nbytes), transfer.start_s * scale,
                       (transfer.end_s - transfer.start_s) * scale, row)
    return figure


def gantt_png(schedule: Schedule, title: str | None = None, format: str = "png") -> bytes:
    """A Gantt chart of the schedule as image bytes (PNG unless ``format`` says svg or pdf)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError(f"--gantt needs matplotlib ({err}); pip install matplotlib") from None
    figure = _gantt_figure(Figure, schedule, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format)
    return buffer.getvalue()


def image_format(path: str | os.PathLike[str], option: str = "--plot") -> str:
    """The image format a file name's suffix asks for (png, svg or pdf); other suffixes are refused."""
    suffix = os.path.splitext(str(path))[1].lower().lstrip(".")
    if suffix not in IMAGE_FORMATS:
        named = f"'.{suffix}'" if suffix else "no suffix"
        raise InputError(f"{option} {path}: {named} is not an image format hetero writes; end the name in "
                         f"{', '.join('.' + f for f in IMAGE_FORMATS)}")
    return suffix


def gantt_image(path: str | os.PathLike[str], schedule: Schedule, title: str | None = None) -> bytes:
    """The Gantt chart in the format path's suffix names."""
    return gantt_png(schedule, title, format=image_format(path, "--gantt"))


def write_gantt(path: str | os.PathLike[str], schedule: Schedule, title: str | None = None) -> None:
    """Write the Gantt chart atomically, in the format its suffix names."""
    write_atomic(path, gantt_image(path, schedule, title), "--gantt")


MAX_POINTS = 20000
EVENT_COLOURS = {"slowdown": "tab:orange", "load": "tab:olive", "bandwidth": "tab:purple", "fail": "tab:red",
                 "recover": "tab:green"}


def simulation_png(result: "SimResult", title: str | None = None, format: str = "png") -> bytes:
    """Latency over time (events shaded, plan changes dashed) above utilisation per device, as image
    bytes (PNG unless ``format`` says svg or pdf)."""
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
                              xytext=(2, -3), textcoords="offset points", fontsize=7, rotation=90, va="top", ha="left",
                              color=colour)
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
    figure.savefig(buffer, format=format)
    return buffer.getvalue()


def simulation_image(path: str | os.PathLike[str], result: "SimResult", title: str | None = None) -> bytes:
    """The simulation plot in the format path's suffix names."""
    return simulation_png(result, title, format=image_format(path, "--plot"))


def write_simulation_plot(path: str | os.PathLike[str], result: "SimResult", title: str | None = None) -> None:
    """Write the simulation plot atomically, in the format its suffix names."""
    write_atomic(path, simulation_image(path, result, title), "--plot")
