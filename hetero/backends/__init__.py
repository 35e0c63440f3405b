"""Execution backends, one module per device kind: reference (numpy), cpu (numba), opencl
(pyopencl), cuda (cupy). Each has a ``probe()``; the registry (``registry.py``) lists the kinds,
``discover`` asks their probes and ``open_device`` turns a device name into a Device."""

from __future__ import annotations

from hetero.backends.base import Device
from hetero.backends.registry import discover, open_device

__all__ = ["Device", "discover", "open_device"]
