"""From a scenario file to RESULT.json, a Perfetto trace and a plot: what ``hetero simulate`` does.

:func:`run_scenario_file` is the command's body; :func:`summary_lines` is what it prints. The
files are written all or none (:class:`~hetero.io.OutputSet`). The trace holds the same
:class:`~hetero.trace.TraceEvent` records a real run produces (one process per device, a lane
per link), plus the scenario's events on an ``events`` lane of the device or link they affect.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Callable

from hetero.io import OutputSet, write_atomic
from hetero.sim.metrics import SimResult
from hetero.trace import TraceEvent, chrome_trace

log = logging.getLogger(__name__)


def run_scenario_file(
    path: str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None = None,
    trace: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    progress: bool = True,
    max_events: int | None = None,
    objective: str | None = None,
) -> SimResult:
    """Load, simulate and write the requested files, all or none; ``progress`` shows a bar on stderr.

    Output paths (and the plot's format) are checked before the simulation starts; a workload
    estimated to need more than ``max_events`` op executions is refused (see
    :func:`hetero.sim.engine.check_size`); ``objective`` overrides the scenario's scheduler objective.
    """
    from hetero.sim import Simulator, build_world, load_scenario

    outputs = OutputSet({"-o": output, "--trace": trace, "--plot": plot})
    if plot is not None:
        from hetero.app.plots import image_format

        image_format(plot, "--plot")
    scenario = load_scenario(path)
    if objective is not None and objective != scenario.objective:
        import dataclasses

        budget = scenario.energy_budget_J if objective == "latency" else None
        scenario = dataclasses.replace(scenario, objective=objective, energy_budget_J=budget)
    world = build_world(scenario)
    with _progress_bar(scenario.duration_s, progress, scenario.name) as update:
        result = Simulator(scenario, world, seed=seed, trace=trace is not None, progress=update,
                           max_events=max_events).run()
    if output is not None:
        outputs.put("-o", result_bytes(result))
    if trace is not None:
        outputs.put("--trace", trace_bytes(result, trace))
    if plot is not None:
        from hetero.app.plots import simulation_image

        outputs.put("--plot", simulation_image(plot, result))
    outputs.commit()
    return result


def result_bytes(result: SimResult) -> bytes:
    """RESULT.json's bytes."""
    return (json.dumps(result.to_dict(), indent=1) + "\n").encode()


def write_result(path: str | os.PathLike[str], result: SimResult) -> None:
    """RESULT.json, atomically."""
    write_atomic(path, result_bytes(result))


def event_markers(result: SimResult) -> list[TraceEvent]:
    """The scenario's events and the plan changes as trace intervals on an ``events`` lane."""
    markers = []
    for event in result.events:
        where = event.get("device") or (event.get("link") or [result.devices[0]])[0]
        duration = event.get("duration_s")
        end = result.end_s if duration is None else min(event["at_s"] + duration, result.end_s)
        details = {k: v for k, v in event.items() if k not in ("kind", "at_s", "duration_s")}
        markers.append(TraceEvent(event["kind"], "event", where, "events", event["at_s"], max(end, event["at_s"]), details))
    for plan in result.plans[1:]:
        markers.append(TraceEvent(f"plan: {plan['why']}", "event", result.devices[0], "events", plan["at_s"], plan["at_s"],
                                  {"ops_per_device": plan["ops_per_device"]}))
    return markers


def trace_bytes(result: SimResult, path: str | os.PathLike[str] = "trace") -> bytes:
    """The simulated run as a Chrome/Perfetto trace's bytes (``path`` names it in a warning)."""
    if result.trace_dropped:
        last = max((e.end_s for e in result.trace), default=0.0)
        log.warning("%s: the trace keeps the first %d events (to %.6g s of %.6g s); %d later ones are left out",
                    path, len(result.trace), last, result.end_s, result.trace_dropped)
    events = list(result.trace) + event_markers(result)
    label = f"hetero simulate {result.scenario} (seed {result.seed})"
    return json.dumps(chrome_trace(events, result.devices, label=label)).encode()


def write_trace(path: str | os.PathLike[str], result: SimResult) -> None:
    """The simulated run as a Chrome/Perfetto trace, atomically."""
    write_atomic(path, trace_bytes(result, path))


def summary_lines(result: SimResult) -> list[str]:
    """A short human summary of a result."""
    latency = result.latency_s
    requests = result.requests

    def ms(seconds: float) -> str:
        return "n/a" if seconds != seconds else f"{seconds * 1e3:.3f} ms"

    lines = [
        f"scenario {result.scenario}: policy {result.policy}, seed {result.seed}, {result.end_s:.6g} s simulated"
        f" (requests served over {result.served_s:.6g} s)",
        f"requests: {requests['completed']} completed of {requests['arrived']}, {requests['failed']} failed, "
        f"{requests['lost']} lost, {requests['retried']} retried",
        f"latency: p50 {ms(latency['p50'])}, p95 {ms(latency['p95'])}, p99 {ms(latency['p99'])} "
        f"(predicted makespan {ms(result.predicted_makespan_s)})",
        f"throughput: {result.throughput_per_s:.6g} requests/s; rebalances: {result.rebalances} "
        f"({result.migrated_bytes} bytes of weights moved)",
        "utilisation: " + ", ".join(f"{d} {u:.1%}" for d, u in result.utilisation.items()),
        "bytes moved: " + (", ".join(f"{link} {n}" for link, n in result.bytes_per_link.items() if n) or "none"),
    ]
    if result.energy_J is not None:
        energy = result.energy_J
        per_request = result.energy_per_request_J
        parts = [f"{name} {joules:.4g} J" for name, joules in energy["devices"].items()]
        parts += [f"{link} {joules:.4g} J" for link, joules in energy["links"].items() if joules]
        lines.append(f"energy: {energy['total']:.4g} J" + (f", {per_request:.4g} J per request" if per_request is not None else "")
                     + (f" ({', '.join(parts)})" if parts else ""))
        if energy["without_power"]:
            lines.append(f"energy: no power figures for {', '.join(energy['without_power'])} (counted as 0 W)")
    lines += [f"error: {error}" for error in result.errors]
    return lines


class _progress_bar:
    """A rich progress bar over simulated time (a no-op when disabled)."""

    def __init__(self, total_s: float, enabled: bool, label: str) -> None:
        self.total_s, self.enabled, self.label = total_s, enabled, label
        self.bar = None

    def __enter__(self) -> Callable[[float], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[now]}"),
                            TimeElapsedColumn(), transient=True, console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task(f"simulating {self.label}", total=self.total_s, now="")

        def update(now_s: float) -> None:
            self.bar.update(task, completed=min(now_s, self.total_s), now=f"{now_s:.3g} s")

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
