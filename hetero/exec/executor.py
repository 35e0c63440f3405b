"""Single-device execution: a whole graph on one Device, buffers kept on the device.

Only graph inputs and outputs cross to the host; intermediate buffers are dropped as soon
as their last consumer has run.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Mapping

import numpy as np

from hetero.backends.base import Buffer, Device
from hetero.backends.reference import ReferenceDevice, check_feeds
from hetero.errors import DeviceError
from hetero.ir.graph import Graph


def check_capability(graph: Graph, device: Device) -> None:
    """Raise DeviceError naming the first op the device has no kernel for."""
    for op in graph.ops_in_order():
        if not device.supports(op):
            raise DeviceError(f"{device.why_not(op)}; run it on another device (hetero devices lists them)")


def run_on_device(graph: Graph, device: Device, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph on one device: upload inputs, run every op there, download outputs."""
    check_capability(graph, device)
    values: dict[str, Buffer] = {name: device.upload(a) for name, a in check_feeds(graph, feeds).items()}
    order = list(graph.ops_in_order())
    remaining = Counter(t for op in order for t in op.activation_inputs)
    keep = {spec.name for spec in graph.outputs}
    for op in order:
        outputs = device.run(op, [values[t] for t in op.activation_inputs])
        for tensor, buffer in zip(op.outputs, outputs):
            values[tensor] = buffer
        for tensor in op.activation_inputs:
            remaining[tensor] -= 1
            if remaining[tensor] == 0 and tensor not in keep:
                del values[tensor]
    result = {spec.name: device.download(values[spec.name]) for spec in graph.outputs}
    device.synchronize()
    return result


def time_on_device(
    graph: Graph, device: Device, feeds: Mapping[str, np.ndarray], repeat: int, warmup: int = 2
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Outputs and the seconds of each of ``repeat`` runs, host input to host output, after warm-up."""
    outputs = {}
    for _ in range(max(warmup, 1)):  # compiles kernels and prepares weights outside the timing
        outputs = run_on_device(graph, device, feeds)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = run_on_device(graph, device, feeds)
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def run_reference(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the graph in numpy on the reference device (the oracle) and return its outputs by name."""
    return run_on_device(graph, ReferenceDevice(), feeds)
