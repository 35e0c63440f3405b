"""Cost models: how long a node takes on a device and how long bytes take between devices.

A scheduler sees the world only through a :class:`CostModel`:

- ``compute(node, device)`` seconds, ``math.inf`` where the node has no kernel on the device
  (``can_run`` says the same as a bool);
- ``transfer(nbytes, src, dst)`` seconds: 0 within a device, ``latency_s + nbytes / bandwidth_Bps``
  on a direct link, and store-and-forward through ``host`` (src -> host -> dst) where two devices
  share no direct link. Transfers do not contend with each other (as in HEFT).

Every transfer in this model is affine in the byte count, so models may also offer two optional
fast paths that schedulers use when present (and fall back to the protocol when absent):
``transfer_coefficients(src, dst) -> (latency_s, seconds_per_byte)`` to cost thousands of edges at
once, and ``compute_table(nodes, devices) -> rows of seconds`` to read the whole compute table.

:class:`TableCostModel` holds explicit seconds per node per device (problem files, tests).
:class:`hetero.cost.model.ProfileCostModel` implements the same protocol (devices, host, compute,
can_run, transfer) from a measured profile: ``compute`` by op signature
first, a fitted per-op-type regression for unseen shapes second and a roofline from the device
spec last, ``transfer`` from the profile's measured links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

from hetero.errors import InputError


@runtime_checkable
class CostModel(Protocol):
    """Per-node compute seconds per device and per-link transfer seconds."""

    @property
    def devices(self) -> tuple[str, ...]: ...

    @property
    def host(self) -> str: ...

    def compute(self, node: str, device: str) -> float: ...

    def can_run(self, node: str, device: str) -> bool: ...

    def transfer(self, nbytes: int, src: str, dst: str) -> float: ...


HOST = "host"  # the name of the host (the process's own memory) wherever no device is named host


@dataclass(frozen=True)
class Link:
    """A direct link from ``src`` to ``dst``: a transfer takes latency_s + nbytes / bandwidth_Bps.

    The one link record of every layer: a cost model's links (problem files), a profile's
    measured paths (``via`` "direct" or the device they go through, ``points`` the measured
    (bytes, seconds)), and a scenario's links (both directions; ``shared``: transfers contend).
    ``serial``: links naming the same group carry one transfer at a time, first come first served
    (in the simulator; the actor calls of one device on another host, which its client makes one
    after another).
    """

    src: str
    dst: str
    latency_s: float
    bandwidth_Bps: float
    shared: bool = False
    via: str = "direct"
    points: tuple[tuple[int, float], ...] = ()
    energy_J_per_byte: float = 0.0
    serial: str = ""

    def __post_init__(self) -> None:
        if self.src == self.dst:
            raise InputError(f"link {self.src} -> {self.dst}: a link joins two different devices")
        if not (math.isfinite(self.latency_s) and self.latency_s >= 0):
            raise InputError(f"link {self.src} -> {self.dst}: latency_s {self.latency_s} must be finite and >= 0")
        if not (self.bandwidth_Bps > 0 and not math.isnan(self.bandwidth_Bps)):
            raise InputError(f"link {self.src} -> {self.dst}: bandwidth_Bps {self.bandwidth_Bps} must be > 0")
        if not (math.isfinite(self.energy_J_per_byte) and self.energy_J_per_byte >= 0):
            raise InputError(f"link {self.src} -> {self.dst}: energy_J_per_byte {self.energy_J_per_byte} must be finite and >= 0")

    def seconds(self, nbytes: int) -> float:
        """Time to move nbytes over this link."""
        return self.latency_s + nbytes / self.bandwidth_Bps


def link_table(links: Iterable[Link]) -> dict[tuple[str, str], Link]:
    """Direct links by (src, dst); a link also serves the reverse direction unless that is listed too."""
    listed = list(links)
    table: dict[tuple[str, str], Link] = {}
    for link in listed:
        if (link.src, link.dst) in table:
            raise InputError(f"link {link.src} -> {link.dst} is listed twice")
        table[(link.src, link.dst)] = link
    for link in listed:
        table.setdefault((link.dst, link.src), Link(link.dst, link.src, link.latency_s, link.bandwidth_Bps, link.shared, link.via,
                                                      energy_J_per_byte=link.energy_J_per_byte, serial=link.serial))
    return table


class TableCostModel:
    """Explicit seconds per node per device plus links; a missing device entry means no kernel there."""

    def __init__(
        self,
        devices: Iterable[str],
        compute_s: Mapping[str, Mapping[str, float]],
        links: Iterable[Link],
        host: str | None = None,
    ) -> None:
        self._devices = tuple(devices)
        if not self._devices:
            raise InputError("a cost model needs at least one device")
        if len(set(self._devices)) != len(self._devices):
            raise InputError(f"device names repeat in {list(self._devices)}")
        self._host = self._devices[0] if host is None else host
        known = set(self._devices) | {self._host}
        self._compute: dict[str, dict[str, float]] = {}
        for node, per_device in compute_s.items():
            for device, seconds in per_device.items():
                if device not in self._devices:
                    raise InputError(f"node {node}: '{device}' is not a device (devices: {', '.join(self._devices)})")
                if not (math.isfinite(seconds) and seconds >= 0):
                    raise InputError(f"node {node} on {device}: {seconds} seconds must be finite and >= 0")
            self._compute[node] = {d: float(s) for d, s in per_device.items()}
        self._links = link_table(links)
        for src, dst in self._links:
            for end in (src, dst):
                if end not in known:
                    raise InputError(f"link {src} -> {dst}: '{end}' is neither a device nor the host {self._host}")
        for src in self._devices:
            for dst in self._devices:
                if src != dst and self._route(src, dst) is None:
                    raise InputError(self._no_route(src, dst))

    @property
    def devices(self) -> tuple[str, ...]:
        return self._devices

    @property
    def host(self) -> str:
        return self._host

    @property
    def links(self) -> tuple[Link, ...]:
        """Every direct link, both directions."""
        return tuple(self._links.values())

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self._compute)

    def compute(self, node: str, device: str) -> float:
        return self._compute.get(node, {}).get(device, math.inf)

    def can_run(self, node: str, device: str) -> bool:
        return device in self._compute.get(node, {})

    def compute_table(self, nodes: Sequence[str], devices: Sequence[str]) -> list[list[float]]:
        """compute() for every node and device at once (the optional fast path schedulers use)."""
        empty: dict[str, float] = {}
        table = self._compute
        return [[table.get(node, empty).get(device, math.inf) for device in devices] for node in nodes]

    def _route(self, src: str, dst: str) -> tuple[Link, ...] | None:
        direct = self._links.get((src, dst))
        if direct is not None:
            return (direct,)
        if self._host in (src, dst):
            return None
        first, second = self._links.get((src, self._host)), self._links.get((self._host, dst))
        if first is None or second is None:
            return None
        return (first, second)

    def _no_route(self, src: str, dst: str) -> str:
        if self._host in (src, dst):
            return f"no route from {src} to {dst}: no direct link, and {self._host} is the host; add a link {src} -> {dst}"
        return f"no route from {src} to {dst}: no direct link and no links {src} -> {self._host} -> {dst} through the host; add a link"

    def transfer_coefficients(self, src: str, dst: str) -> tuple[float, float]:
        """(latency_s, seconds_per_byte) of the route from src to dst; (0, 0) within a device."""
        if src == dst:
            return (0.0, 0.0)
        route = self._route(src, dst)
        if route is None:
            raise InputError(self._no_route(src, dst))
        return (sum(link.latency_s for link in route), sum(1.0 / link.bandwidth_Bps for link in route))

    def transfer(self, nbytes: int, src: str, dst: str) -> float:
        latency_s, seconds_per_byte = self.transfer_coefficients(src, dst)
        return latency_s + nbytes * seconds_per_byte
