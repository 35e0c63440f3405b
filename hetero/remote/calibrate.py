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
:func:`with_remote_calibration` replaces the remote devices' entries with these.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.protocol import HOST, Link, TableCostModel
from hetero.remote.client import RemoteDevice

log = logging.getLogger(__name__)

SHORT_CHAIN = 2  # Identity ops per request: the per-request costs
LONG_CHAIN = 8  # and the per-op slope (a longer batch is more exposed to other work preempting the worker)
REQUESTS = 10
ROUNDS = 5  # steps per requests: ROUNDS * requests (bare calls, short chain, long chain) in all


@dataclasses.dataclass(frozen=True)
class RemoteCosts:
    """A remote device's runtime costs beyond its links and op device time, in seconds."""

    op_s: float  # per op on the device
    request_s: float  # per request that starts and ends there (its two crossings with this host)


def _chain_runtime(device: Device, length: int, links: Sequence[Link], requests: int) -> tuple[Any, list]:
    """A Runtime serving a ``length``-op Identity chain all on ``device``, warmed up, and its feeds."""
    from hetero.exec.dispatch import identity_chain
    from hetero.exec.runtime import Runtime
    from hetero.policy import PolicyContext, make_policy
    from hetero.schedulers import fixed_schedule

    graph = identity_chain(length)
    spec = graph.inputs[0]
    cost = TableCostModel([device.name], {n: {device.name: 1e-5} for n in graph.nodes}, list(links), host=HOST)
    plan = fixed_schedule(graph, cost, {n: device.name for n in graph.nodes})
    runtime = Runtime(graph, {device.name: device}, make_policy("static"), PolicyContext(graph, cost), initial=plan)
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


def with_remote_calibration(profile: Any, devices: Sequence[Device], requests: int = REQUESTS) -> Any:
    """``profile`` (a hetero.cost.profile.Profile, a layer above this one) with each remote device's
    :func:`remote_costs`: per op in its op entries, per request as ``handoffs[host][DEVICE]`` (its
    ``handoffs[DEVICE][host]`` dropped: the request's start and end are both in the first)."""
    measured = remote_costs(devices, profile.links, float(profile.runtime.get("dispatch_s", 0.0)), requests)
    if not measured:
        return profile
    handoffs = {src: dict(row) for src, row in profile.handoffs.items()}
    entries = dict(profile.devices)
    for name, costs in measured.items():
        handoffs.get(name, {}).pop(HOST, None)
        handoffs.setdefault(HOST, {})[name] = costs.request_s
        entry = entries.get(name)
        if entry is not None:
            ops = {signature: dataclasses.replace(stats, wall_median_s=stats.median_s + costs.op_s,
                                                  features={**stats.features, "remote_op_s": costs.op_s})
                   for signature, stats in entry.ops.items()}
            entries[name] = dataclasses.replace(entry, ops=ops)
    return dataclasses.replace(profile, devices=entries, handoffs={src: row for src, row in handoffs.items() if row})
