"""Build a profile: every op of a graph measured on real devices with each device's own clock, the links,
the runtime calibrations, the host's identity. The parts live in hetero.cost.timing (one op),
hetero.cost.variants (the sweep) and hetero.cost.links (transfers and hand-offs).

Per (device, op signature): warm-up launches, then timed launches until the estimate is
stable (relative spread (p90 - p10) / median at most ``target_spread``) or the per-op time
budget is spent. Spikes (beyond median + 5 MAD, as a context switch or a page fault gives)
are dropped before the statistics, so one outlier cannot corrupt the profile.

Sweep (``sweep`` > 0): per device and kernel class of the graph, extra synthetic variants of the
graph's ops of that class (channels x0.5..x2, spatial size x0.5..x2, conv strides 1/2) are timed
alone and scaled by the class's in-graph / isolated ratio, so they agree with the graph's own
entries; they are stored with ``features["synthetic"] = 1.0`` and give the regressions many
points per class, as nn-Meter samples each kernel.

Transfers: host->device and device->host are timed for sizes from 1 KiB to 64 MiB and
fitted as latency + bytes/bandwidth; device->device goes through the host (download then
upload) and is timed the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import socket
from importlib import metadata
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from hetero.backends.base import Device
from hetero.errors import DeviceError
from hetero.ir.graph import Graph, Op
from hetero.cost.links import TRANSFER_SIZES, calibrate_handoffs, calibrate_links, fit_link
from hetero.cost.profile import DeviceProfile, OpStats, Profile, identity_of, same_device
from hetero.cost.timing import Budget, random_input, robust_stats, time_op, time_ops_in_graph
from hetero.cost.variants import SWEEP_BUDGET, make_variant, sweep_device, sweep_variants

__all__ = [  # the timing, sweep and link calibration names live in their modules; profile users import them from here too
    "Budget", "TRANSFER_SIZES", "calibrate_handoffs", "calibrate_links", "fit_link", "make_variant", "profile_graph",
    "quick_profile", "random_input", "robust_stats", "sweep_variants", "host_identity", "library_versions", "CPU_FLAGS",
]

log = logging.getLogger(__name__)

LIBRARIES = ("numpy", "numba", "pyopencl", "cupy", "onnx", "onnxruntime", "hetero")


# (LLVM 14 knows no CPU with avx512_vp2intersect, Zen 5).
CPU_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_vp2intersect", "amx_int8")


def host_identity() -> dict[str, object]:
    """The machine a profile is measured on: CPU model, x86 family/model/stepping, the flags that matter."""
    from hetero.backends.base import host_cpu_name

    identity: dict[str, object] = {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu": host_cpu_name(),
                                   "cores": __import__("os").cpu_count()}
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError as err:
        log.debug("cannot read /proc/cpuinfo: %s", err)
    if "cpu family" in fields:
        identity["cpu_id"] = (f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')} "
                              f"stepping {fields.get('stepping', '?')}")
    if "flags" in fields:
        flags = set(fields["flags"].split())
        identity["cpu_flags"] = [flag for flag in CPU_FLAGS if flag in flags]
        identity["virtual_machine"] = "hypervisor" in flags
    return identity


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def profile_graph(
    graph: Graph,
    devices: Sequence[Device],
    model: str,
    precision: str,
    budget: Budget = Budget(),
    previous: Profile | None = None,
    transfer_sizes: Iterable[int] = TRANSFER_SIZES,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    in_graph: bool = True,
    dispatch_s: float = 0.0,
    sweep: int = 0,
    sweep_budget: Budget = SWEEP_BUDGET,
    handoffs: bool = False,
) -> Profile:
    """Measure every op signature of the graph on every device (reusing ``previous`` entries
    measured on the same hardware), plus the links; ops a device has no kernel for are skipped. A
    device that fails on an op it has a kernel for is a DeviceError: no profile is returned.

    With ``in_graph`` (the default) a device that runs every op is timed inside whole-graph runs
    (what a runtime sees); otherwise, and for the rest, each op is timed alone in a loop.
    With ``sweep`` > 0, each kernel class also gets that many synthetic variants (see the module doc).
    ``dispatch_s`` is the runtime's own cost per op, recorded as ``runtime.dispatch_s``: measure it
    with ``hetero.exec.dispatch.measure_dispatch(devices)`` (0.0: not measured). With ``handoffs`` and
    two or more devices, the runtime calibrations are measured too (hetero.cost.calibration: each
device pair's and the host's hand-off cost, wake-up after idling, contention)."""
    from hetero.cost.speed import probe_key, speed_probe

    rng = np.random.default_rng(seed)
    unique: dict[str, Op] = {}
    for op in graph.ops_in_order():
        unique.setdefault(op.signature(), op)
    device_profiles: dict[str, DeviceProfile] = {}
    probes: dict[str, float] = {}
    for device in devices:
        before = speed_probe(device) if device.kind == "cpu" else None
        reused: Mapping[str, OpStats] = {}
        if previous is not None and device.name in previous.devices:
            entry = previous.devices[device.name]
            if same_device(entry.identity, device.info):
                reused = entry.ops
        measured: dict[str, OpStats] = dict(reused)
        if in_graph and all(device.supports(op) for op in unique.values()) and not set(unique) <= set(measured):
            if progress:
                progress(f"{device.name}: whole-graph runs")
            try:
                fresh = time_ops_in_graph(device, graph, budget, rng)
                measured.update({s: st for s, st in fresh.items() if s not in reused})
            except DeviceError as err:
                log.warning("%s: whole-graph timing failed (%s); timing ops one by one", device.name, err)
        for signature, op in unique.items():
            if signature in measured:
                continue
            if not device.supports(op):
                log.info("%s: no kernel for %s, not profiled", device.name, op.name)
                continue
            if progress:
                progress(f"{device.name}: {op.type} {op.name}")
            try:
                measured[signature] = time_op(device, op, budget, rng)
            except DeviceError as err:  # a device that cannot run an op it claims is broken: say so, stop
                done = sum(1 for s in unique if s in measured)
                raise DeviceError(f"device {device.name} failed on {op.type} node {op.name} after {done} of {len(unique)} "
                                  f"op signatures were measured ({err}); fix the device or leave it out of --devices") from None
        if sweep > 0:
            measured.update(sweep_device(device, unique, measured, sweep, rng, sweep_budget, progress))
        device_profiles[device.name] = DeviceProfile(identity=identity_of(device.info), ops=measured)
        after = speed_probe(device) if before is not None else None
        if before is not None and after is not None:  # the machine's speed while this device was timed
            probes[probe_key(device.name)] = (before + after) / 2
    power = {device.name: _device_power(device, unique.values(), rng) for device in devices}
    if progress:
        progress("links")
    links = calibrate_links(devices, transfer_sizes)
    calibrated: dict = {}
    if handoffs and len(devices) > 1:
        from hetero.cost.calibration import calibrate

        if progress:
            progress("hand-offs, wake-up, contention")
        calibrated = calibrate(devices, precision, links)
    return Profile(
        model=model,
        precision=precision,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        host=host_identity(),
        libraries=library_versions(),
        devices=device_profiles,
        links=tuple(links),
        runtime={"dispatch_s": dispatch_s, **probes},
        power=power,
        **calibrated,
    )


def _device_power(device: Device, ops: Iterable[Op], rng: np.random.Generator) -> dict[str, object]:
    """The device's power entry (hetero.cost.power), busy running its heaviest op."""
    from hetero.cost.power import measure_power

    supported = [op for op in ops if device.supports(op)]
    if not supported:
        return {"unavailable": "the device runs none of the model's ops"}
    op = max(supported, key=lambda o: o.flops)
    buffers = [device.upload(random_input(s, rng)) for s in op.input_specs if s is not None and s.name not in op.weights]

    def busy() -> None:
        device.run(op, buffers)
        device.synchronize()

    index = int(device.name.split(":")[1]) if device.name.count(":") == 1 and device.name.split(":")[1].isdigit() else 0
    return measure_power(device.info.kind, index, busy)


def quick_profile(graph: Graph, devices: list, model: str, precision: str):
    """A fast profile (a few launches per op, small transfers) when the user gave none."""
    log.warning("no --profile given: measuring each op briefly on %s to plan (hetero profile gives better plans)",
                ", ".join(d.name for d in devices))
    from hetero.exec.dispatch import measure_dispatch

    budget = Budget(warmup=1, min_count=3, max_count=20, target_spread=0.2, seconds_per_op=0.02)
    return profile_graph(graph, devices, model, precision, budget, transfer_sizes=[4096, 65536, 1 << 20],
                         dispatch_s=measure_dispatch(devices))
