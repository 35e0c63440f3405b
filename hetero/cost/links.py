"""Calibrating what moves between devices: host <-> device transfers timed for sizes from 1 KiB to
64 MiB and fitted as latency + bytes / bandwidth (device -> device goes through the host:
download then upload, timed the same way), and the hand-off cost of each device pair and of a
request's start and end, measured through the real runtime beyond the fitted links."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.cost.protocol import HOST, Link
from hetero.cost.timing import robust_stats
from hetero.ir.graph import Graph

log = logging.getLogger(__name__)

KIB = 1024
TRANSFER_SIZES = tuple(KIB * 4**i for i in range(9))  # 1 KiB .. 64 MiB


def fit_link(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares latency + bytes/bandwidth, weighted by 1/seconds so small sizes count too."""
    nbytes = np.array([p[0] for p in points], np.float64)
    seconds = np.array([p[1] for p in points], np.float64)
    weights = 1.0 / np.maximum(seconds, 1e-9)
    design = np.stack([np.ones_like(nbytes), nbytes], axis=1) * weights[:, None]
    (latency, per_byte), *_ = np.linalg.lstsq(design, seconds * weights, rcond=None)
    if per_byte <= 0:  # transfers this cheap are all latency; keep the model well defined
        per_byte = 1e-15
    return max(float(latency), 0.0), float(1.0 / per_byte)


def _median_time(action: Callable[[], object], device: Device, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        device.synchronize()
        start = time.perf_counter()
        action()
        device.synchronize()
        samples.append(time.perf_counter() - start)
    return robust_stats(samples)[0]


def calibrate_links(devices: Sequence[Device], sizes: Iterable[int] = TRANSFER_SIZES, repeat: int = 5) -> list[Link]:
    """Fit host<->device for each device and device->device (through the host) for each pair."""
    sizes = list(sizes)
    host_arrays = {n: np.ones(n, np.uint8) for n in sizes}
    resident = {d.name: {n: d.upload(host_arrays[n]) for n in sizes} for d in devices}
    links = []
    for device in devices:
        up = [(n, _median_time(lambda: device.upload(host_arrays[n]), device, repeat)) for n in sizes]
        down = [(n, _median_time(lambda: device.download(resident[device.name][n]), device, repeat)) for n in sizes]
        for src, dst, points in ((HOST, device.name, up), (device.name, HOST, down)):
            latency, bandwidth = fit_link(points)
            links.append(Link(src, dst, latency, bandwidth, via="direct", points=tuple(points)))
    for src in devices:
        for dst in devices:
            if src is dst:
                continue
            points = [
                (n, _median_time(lambda: dst.upload(src.download(resident[src.name][n])), dst, repeat)) for n in sizes
            ]
            latency, bandwidth = fit_link(points)
            links.append(Link(src.name, dst.name, latency, bandwidth, via=HOST, points=tuple(points)))
    return links


HANDOFF_CHAIN = 24  # Identity ops in the calibration chain: device a, a, b, b, a, a, ...
SHORT_CHAIN = 2  # the shorter chain a request's fixed overhead is extrapolated from
HANDOFF_REQUESTS = 40


def calibrate_handoffs(devices: Sequence[Device], links: Sequence[Link], length: int = HANDOFF_CHAIN,
                       requests: int = HANDOFF_REQUESTS) -> dict[str, dict[str, float]]:
    """Per ordered pair of devices: what a runtime hand-off from src to dst costs beyond the fitted
    src->dst link transfer. A chain of tiny Identity ops placed a, a, b, b, a, a, ... is served
    through the real Runtime; for each edge kind the gap is the consumer's start minus the
    producer's end (the runtime's trace events). The hand-off cost is the median cross-device gap
    minus the median same-device gap (the per-op dispatch the cost model already charges) minus the
    link's fitted time for the tensor; never below 0. Pairs where a device lacks Identity are left out.
    Per device, the same chain (and one of SHORT_CHAIN ops) served on it alone gives
    ``out[HOST][device]``: what a request's start and end there add to the host links' fitted times
    (waking its worker, signalling the caller), extrapolated to a request of no ops."""
    from hetero.cost.protocol import TableCostModel
    from hetero.exec.dispatch import identity_chain, op_wall_s
    from hetero.exec.runtime import Runtime
    from hetero.policy import PolicyContext, make_policy
    from hetero.schedulers import fixed_schedule

    graph = identity_chain(length)
    nbytes = int(graph.inputs[0].nbytes)
    fits = {(link.src, link.dst): link for link in links}
    probe = next(iter(graph.ops_in_order()))
    out: dict[str, dict[str, float]] = {}
    short = identity_chain(SHORT_CHAIN)
    for device in devices:
        if device.supports(probe) and (HOST, device.name) in fits and (device.name, HOST) in fits:
            # a request's overhead grows with its ops (each op's trace bookkeeping, after the last
            # op's end): the fixed part is the line through the short and long chains at 0 ops (the
            # per-op part is in runtime.dispatch_s; charged here too it counted twice: the seed
            # CNN's all-cpu plan predicted +147%)
            rounds = [(_request_overhead_s(graph, device, links, requests), _request_overhead_s(short, device, links, requests))
                      for _ in range(3)]  # the median round of each: single rounds here moved 19-61 us for one op
            long_s, short_s = (float(np.median([r[k] for r in rounds])) for k in (0, 1))
            fixed = short_s - (long_s - short_s) * SHORT_CHAIN / (length - SHORT_CHAIN)
            extra = min(short_s, max(0.0, fixed)) - fits[(HOST, device.name)].seconds(nbytes) \
                - fits[(device.name, HOST)].seconds(nbytes)
            out.setdefault(HOST, {})[device.name] = max(0.0, extra)
            log.info("request start and end on %s: %.1f us beyond the host links", device.name, out[HOST][device.name] * 1e6)
    for i, a in enumerate(devices):
        for b in devices[i + 1:]:
            if not (a.supports(probe) and b.supports(probe)) or (a.name, b.name) not in fits or (b.name, a.name) not in fits:
                log.info("hand-off %s <-> %s: not measured (no Identity kernel or no link fit)", a.name, b.name)
                continue
            placement = {op.name: (a.name if (k // 2) % 2 == 0 else b.name) for k, op in enumerate(graph.ops_in_order())}
            seconds = {d.name: op_wall_s(d, graph) for d in (a, b)}
            cost = TableCostModel([a.name, b.name], {n: dict(seconds) for n in graph.nodes},
                                  [l for l in links if {l.src, l.dst} <= {HOST, a.name, b.name}], host=HOST)
            plan = fixed_schedule(graph, cost, placement)
            runtime = Runtime(graph, {a.name: a, b.name: b}, make_policy("static"), PolicyContext(graph, cost), initial=plan)
            feeds = [{"t0": np.zeros(16, np.float32)}] * requests
            runtime.serve(feeds[:5])
            report = runtime.serve(feeds)
            start = {(e.args["request"], e.name): e.start_s for e in report.events if e.kind == "compute"}
            end = {(e.args["request"], e.name): e.end_s for e in report.events if e.kind == "compute"}
            gaps: dict[tuple[str, str], list[float]] = {}
            for u, v in graph.edges:
                pair = (placement[u], placement[v])
                for r in range(requests):
                    if (r, u) in end and (r, v) in start:
                        gaps.setdefault(pair, []).append(start[(r, v)] - end[(r, u)])
            local = float(np.median(gaps.get((a.name, a.name), []) + gaps.get((b.name, b.name), [])))
            for src, dst in ((a.name, b.name), (b.name, a.name)):
                extra = float(np.median(gaps[(src, dst)])) - local - fits[(src, dst)].seconds(nbytes)
                out.setdefault(src, {})[dst] = max(0.0, extra)
                log.info("hand-off %s -> %s: %.1f us beyond the link", src, dst, out[src][dst] * 1e6)
    return out


def _request_overhead_s(graph: Graph, device: Device, links: Sequence[Link], requests: int) -> float:
    """Median over requests of the chain served on ``device`` alone: latency minus the span from
    the first op's start to the last op's end (the input upload, the output download, the worker's
    wake-up and the caller's signal)."""
    from hetero.cost.protocol import TableCostModel
    from hetero.exec.dispatch import op_wall_s
    from hetero.exec.runtime import Runtime
    from hetero.policy import PolicyContext, make_policy
    from hetero.schedulers import fixed_schedule

    seconds = op_wall_s(device, graph)
    cost = TableCostModel([device.name], {n: {device.name: seconds} for n in graph.nodes},
                          [l for l in links if {l.src, l.dst} <= {HOST, device.name}], host=HOST)
    plan = fixed_schedule(graph, cost, {n: device.name for n in graph.nodes})
    runtime = Runtime(graph, {device.name: device}, make_policy("static"), PolicyContext(graph, cost), initial=plan)
    feeds = [{"t0": np.zeros(16, np.float32)}] * requests
    runtime.serve(feeds[:5])
    report = runtime.serve(feeds)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for event in report.events:
        if event.kind == "compute":
            r = int(event.args["request"])
            first[r] = min(first.get(r, event.start_s), event.start_s)
            last[r] = max(last.get(r, event.end_s), event.end_s)
    overheads = [latency - (last[r] - first[r]) for r, latency in enumerate(report.latencies_s) if latency is not None and r in first]
    return float(np.median(overheads)) if overheads else 0.0


# CPU flags that matter to hetero's figures: the int8 GEMM path (VNNI) and PoCL's compiler
