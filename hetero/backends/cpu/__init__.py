"""The cpu backend: numba kernels on the host (``device.CpuDevice``), an exact int8 GEMM
(``gemm``, and ``gemm_fused`` with the requantizer in its epilogue), float / int8 /
quantization kernels, and graphs compiled into channels-last int8 plans (``plan``, ``steps``,
``steps_conv``, ``kernels_nhwc``). ``probe()`` imports only numba, so discovery
does not load the kernels."""

from __future__ import annotations

import os

from hetero.backends.base import AbsentBackend, DeviceInfo, Probe, host_cpu_name, host_memory_bytes


def probe() -> Probe:
    """The host CPU as device ``cpu`` when numba imports, else why it is absent."""
    try:
        import numba
    except ImportError as err:
        return (), (AbsentBackend("cpu", f"numba cannot be imported ({err}); pip install numba"),)
    info = DeviceInfo("cpu", "cpu", f"{host_cpu_name()} (numba {numba.__version__})", "numba", os.cpu_count() or 1,
                      host_memory_bytes())
    return (info,), ()
