"""A speed probe: one fixed int8 graph timed on a device, to tell how fast the machine runs now.

Shared machines change speed: on the 2-vCPU VMs this project is measured on, the same op ran
1.2-1.6x slower a quarter of an hour later (other tenants, the host's placement of the vCPUs),
and a kernel profile's samples were taken across such changes. The probe (a 3x3 QLinearConv
48 -> 48 on 28x28 followed by a MaxPool, deterministic weights, timed inside the device's compiled
plan runs on one thread, median of ``RUNS``) is timed while a kernel profile samples (every
``EVERY_S`` seconds) and when a model is profiled (before and after; the mean is stored as the
profile's ``runtime["speed_probe_s:<device>"]``). A kernel profile's ``probe_s`` is the median of
its probes and each sample keeps the latest probe over it (``KernelSample.speed``); predictors are
fitted on samples brought to that median (seconds / speed), so a prediction is for the machine as
fast as it typically was while sampled. ``hetero profile --evaluate K.json --against M.json``
reports its figures both as they are and rescaled by M's probe over K's (the machine's speed when
M was measured).

The probe runs on one thread on the cpu device (its thread count pinned, not learned): left to
the device's one-thread-or-all learning, the first probe of a kernel profile (before any op had
woken the helper threads) took 181 us and the later ones 106-130 us, which made every prediction
1.6x too slow; pinned, it measures the core's speed whatever the helpers' state.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from hetero.errors import DeviceError

RUNS = 9
EVERY_S = 4.0
_GRAPH: list[Any] = []


def probe_graph():
    """The probe's graph (built once): uint8 1x48x28x28 -> QLinearConv 3x3 -> MaxPool 2x2."""
    if _GRAPH:
        return _GRAPH[0]
    from hetero.ir.graph import Graph, TensorSpec, make_op

    rng = np.random.default_rng(20261202)
    c = 48
    weights = {
        "sx": np.float32(0.02), "zx": np.uint8(120), "w": rng.integers(-127, 128, (c, c, 3, 3)).astype(np.int8),
        "sw": rng.uniform(0.001, 0.004, c).astype(np.float32), "zw": np.zeros(c, np.int8), "sy": np.float32(0.5),
        "zy": np.uint8(100), "b": rng.integers(-3000, 3000, c).astype(np.int32),
    }
    conv = make_op("probe_conv", "QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["c"],
                   {"kernel_shape": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1), "group": 1, "dilations": (1, 1)},
                   {"x": TensorSpec("x", (1, c, 28, 28), "uint8")}, weights)
    pool = make_op("probe_pool", "MaxPool", ["c"], ["y"], {"kernel_shape": (2, 2), "strides": (2, 2)},
                   {"c": TensorSpec("c", (1, c, 28, 28), "uint8")}, {})
    graph = Graph.build([conv, pool], [TensorSpec("x", (1, c, 28, 28), "uint8")], ["y"], name="speed-probe")
    _GRAPH.append(graph)
    return graph


def speed_probe(device: Any) -> float | None:
    """Seconds of the probe graph on ``device`` now (median of RUNS after warm-up), or None where
    the device cannot run it."""
    from hetero.exec.executor import run_on_device

    graph = probe_graph()
    if not all(device.supports(op) for op in graph.ops_in_order()):
        return None
    settle = getattr(device, "settle_threads", None)
    if settle is not None:  # the cpu device: one thread, not learned (see the module docstring)
        for op in graph.ops_in_order():
            settle(op, 1)
    x = {"x": np.random.default_rng(7).integers(0, 256, (1, 48, 28, 28)).astype(np.uint8)}
    try:
        for _ in range(4):
            run_on_device(graph, device, x)
        samples = []
        for _ in range(RUNS):
            start = time.perf_counter()
            run_on_device(graph, device, x)
            samples.append(time.perf_counter() - start)
    except DeviceError:
        return None
    return statistics.median(samples)


class SpeedTracker:
    """The probe re-timed every EVERY_S seconds while a device is sampled: ``latest_s()`` is the
    latest probe's seconds (None where the device cannot run the probe), ``reference_s()`` the
    median of all probes taken so far."""

    def __init__(self, device: Any) -> None:
        self.device = device
        first = speed_probe(device)
        self._latest = first
        self._at = time.perf_counter()
        self.probes: list[float] = [] if first is None else [first]

    def latest_s(self) -> float | None:
        if self._latest is not None and time.perf_counter() - self._at >= EVERY_S:
            seconds = speed_probe(self.device)
            if seconds is not None:
                self._latest = seconds
                self.probes.append(seconds)
            self._at = time.perf_counter()
        return self._latest

    def reference_s(self) -> float | None:
        return statistics.median(self.probes) if self.probes else None


def probe_key(device_name: str) -> str:
    """The key of a device's probe seconds in a model profile's ``runtime`` mapping."""
    return f"speed_probe_s:{device_name}"
