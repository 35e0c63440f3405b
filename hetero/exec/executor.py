"""Single-device execution: a whole graph on one Device, buffers kept on the device.

Only graph inputs and outputs cross to the host; intermediate buffers are dropped as soon
as their last consumer has run (:func:`walk`, the one graph walk hetero has). An ``observe``
hook sees every op's outputs as they are made: the quantizer's calibration records tensor
ranges with it, and the profiler times ops inside whole-graph runs with it (``timed``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from hetero.backends.base import Buffer, Device
from hetero.backends.reference import ReferenceDevice
from hetero.errors import DeviceError
from hetero.ir.graph import Graph, Op, check_feeds


@dataclass(frozen=True)
class OpTiming:
    """One op's time in a timed run: by the device's own clock, and on the host from launch to synchronize."""

    device_s: float
    wall_s: float


Observe = Callable[[Op, Sequence[Buffer], "OpTiming | None"], None]
"""observe(op, outputs, timing): called after each op; timing is None unless the run is timed."""


def walk(
    graph: Graph,
    values: Mapping[str, Buffer],
    launch: Callable[[Op, list[Buffer]], Sequence[Buffer]],
    keep: Iterable[str] = (),
) -> dict[str, Buffer]:
    """Run every op in topological order with ``launch(op, activation inputs)``, starting from
    ``values`` (the graph inputs); each tensor is dropped after its last consumer unless named in
    ``keep``. Returns what is left: the kept tensors (and inputs no op reads)."""
    values = dict(values)
    order = list(graph.ops_in_order())
    remaining = Counter(t for op in order for t in op.activation_inputs)
    kept = set(keep)
    for op in order:
        outputs = launch(op, [values[t] for t in op.activation_inputs])
        for tensor, buffer in zip(op.outputs, outputs):
            values[tensor] = buffer
        for tensor in op.activation_inputs:
            remaining[tensor] -= 1
            if remaining[tensor] == 0 and tensor not in kept:
                del values[tensor]
    return values


def check_capability(graph: Graph, device: Device) -> None:
    """Raise DeviceError naming the first op the device has no kernel for."""
    for op in graph.ops_in_order():
        if not device.supports(op):
            raise DeviceError(f"{device.why_not(op)}; run it on another device (hetero devices lists them)")


def run_on_device(
    graph: Graph,
    device: Device,
    feeds: Mapping[str, np.ndarray],
    observe: Observe | None = None,
    timed: bool = False,
) -> dict[str, np.ndarray]:
    """Run the graph on one device: upload inputs, run every op there, download outputs.

    ``observe(op, outputs, timing)`` is called after each op with its device buffers. ``timed``
    launches each op with the device's ``timed_run`` and synchronizes after it, and gives the
    hook the op's :class:`OpTiming`. A device that compiles whole graphs (``plan_for``: the cpu
    device) runs its compiled plan, which calls the hook the same way."""
    plan_for = getattr(device, "plan_for", None)
    plan = plan_for(graph) if plan_for is not None else None
    if plan is not None:
        hook = None
        if observe is not None:
            hook = lambda op, outputs, timing: observe(op, outputs, None if timing is None else OpTiming(*timing))  # noqa: E731
        return plan.run(check_feeds(graph, feeds), hook, timed)
    check_capability(graph, device)
    inputs = {name: device.upload(a) for name, a in check_feeds(graph, feeds).items()}

    def launch(op: Op, buffers: list[Buffer]) -> Sequence[Buffer]:
        if not timed:
            outputs = device.run(op, buffers)
            if observe is not None:
                observe(op, outputs, None)
            return outputs
        start = time.perf_counter()
        outputs, device_s = device.timed_run(op, buffers)
        device.synchronize()
        wall_s = time.perf_counter() - start
        if observe is not None:
            observe(op, outputs, OpTiming(device_s, wall_s))
        return outputs

    values = walk(graph, inputs, launch, keep=[spec.name for spec in graph.outputs])
    result = {spec.name: device.download(values[spec.name]) for spec in graph.outputs}
    device.synchronize()
    return result


#: most warm-up runs spent waiting for a device to settle its choices (the cpu device's thread counts)
SETTLE_RUNS = 40


def settle(graph: Graph, device: Device, run: Callable[[], object]) -> None:
    """Warm up with ``run`` while the device still learns how to run ``graph`` (``learning``:
    the cpu device's thread-count trials), at most SETTLE_RUNS times, so timed runs after it
    measure the choices the device keeps."""
    learning = getattr(device, "learning", None)
    for _ in range(SETTLE_RUNS):
        if learning is None or not learning(graph):
            return
        run()


def time_on_device(
    graph: Graph, device: Device, feeds: Mapping[str, np.ndarray], repeat: int, warmup: int = 2
) -> tuple[dict[str, np.ndarray], list[float]]:
    """Outputs and the seconds of each of ``repeat`` runs, host input to host output, after warm-up."""
    outputs = {}
    for _ in range(max(warmup, 1)):  # compiles kernels and prepares weights outside the timing
        outputs = run_on_device(graph, device, feeds)
    settle(graph, device, lambda: run_on_device(graph, device, feeds))
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        outputs = run_on_device(graph, device, feeds)
        seconds.append(time.perf_counter() - start)
    return outputs, seconds


def run_reference(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the graph in numpy on the reference device (the oracle) and return its outputs by name."""
    return run_on_device(graph, ReferenceDevice(), feeds)
