"""What the runtime pays for a device on another host beyond its links and its ops' device time.

The profile's host <-> ``HOST/DEVICE`` links are fitted over the bare actor calls
(``RemoteDevice.upload`` and ``download``: one call each, its round trip plus the bytes), so the
network round trip is in the links' latency, and a remote op's entry is its device seconds by the
worker's clock. Inside the runtime two more costs show, measured here per remote device by serving
chains of tiny Identity ops (2 and 8), all on that device, through the real Runtime (the input
crosses from the host once, the output back once, the whole chain runs in the download call),
request by request alongside the bare calls:

* per op: the client queueing the step (buffer handles, their finalizers), its pickling, the worker
  unpacking and running it around its kernel: the slope between the two chains, less the
  Identity's device seconds and the runtime's dispatch (charged per op already). It is added to
  each of the device's op entries (``wall_median_s`` = ``median_s`` + it, the figure kept as
  ``features["remote_op_s"]``), so the cost model charges it once per op.
* per request: the device worker thread's wake-up around its two calls and the Dask client's
  event loop handing each reply back: what the short chain's latency exceeds the bare upload and
  download (and its ops) by, stored as ``handoffs[host][DEVICE]`` (issue 14's entry for what a
  request's start and end on a device add beyond the host links), so the cost model and the
  simulators charge it on top of the links' latency, never inside it.

Issue 14's host calibration (``hetero.cost.links.calibrate_handoffs``) takes the latency minus
the span of the ops' compute events, which for a remote device is only their queueing (the ops run
inside the download call): it would count the remote ops' time twice, so
:func:`with_remote_calibration` replaces the remote devices' entries with these: ``handoffs[host][D]``
as above, and a hand-off between D and any other device (one crossing, one actor call) half of it.

The profiler times a remote op one call at a time, so every sample is the first op the worker runs
after idling a round trip, its input freshly uploaded (seed CNN on a loopback worker: QuantizeLinear
115 us profiled, 28 us serving; Flatten 39 vs 9 us), the error cancelling by chance against the
request's un-modelled rest. With the model's graph, :func:`served_timings` serves the whole graph on
each remote device through the real Runtime and takes every op's device-clock seconds as the op's
entry (inputs produced on the worker, the ops back to back in one call, as a request's steps are);
:func:`batch_timings` runs a few of its ops twice per batch after an upload call, and the first run's
excess over the second, at the natural idle (a round trip) and 3 ms more, is the device's ``wakeup``
table (its threads and caches after idling), which the simulators charge to the first op of each
batch, once per crossing, as for a local device; the graph's first ops' entries are served less it.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.protocol import HOST, Link
from hetero.ir.graph import Graph, Op, random_input
from hetero.remote.client import RemoteDevice

log = logging.getLogger(__name__)

SHORT_CHAIN = 2  # Identity ops per request: the per-request costs
LONG_CHAIN = 8  # and the per-op slope (a longer batch is more exposed to other work preempting the worker)
REQUESTS = 10
ROUNDS = 5  # steps per requests: ROUNDS * requests (bare calls, short chain, long chain) in all
OP_ROUNDS = 6  # batches per probe op and idle point, after
WARMUP_ROUNDS = 8  # batches that send the op, compile it, pack its weights and learn its thread count
WAKE_PROBES = 4  # ops of the model whose batches give the wake-up table (spread from small to large)
SERVED_REQUESTS = 20  # requests of the whole graph served on a remote device for its op entries (after as many warm-up ones)
EXTRA_IDLE_S = (0.0, 3e-3)  # idle beyond the round trip before a batch: the wake-up table's points


@dataclasses.dataclass(frozen=True)
class RemoteCosts:
    """A remote device's runtime costs beyond its links and op device time, in seconds."""

    op_s: float  # per op on the device
    request_s: float  # per request that starts and ends there (its two crossings with this host)


def _chain_runtime(device: Device, length: int, links: Sequence[Link], requests: int) -> tuple[Any, list]:
    """A Runtime serving a ``length``-op Identity chain all on ``device``, warmed up, and its feeds."""
    from hetero.exec.dispatch import identity_chain, single_device_runtime

    graph = identity_chain(length)
    spec = graph.inputs[0]
    runtime = single_device_runtime(graph, device, 1e-5, links, host=HOST)
    feeds = [{spec.name: np.zeros(spec.shape, np.float32)}] * requests
    runtime.serve(feeds[:3])  # ops sent, their seconds known: the measured rounds are steady
    return runtime, feeds


def _median_latency(report: Any) -> float:
    return float(np.median([x for x in report.latencies_s if x is not None]))


def remote_costs(devices: Sequence[Device], links: Sequence[Link], dispatch_s: float = 0.0,
                 requests: int = REQUESTS) -> dict[str, RemoteCosts]:
    """Per remote device among ``devices`` with both host links fitted and an Identity kernel, its
    :class:`RemoteCosts` (each never below 0); local devices are left out.

    Each step times, back to back, the bare calls (an upload and a download of the chain's 64-byte
    tensor, as the link fit times them), one request of the short chain and one of the long; the
    differences are taken within a step and their medians over ``ROUNDS * requests`` steps kept, so
    the host's load drifting between the link fit and this calibration, or a burst of other work,
    moves both sides of a difference and not the figures."""
    from hetero.exec.dispatch import identity_chain

    probe_graph = identity_chain(1)
    probe = next(iter(probe_graph.ops_in_order()))
    tensor = np.zeros(probe_graph.inputs[0].shape, np.float32)
    fits = {(link.src, link.dst): link for link in links}
    out: dict[str, RemoteCosts] = {}
    for device in devices:
        if not isinstance(device, RemoteDevice):
            continue
        up, down = fits.get((HOST, device.name)), fits.get((device.name, HOST))
        if up is None or down is None or not device.supports(probe):
            log.info("%s: runtime costs not measured (no host link fit or no Identity kernel)", device.name)
            continue
        short, short_feeds = _chain_runtime(device, SHORT_CHAIN, [up, down], requests)
        long, long_feeds = _chain_runtime(device, LONG_CHAIN, [up, down], requests)
        resident = device.upload(tensor)
        per_request, per_op, seconds = [], [], []
        for _ in range(ROUNDS * requests):  # one bare round trip, one short and one long request, back to back
            started = time.perf_counter()
            device.upload(tensor)
            device.download(resident)
            bare_s = time.perf_counter() - started
            short_report, long_report = short.serve(short_feeds[:1]), long.serve(long_feeds[:1])
            short_s, long_s = _median_latency(short_report), _median_latency(long_report)
            per_request.append(short_s - bare_s)
            per_op.append((long_s - short_s) / (LONG_CHAIN - SHORT_CHAIN))
            for report in (short_report, long_report):
                seconds.extend(s for values in report.op_seconds.values() for s in values)
        op_device_s = float(np.median(seconds))
        op_s = max(0.0, float(np.median(per_op)) - op_device_s - dispatch_s)
        request_s = max(0.0, float(np.median(per_request)) - SHORT_CHAIN * (op_device_s + dispatch_s + op_s))
        out[device.name] = RemoteCosts(op_s, request_s)
        log.info("%s: %.1f us per op and %.1f us per request beyond the calls and device time (%d steps)",
                 device.name, op_s * 1e6, request_s * 1e6, ROUNDS * requests)
    return out


def batch_timings(device: RemoteDevice, ops: Sequence[Op], rounds: int = OP_ROUNDS,
                  extra_idle_s: Sequence[float] = EXTRA_IDLE_S, seed: int = 0) -> dict[str, tuple[list[float], dict[float, list[float]]]]:
    """Per op signature of ``ops`` (one op each): its device-clock seconds run second in a batch of
    two runs of it on the same inputs (warm), and run first, after the inputs' upload call and
    ``extra`` more seconds idle, per extra idle: ``(warm, {extra: first})``. Each batch is one actor
    call, as a request's steps on the device are."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list[float], dict[float, list[float]]]] = {}
    for op in ops:
        if op.signature() in out:
            continue
        twin = copy.copy(op)  # another object: its own key on the wire, so its seconds come back apart
        feeds = [random_input(s, rng) for s in op.input_specs if s is not None and s.name not in op.weights]
        warm: list[float] = []
        first: dict[float, list[float]] = {extra: [] for extra in extra_idle_s}
        for round_ in range(-WARMUP_ROUNDS, rounds):  # the first send the ops and their weights, compile...
            for extra in extra_idle_s:
                inputs = [device.upload(x) for x in feeds]
                if extra:
                    time.sleep(extra)
                device.run(op, inputs)
                outputs = device.run(twin, inputs)
                device.download(outputs[0])
                a, b = device.last_seconds(op), device.last_seconds(twin)
                if round_ >= 0 and a is not None and b is not None:
                    first[extra].append(a)
                    warm.append(b)
        out[op.signature()] = (warm, first)
    return out


def served_timings(device: Device, graph: Graph, links: Sequence[Link], requests: int = SERVED_REQUESTS,
                   seed: int = 0) -> dict[str, list[float]]:
    """Per op name: its device-clock seconds while the Runtime serves ``requests`` of the whole graph
    on ``device`` (after as many warm-up requests); {} when the device lacks a kernel for an op."""
    from hetero.exec.dispatch import single_device_runtime

    if not all(device.supports(op) for op in graph.ops_in_order()):
        return {}
    rng = np.random.default_rng(seed)
    runtime = single_device_runtime(graph, device, 1e-5, links, host=HOST)
    feeds = [{spec.name: random_input(spec, rng) for spec in graph.inputs}] * requests
    runtime.serve(feeds)
    report = runtime.serve(feeds)
    return {name: list(values) for name, values in report.op_seconds.items()}


def _wakeup_table(timings: dict[str, tuple[list[float], dict[float, list[float]]]], round_trip_s: float) -> list[list[float]]:
    """``[[idle_s, extra_s], ...]``: per extra idle, the median over op signatures of what running
    first in a batch adds to running second; the idle is the worker's, a round trip more."""
    table = []
    for extra in EXTRA_IDLE_S:
        excess = [float(np.median(first[extra]) - np.median(warm)) for warm, first in timings.values()
                  if warm and first.get(extra)]
        if excess:
            table.append([round_trip_s + extra, max(0.0, float(np.median(excess)))])
    return table


def with_remote_calibration(profile: Any, devices: Sequence[Device], requests: int = REQUESTS,
                            graph: Graph | None = None) -> Any:
    """``profile`` (a hetero.cost.profile.Profile, a layer above this one) with each remote device's
    :func:`remote_costs`: per op in its op entries, per request as ``handoffs[host][DEVICE]`` (its
    ``handoffs[DEVICE][host]`` dropped: the request's start and end are both in the first) and half
    of it per crossing between the device and any other; with ``graph``, the remote devices' entries
    for its ops re-timed in batches (:func:`batch_timings`) and their ``wakeup`` tables."""
    measured = remote_costs(devices, profile.links, float(profile.runtime.get("dispatch_s", 0.0)), requests)
    if not measured:
        return profile
    handoffs = {src: dict(row) for src, row in profile.handoffs.items()}
    entries = dict(profile.devices)
    wakeup = dict(profile.wakeup)
    fits = {(link.src, link.dst): link for link in profile.links}
    half = {name: costs.request_s / 2 for name, costs in measured.items()}
    for name, costs in measured.items():
        handoffs.get(name, {}).pop(HOST, None)
        handoffs.setdefault(HOST, {})[name] = costs.request_s
        for other in entries:  # one crossing = one actor call for each remote side
            if other != name:
                share = half[name] + half.get(other, 0.0)
                handoffs.setdefault(other, {})[name] = share
                handoffs.setdefault(name, {})[other] = share
        entry = entries.get(name)
        if entry is None:
            continue
        device = next(d for d in devices if d.name == name)
        served: dict[str, list[float]] = {}
        if graph is not None:
            from hetero.exec.dispatch import probe_ops

            probes = probe_ops(device, graph, WAKE_PROBES)
            timings = batch_timings(device, probes)
            round_trip = (fits[(HOST, name)].latency_s + fits[(name, HOST)].latency_s) / 2
            table = _wakeup_table(timings, round_trip)
            if table:
                wakeup[name] = tuple(tuple(point) for point in table)
            links = [fits[(HOST, name)], fits[(name, HOST)]]
            by_name = served_timings(device, graph, links)
            if not by_name:  # an op the device lacks: the probes' second runs in a batch are all there is
                by_name = {op.name: timings[op.signature()][0] for op in probes}
            first = {n for n in graph.nodes if graph.in_degree(n) == 0}  # read the uploaded inputs
            woken = table[0][1] if table else 0.0
            for op in graph.ops_in_order():
                values = by_name.get(op.name)
                if values:
                    values = [max(v - woken, 0.25 * v) for v in values] if op.name in first else values
                    served.setdefault(op.signature(), []).extend(values)
            log.info("%s: %d op signatures timed serving the graph; wake-up %s", name, len(served),
                     ", ".join(f"+{e * 1e6:.0f} us after {i * 1e3:.2f} ms" for i, e in table))
        ops = {}
        for signature, stats in entry.ops.items():
            warm = served.get(signature)
            if warm:
                median = float(np.median(warm))
                stats = dataclasses.replace(stats, median_s=median, p10_s=float(np.percentile(warm, 10)),
                                            p90_s=float(np.percentile(warm, 90)), count=len(warm),
                                            features={**stats.features, "profiled_alone_s": stats.median_s})
            ops[signature] = dataclasses.replace(stats, wall_median_s=stats.median_s + costs.op_s,
                                                 features={**stats.features, "remote_op_s": costs.op_s})
        entries[name] = dataclasses.replace(entry, ops=ops)
    return dataclasses.replace(profile, devices=entries, handoffs={src: row for src, row in handoffs.items() if row},
                               wakeup=wakeup)
