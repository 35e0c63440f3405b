"""The runtime calibrations of a profile, measured apart from its ops: hand-offs between devices
and to the host (:func:`hetero.cost.links.calibrate_handoffs`), wake-up after idling and
contention between devices sharing a resource group (:mod:`hetero.cost.contention`), and the
layout conversion a tensor crossing to or from the cpu device pays (:func:`calibrate_layout`).

:func:`update_calibration` re-measures just these on an existing profile (``hetero profile
--update-calibration P.json``), keeping its op entries and links, so a shipped profile gains them
without re-timing every op.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

from hetero.backends.base import Device
from hetero.cost.contention import calibrate_contention, calibrate_wakeup, resource_group
from hetero.cost.profile import Profile, same_device
from hetero.cost.protocol import HOST, Link
from hetero.errors import ProfileError
from hetero.exec.dispatch import REMOTE_KIND_PREFIX
from hetero.ir.graph import Graph

log = logging.getLogger(__name__)

SETTLE_S = 1.5
"""Seconds the calibration waits before timing requests: right after a profile's kernel runs (or
the demo's accuracy runs) the host hand-off of the cpu device read 226-238 us against 35-57 us in
a fresh process, 74-75 us after 0.3-1 s of quiet and 35 us after 3 s (thread pools still spinning
on the two cores, then parked); the runtime serving requests sees the quiet figure."""
PROBE_MODEL = "builtin:seed-cnn"  # small, quick to compile on every device: its ops probe wake-up and contention


def calibrate(devices: Sequence[Device], precision: str, links: Sequence[Link], graph: Graph | None = None) -> dict[str, Any]:
    """The profile fields ``handoffs``, ``wakeup``, ``contention`` and ``layout`` measured on these devices
    (probe ops from ``graph``, default :data:`PROBE_MODEL` at ``precision``; ``links`` the fitted
    links the hand-offs are measured beyond)."""
    from hetero.cost.links import calibrate_handoffs

    if graph is None:
        from hetero.quant.precision import load_for_precision

        graph = load_for_precision(PROBE_MODEL, precision)

    time.sleep(SETTLE_S)  # the threads of the kernels just timed go idle first (see SETTLE_S)
    handoffs = calibrate_handoffs(devices, links)
    here = [d for d in devices if not d.kind.startswith(REMOTE_KIND_PREFIX)]  # another host's: no shared cores, no wake-up of ours
    wakeup = calibrate_wakeup(here, graph) if here else {}
    groups = {d.name: group for d in here for group in [resource_group(d.info.to_dict())] if group is not None}
    slowdown = calibrate_contention(here, graph, groups) if len(here) > 1 else {}
    shared = {name: group for name, group in groups.items() if list(groups.values()).count(group) > 1}
    contention = {"groups": shared, "slowdown": {n: f for n, f in slowdown.items() if n in shared}} if shared else {}
    return {"handoffs": handoffs, "wakeup": {n: tuple(tuple(p) for p in t) for n, t in wakeup.items()}, "contention": contention,
            "layout": calibrate_layout(here)}


LAYOUT_SHAPES = ((1, 16, 28, 28), (1, 64, 28, 28), (1, 64, 56, 56), (1, 32, 112, 112), (1, 96, 112, 112))


def calibrate_layout(devices: Sequence[Device], repeat: int = 15) -> dict[str, dict[str, float]]:
    """Per device that keeps tensors in its own layout (the cpu device: channels-last), one
    conversion to or from NCHW fitted as latency + bytes / bandwidth over int8 activations of
    16 KB to 1.2 MB (the mean of both directions, timed the way its download and its steps convert)."""
    import time

    import numpy as np

    from hetero.cost.links import fit_link

    out: dict[str, dict[str, float]] = {}
    for device in devices:
        if device.kind != "cpu":
            continue
        from hetero.backends.cpu.plan import to_nchw, to_nhwc

        points = []
        for shape in LAYOUT_SHAPES:
            nchw = np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)
            nhwc = to_nhwc(nchw)
            samples = []
            for _ in range(repeat):
                for convert, array in ((to_nchw, nhwc), (to_nhwc, nchw)):
                    start = time.perf_counter()
                    convert(array)
                    samples.append(time.perf_counter() - start)
            points.append((int(nchw.nbytes), float(np.median(samples))))
        latency, bandwidth = fit_link(points)
        out[device.name] = {"latency_s": latency, "bandwidth_Bps": bandwidth}
        log.info("layout conversion on %s: %.1f us + %.2f GB/s", device.name, latency * 1e6, bandwidth / 1e9)
    return out


def update_calibration(profile: Profile, profile_path: str, devices: Sequence[Device], graph: Graph) -> Profile:
    """``profile`` with its hand-off, wake-up and contention fields measured afresh on ``devices``
    (each must be the hardware the profile measured, and have its host links there); entries of
    devices not given are kept."""
    for device in devices:
        entry = profile.devices.get(device.name)
        if entry is None:
            raise ProfileError(f"{profile_path}: has no device '{device.name}' (it has {', '.join(profile.devices)}); "
                               f"profile it first: hetero profile MODEL --devices {device.name} -o {profile_path}")
        if not same_device(entry.identity, device.info):
            raise ProfileError(f"{profile_path}: device '{device.name}' was profiled as '{entry.identity.get('description')}', "
                               f"but here it is '{device.info.description}'; re-profile it on this machine")
        for src, dst in ((HOST, device.name), (device.name, HOST)):
            if profile.link(src, dst) is None:
                raise ProfileError(f"{profile_path}: links: no {src} -> {dst} link was measured; re-run hetero profile "
                                   f"{profile.model or 'MODEL'} --devices {device.name} -o {profile_path}")
    fresh = calibrate(devices, profile.precision, profile.links, graph)
    names = {d.name for d in devices}
    handoffs = {src: {dst: s for dst, s in row.items() if not ({src, dst} - {HOST}) <= names}
                for src, row in profile.handoffs.items()}
    for src, row in fresh["handoffs"].items():
        handoffs.setdefault(src, {}).update(row)
    wakeup = {n: t for n, t in profile.wakeup.items() if n not in names} | fresh["wakeup"]
    groups = {n: g for n, g in profile.contention.get("groups", {}).items() if n not in names}
    slowdown = {n: f for n, f in profile.contention.get("slowdown", {}).items() if n not in names}
    groups.update(fresh["contention"].get("groups", {}))
    slowdown.update(fresh["contention"].get("slowdown", {}))
    contention = {"groups": groups, "slowdown": slowdown} if groups or slowdown else {}
    layout = {n: f for n, f in profile.layout.items() if n not in names} | fresh["layout"]
    return dataclasses.replace(profile, handoffs={k: v for k, v in handoffs.items() if v}, wakeup=wakeup,
                               contention=contention, layout=layout)
