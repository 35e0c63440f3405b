"""What devices that share hardware cost each other: wake-up after idling, slowdown when both run.

Two effects make a cross-device plan slower than the sum of its ops' profiled times on this
machine, where numba's threads and PoCL's share two cores (on a real SoC the CPU and GPU share
memory bandwidth and a power budget):

* **wake-up**: a device whose threads sat idle (its worker asleep, its parallel pool parked, the
  core halted while another device ran) runs its next op slower than back to back, as the
  profile's whole-graph runs time it. :func:`calibrate_wakeup` times probe ops of the model right
  after the device idled for ``idle_s`` while the other device ran, minus their back-to-back time:
  a table ``[[idle_s, extra_s], ...]`` per device, read by :func:`wakeup_extra_s` (linear between
  points, 0 at idle 0, flat after the last).
* **contention**: devices of one resource group (:func:`resource_group`: the host's cores for the
  cpu and a CPU OpenCL device) running at once each go slower. :func:`calibrate_contention` times
  the probe ops while the other device of the group runs, over their time alone: a slowdown factor
  per device.

Both are stored in the profile (``wakeup``, ``contention``; hetero.cost.profile) and charged by the
simulators (hetero.sim.effects); the cost model charges the wake-up on a hand-off.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Mapping, Sequence

import numpy as np

from hetero.backends.base import Device, on_host_cores
from hetero.exec.dispatch import probe_ops
from hetero.ir.graph import Graph, Op

log = logging.getLogger(__name__)

IDLE_POINTS_S = (1e-4, 3e-4, 1e-3, 3e-3)  # idle times the wake-up is measured at
PROBE_OPS = 4  # model ops per device, spread over its op times
REPEAT = 9
PHASES = 3  # alone / together alternations of the contention measurement
HOST_GROUP = "host-cores"


def resource_group(identity: Mapping[str, object]) -> str | None:
    """The resource group a device shares: the host's cores for the cpu device and an OpenCL device
    that runs on the CPU (PoCL's pthread driver); None for a device with its own hardware."""
    return HOST_GROUP if on_host_cores(identity) else None


def wakeup_extra_s(table: Sequence[tuple[float, float]], idle_s: float) -> float:
    """The extra seconds an op pays after ``idle_s`` of idling: linear between the table's points
    (0 at idle 0), the last point's value beyond it; 0.0 for an empty table."""
    if not table or idle_s <= 0:
        return 0.0
    previous_idle, previous_extra = 0.0, 0.0
    for point_idle, point_extra in table:
        if idle_s <= point_idle:
            share = (idle_s - previous_idle) / (point_idle - previous_idle) if point_idle > previous_idle else 1.0
            return previous_extra + share * (point_extra - previous_extra)
        previous_idle, previous_extra = point_idle, point_extra
    return previous_extra


class _Launcher:
    """One device's probe ops with inputs uploaded, run by a worker thread fed through a queue, as
    the runtime runs them: ``time(op)`` is one synchronised launch's wall time on the caller's
    thread, ``handed(op)`` the time from handing the op to the worker to its end (the worker's
    wake-up included)."""

    def __init__(self, device: Device, ops: Sequence[Op], rng: np.random.Generator) -> None:
        from hetero.cost.profiler import random_input

        self.device = device
        self.ops = list(ops)
        self.inputs = {op.name: [device.upload(random_input(s, rng)) for s in op.input_specs
                                 if s is not None and s.name not in op.weights] for op in self.ops}
        self._tasks: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name=f"hetero-calibrate-{device.name}", daemon=True)
        self._worker.start()
        for op in self.ops:  # compile, pack weights, learn thread counts
            for _ in range(4):
                self.handed(op)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            op, seconds, handed_at = task
            if op is None:  # keep busy for ``seconds``, running the smallest probe op
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    self.time(self.ops[0])
            else:
                self.time(op)
            self._done.put(time.perf_counter() - handed_at)

    def time(self, op: Op) -> float:
        start = time.perf_counter()
        self.device.run(op, self.inputs[op.name])
        self.device.synchronize()
        return time.perf_counter() - start

    def handed(self, op: Op) -> float:
        self._tasks.put((op, 0.0, time.perf_counter()))
        return float(self._done.get())

    def busy_for(self, seconds: float) -> None:
        """Keep the device's worker running its smallest probe op for about ``seconds``; returns when done."""
        self._tasks.put((None, seconds, time.perf_counter()))
        self._done.get()

    def close(self) -> None:
        self._tasks.put(None)
        self._worker.join()


def calibrate_wakeup(devices: Sequence[Device], graph: Graph, seed: int = 0, idle_points_s: Sequence[float] = IDLE_POINTS_S,
                     repeat: int = REPEAT) -> dict[str, list[list[float]]]:
    """Per device: ``[[idle_s, extra_s], ...]``, what an op handed to the device's worker costs
    beyond one handed to it right after its last op, after the device idled ``idle_s`` while the
    next device of the list ran (slept, when it is alone): its worker's and threads' wake-up and
    the op's slowdown. The median over the probe ops of (median after idling - median right
    after), never below 0."""
    rng = np.random.default_rng(seed)
    launchers = {d.name: _Launcher(d, probe_ops(d, graph, PROBE_OPS), rng) for d in devices}
    out: dict[str, list[list[float]]] = {}
    try:
        for i, device in enumerate(devices):
            mine = launchers[device.name]
            if not mine.ops:
                continue
            other = launchers[devices[(i + 1) % len(devices)].name] if len(devices) > 1 else None
            if other is not None and not other.ops:
                other = None
            warm: dict[tuple[int, str], list[float]] = {}
            cold: dict[tuple[int, str], list[float]] = {}
            for _ in range(repeat):  # idle points interleaved, so a burst of other load hits them all alike
                for op in mine.ops:
                    for k, idle in enumerate(idle_points_s):
                        mine.handed(op)
                        warm.setdefault((k, op.name), []).append(mine.handed(op))
                        if other is None:
                            time.sleep(idle)
                        else:
                            other.busy_for(idle)
                        cold.setdefault((k, op.name), []).append(mine.handed(op))
            table = []
            for k, idle in enumerate(idle_points_s):
                extras = [float(np.median(cold[(k, op.name)]) - np.median(warm[(k, op.name)])) for op in mine.ops]
                table.append([float(idle), max(0.0, float(np.median(extras)))])
            out[device.name] = table
            log.info("wake-up %s: %s", device.name, ", ".join(f"{x * 1e6:.0f} us idle: +{e * 1e6:.1f} us" for x, e in table))
    finally:
        for launcher in launchers.values():
            launcher.close()
    return out


def calibrate_contention(devices: Sequence[Device], graph: Graph, groups: Mapping[str, str | None], seed: int = 0,
                         repeat: int = REPEAT) -> dict[str, float]:
    """Per device with a partner in its resource group: the factor its probe ops take longer while
    the partner runs (its smallest probe op in a loop on another thread), median over the probes
    of median(concurrent) / median(alone), at least 1."""
    rng = np.random.default_rng(seed)
    launchers = {d.name: _Launcher(d, probe_ops(d, graph, PROBE_OPS), rng) for d in devices}
    try:
        return _contention(devices, launchers, groups, repeat)
    finally:
        for launcher in launchers.values():
            launcher.close()


def _contention(devices: Sequence[Device], launchers: Mapping[str, _Launcher], groups: Mapping[str, str | None],
                repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for device in devices:
        group = groups.get(device.name)
        partners = [d for d in devices if d is not device and group is not None and groups.get(d.name) == group]
        mine = launchers[device.name]
        if not partners or not mine.ops or not launchers[partners[0].name].ops:
            continue
        other = launchers[partners[0].name]
        alone: dict[str, list[float]] = {}
        together: dict[str, list[float]] = {}
        for _ in range(PHASES):  # alone and together alternate, so a burst of other load hits both alike
            for op in mine.ops:
                alone.setdefault(op.name, []).extend(mine.time(op) for _ in range(repeat))
            stop = threading.Event()

            def spin() -> None:
                while not stop.is_set():
                    other.time(other.ops[-1])

            worker = threading.Thread(target=spin, name="hetero-contention", daemon=True)
            worker.start()
            try:
                time.sleep(0.002)
                for op in mine.ops:
                    together.setdefault(op.name, []).extend(mine.time(op) for _ in range(repeat))
            finally:
                stop.set()
                worker.join()
        ratios = [float(np.median(together[op.name]) / np.median(alone[op.name])) for op in mine.ops]
        out[device.name] = max(1.0, float(np.median(ratios)))
        log.info("contention %s with %s running: x%.2f", device.name, partners[0].name, out[device.name])
    return out
