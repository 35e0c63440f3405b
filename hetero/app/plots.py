"""Gantt charts of schedules and simulation plots (PNG, SVG or PDF by the file's suffix, matplotlib's
Agg backend, written atomically).

A Gantt chart has one row per device that runs something (its compute slots, coloured per
device; idle devices are named in the title) and one row per link that carries transfers (grey,
labelled with their bytes); time reads in s, ms or µs by the makespan, and a label is drawn only
inside its bar, shortened with '…' when only that fits. Past ``MAX_LABELS`` slots the chart groups
them by partition (runs of consecutive nodes on one device): one outlined bar each, labelled with
its op count and first and last op.

The simulation plot: latency over time (log scale when the tail spans more than two decades),
utilisation and, when the devices have power figures, power over time, one colour per device in
every panel with a legend; event labels sit in a strip above the latency panel, never clipped.
matplotlib is imported only here, so the rest of hetero works without it.
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
LOG_SPAN = 100.0  # latency axes turn logarithmic when max / min latency exceeds this
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


def device_colours(devices) -> dict[str, str]:
    """One colour per device, the same in every panel (never the black and grey of the latency lines)."""
    return {d: f"C{i % 10}" for i, d in enumerate(devices)}


def latency_scale(latency_s) -> str:
    """'log' when the positive latencies span more than LOG_SPAN (max / min), else 'linear'."""
    import numpy as np

    values = np.asarray(latency_s, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) < 2:
        return "linear"
    return "log" if values.max() / values.min() > LOG_SPAN else "linear"


def partition_runs(schedule: Schedule) -> list[tuple[str, list]]:
    """Runs of consecutive slots (in the schedule's node order, topological) on one device."""
    runs: list[tuple[str, list]] = []
    for slot in schedule.slots:
        if runs and runs[-1][0] == slot.device:
            runs[-1][1].append(slot)
        else:
            runs.append((slot.device, [slot]))
    return runs


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
    colour = device_colours(schedule.devices)
    span_s = max(schedule.makespan_s, 1e-12)
    unit, scale = time_unit(span_s)
    grouped = len(schedule.slots) > MAX_LABELS
    for slot in schedule.slots:
        row = devices.index(slot.device)
        axes.barh(row, (slot.end_s - slot.start_s) * scale, left=slot.start_s * scale, height=0.7,
                  color=colour[slot.device], edgecolor="none" if grouped else "black", linewidth=0.4)
    runs = partition_runs(schedule) if grouped else []
    for device, slots in runs:
        start, end = min(s.start_s for s in slots), max(s.end_s for s in slots)
        axes.barh(devices.index(device), (end - start) * scale, left=start * scale, height=0.82, fill=False,
                  edgecolor="black", linewidth=0.8)
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
    if grouped:
        summary += f"; {len(schedule.slots)} ops in {len(runs)} partitions"
    axes.set_title(f"{title}\n{summary}" if title else summary, fontsize=10)
    figure.tight_layout()
    if grouped:
        renderer = canvas.get_renderer()
        for device, slots in runs:
            start, end = min(s.start_s for s in slots), max(s.end_s for s in slots)
            text = f"{len(slots)} ops: {slots[0].node} … {slots[-1].node}" if len(slots) > 1 else slots[0].node
            _fit_label(axes, renderer, text, start * scale, (end - start) * scale, devices.index(device))
    elif len(schedule.slots) + len(schedule.transfers) <= MAX_LABELS:
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
                 "recover": "tab:green", "objective": "tab:brown"}


def simulation_png(result: "SimResult", title: str | None = None, format: str = "png") -> bytes:
    """Latency over time (events shaded, plan changes dashed) above utilisation and power per device,
    as image bytes (PNG unless ``format`` says svg or pdf)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.figure import Figure
    except ImportError as err:
        raise InputError(f"--plot needs matplotlib ({err}); pip install matplotlib") from None
    figure = _simulation_figure(Figure, result, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=format)
    return buffer.getvalue()


def _simulation_figure(figure_class, result: "SimResult", title: str | None):
    import numpy as np

    powered = [d for d in result.devices if d in result.power_W]
    panels = 3 if powered else 2
    figure = figure_class(figsize=(11, 8.5 if powered else 7), dpi=110)
    ratios = [3, 2, 2][:panels]
    axes_list = figure.subplots(panels, 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    latency_axes, busy_axes = axes_list[0], axes_list[1]
    colours = device_colours(result.devices)
    done = result.request_arrival_s + result.request_latency_s
    step = max(1, len(done) // MAX_POINTS)
    latency_axes.scatter(done[::step], result.request_latency_s[::step] * 1e3, s=3, alpha=0.3, color="0.55",
                         label="request" if step == 1 else f"every {step}th request")
    times = np.array([row["t_s"] for row in result.timeline])
    for key, colour, style in (("p50_s", "black", "-"), ("p95_s", "0.35", "--")):
        values = np.array([np.nan if row[key] is None else row[key] * 1e3 for row in result.timeline])
        latency_axes.plot(times, values, color=colour, linestyle=style, linewidth=1.2, drawstyle="steps-post", label=key[:3])
    scale = latency_scale(result.request_latency_s)
    latency_axes.set_yscale(scale)
    for event in result.events:
        end = result.end_s if event.get("duration_s") is None else event["at_s"] + event["duration_s"]
        colour = EVENT_COLOURS.get(event["kind"], "0.5")
        for axes in axes_list:
            if event["kind"] in ("recover", "objective"):
                axes.axvline(event["at_s"], color=colour, linewidth=1.0)
            else:
                axes.axvspan(event["at_s"], min(end, result.end_s), color=colour, alpha=0.12)
    for plan in result.plans[1:]:
        for axes in axes_list:
            axes.axvline(plan["at_s"], color="black", linestyle="--", linewidth=0.6, alpha=0.5)
    latency_axes.set_ylabel("latency (ms, log scale)" if scale == "log" else "latency (ms)")
    latency_axes.grid(linestyle=":", linewidth=0.5, which="both" if scale == "log" else "major")
    latency_axes.legend(loc="upper right", fontsize=8)
    for device in result.devices:
        busy_axes.plot(times, [row["utilisation"][device] * 100 for row in result.timeline], drawstyle="steps-post",
                       linewidth=1.2, color=colours[device], label=device)
    busy_axes.set_ylabel("utilisation (%)")
    busy_axes.set_ylim(0, 105)
    busy_axes.grid(linestyle=":", linewidth=0.5)
    busy_axes.legend(loc="upper right", fontsize=8, ncol=min(4, len(result.devices)))
    last = axes_list[-1]
    if powered:
        power_axes = axes_list[2]
        for device in powered:
            watts = result.power_W[device]
            series = [watts["idle"] + (watts["busy"] - watts["idle"]) * row["utilisation"][device] for row in result.timeline]
            power_axes.plot(times, series, drawstyle="steps-post", linewidth=1.2, color=colours[device], label=device)
        power_axes.set_ylabel("power (W)")
        power_axes.set_ylim(bottom=0)
        power_axes.grid(linestyle=":", linewidth=0.5)
        power_axes.legend(loc="upper right", fontsize=8, ncol=min(4, len(powered)))
    last.set_xlim(0, result.end_s)
    last.set_xlabel("simulated seconds")
    summary = (f"{result.scenario}: {result.policy}, p50 {result.latency_s['p50'] * 1e3:.3g} ms, "
               f"{result.throughput_per_s:.4g} req/s, {result.rebalances} rebalances")
    if result.energy_per_request_J is not None:
        summary += f", {result.energy_per_request_J:.3g} J per request"
    labels = _event_labels(result)
    figure.suptitle(f"{title} — {summary}" if title else summary, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.03 * (1 + _label_rows(labels))))
    _draw_event_labels(latency_axes, labels)
    return figure


def _event_labels(result: "SimResult") -> list[tuple[float, str, str]]:
    """(time, text, colour) of each scripted event."""
    labels = []
    for event in result.events:
        what = event.get("device") or " - ".join(event.get("link", [])) or event.get("objective") or ""
        labels.append((float(event["at_s"]), f"{event['kind']} {what}".strip(), EVENT_COLOURS.get(event["kind"], "0.5")))
    return labels


def _label_rows(labels: list[tuple[float, str, str]]) -> int:
    return min(len(labels), 3)


def _draw_event_labels(axes, labels: list[tuple[float, str, str]]) -> None:
    """Event labels in rows above the axes (cycling over three rows), anchored at their time: left-aligned,
    or right-aligned in the right quarter, so none runs off the figure."""
    if not labels:
        return
    low, high = axes.get_xlim()
    for i, (at_s, text, colour) in enumerate(sorted(labels)):
        right = (at_s - low) > 0.75 * (high - low)
        axes.annotate(text, (at_s, 1.0), xycoords=("data", "axes fraction"), xytext=(0, 3 + 10 * (i % 3)),
                      textcoords="offset points", fontsize=7, ha="right" if right else "left", va="bottom",
                      color=colour, annotation_clip=False)


def simulation_image(path: str | os.PathLike[str], result: "SimResult", title: str | None = None) -> bytes:
    """The simulation plot in the format path's suffix names."""
    return simulation_png(result, title, format=image_format(path, "--plot"))


def write_simulation_plot(path: str | os.PathLike[str], result: "SimResult", title: str | None = None) -> None:
    """Write the simulation plot atomically, in the format its suffix names."""
    write_atomic(path, simulation_image(path, result, title), "--plot")
