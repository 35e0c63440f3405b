"""The runtime's records: a request in flight, a worker's load task, and the report of a run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from hetero.backends.base import Buffer
from hetero.schedule import Schedule
from hetero.trace import TraceEvent


@dataclass
class Request:
    """One inference in flight: its plan, tensors by device, and what is still pending."""

    index: int
    feeds: Mapping[str, np.ndarray]
    plan: Schedule
    attempt: int
    start_s: float
    pending: dict[str, int]
    host_copies: dict[str, tuple[np.ndarray, str, float]] = field(default_factory=dict)
    device_copies: dict[tuple[str, str], Buffer] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: bool = False
    version: int = 0


@dataclass(frozen=True)
class Load:
    """A worker task: prepare model version ``version``'s ops placed on this device."""

    version: int


@dataclass(frozen=True)
class RunReport:
    """What a run did: outputs and latency per request, placement changes, failures, trace."""

    outputs: list[dict[str, np.ndarray] | None]
    latencies_s: list[float | None]
    wall_s: float
    rebalances: int
    retries: int
    failed_requests: int
    failed_devices: tuple[str, ...]
    placements: tuple[Mapping[str, str], ...]
    events: tuple[TraceEvent, ...]
    op_seconds: Mapping[str, list[float]]  # by the device's clock
    op_wall_s: Mapping[str, list[float]] = field(default_factory=dict)  # launch to result, host clock
    model_versions: list[int | None] = field(default_factory=list)  # per request: 0 old, 1 new (None: failed)
    update: Mapping[str, Any] | None = None  # a live update's loads per device and switch time

    @property
    def completed(self) -> int:
        return sum(1 for latency in self.latencies_s if latency is not None)

    def summary(self) -> dict[str, Any]:
        done = [latency for latency in self.latencies_s if latency is not None]
        return {
            "requests": len(self.latencies_s),
            "median_s": float(np.median(done)) if done else None,
            "p90_s": float(np.percentile(done, 90)) if done else None,
            "throughput_rps": len(done) / self.wall_s if self.wall_s > 0 else None,
            "placement": dict(self.placements[-1]) if self.placements else {},
            "rebalances": self.rebalances,
            "retries": self.retries,
            "failed_requests": self.failed_requests,
            "failed_devices": list(self.failed_devices),
            **({"model_versions": list(self.model_versions), "update": dict(self.update)} if self.update is not None else {}),
        }
