"""The reference device: numpy, one op at a time (``reference_op``).

It is the correctness oracle every other backend is compared with; ``hetero.exec.executor.run_reference``
runs a whole graph on it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.ir import ops
from hetero.backends.base import Buffer, DeviceInfo, HostDevice, Probe, host_cpu_name, host_memory_bytes
from hetero.ir.graph import Op


def reference_op(op: Op, activations: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run one op in numpy; ``activations`` are its non-constant inputs in order. The outputs the
    node uses: a reference computes every output, a node may use a prefix (MaxPool's Indices)."""
    return ops.get(op.type).reference(op.arguments(activations), op.attrs)[: len(op.outputs)]


def _reference_kernel(device: "ReferenceDevice", op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return reference_op(op, inputs)


class ReferenceDevice(HostDevice):
    """numpy on the host: every registered op type, the oracle for the others."""

    kernels = {name: _reference_kernel for name in ops.supported_ops()}
    same_bits_as_reference = frozenset(ops.supported_ops())

    def __init__(self, info: DeviceInfo | None = None) -> None:
        super().__init__(info or DeviceInfo("reference", "reference", "numpy on the host", "numpy", 1, 0))


def probe() -> Probe:
    """The reference device is always usable: numpy on the host CPU."""
    return (DeviceInfo("reference", "reference", f"numpy on {host_cpu_name()}", "numpy", 1, host_memory_bytes()),), ()
