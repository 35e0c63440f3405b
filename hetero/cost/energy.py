"""Energy: device power (idle + linear in utilisation) and link energy per byte.

The device model of LEAF (Wiesner and Thamsen, "LEAF: Simulating large energy-aware fog computing
environments", ICFEC 2021) and iFogSim (Gupta et al., Software: Practice and Experience 47, 2017):
a device draws ``idle_W`` when idle and ``busy_W`` when busy, linearly in between, so over a span
of ``T`` seconds with ``busy_s`` of them busy it uses

    E_device = idle_W * T + (busy_W - idle_W) * busy_s

and a link costs ``energy_J_per_byte`` for every byte it carries: E_link = bytes * J/byte (a
route through the host pays both of its links, as its time does in the cost model).

The energy of one request under a schedule is that of every device over the schedule's makespan
plus its transfers (:meth:`EnergyModel.schedule_J`): what one request served alone costs, idle
devices waiting for it included (Neurosurgeon counts the phone's idle wait the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from hetero.cost.protocol import Link
from hetero.errors import InputError

if TYPE_CHECKING:
    from hetero.schedule import Schedule


@dataclass(frozen=True)
class DevicePower:
    """Watts idle and fully busy; ``source`` says where the figures come from."""

    idle_W: float
    busy_W: float
    source: str = ""

    def __post_init__(self) -> None:
        for name, value in (("idle_W", self.idle_W), ("busy_W", self.busy_W)):
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"power {name} {value} must be finite and >= 0")
        if self.busy_W < self.idle_W:
            raise InputError(f"power busy_W {self.busy_W:g} W is below idle_W {self.idle_W:g} W; busy power includes idle")

    def energy_J(self, elapsed_s: float, busy_s: float) -> float:
        """Joules over ``elapsed_s`` seconds of which ``busy_s`` busy."""
        return self.idle_W * elapsed_s + (self.busy_W - self.idle_W) * busy_s


@dataclass(frozen=True)
class ScheduleEnergy:
    """A schedule's energy per request: total, per device and per link direction ("a -> b")."""

    total_J: float
    devices_J: Mapping[str, float]
    links_J: Mapping[str, float]


class EnergyModel:
    """Power per device and energy per byte per link; devices without power draw nothing (see ``missing``)."""

    def __init__(self, power: Mapping[str, DevicePower], links: Iterable[Link], host: str) -> None:
        self.power = dict(power)
        self.host = host
        self._links: dict[tuple[str, str], Link] = {}
        for link in links:
            self._links.setdefault((link.src, link.dst), link)
        for (src, dst), link in list(self._links.items()):
            self._links.setdefault((dst, src), link)

    def missing(self, devices: Iterable[str]) -> list[str]:
        """The devices among ``devices`` that have no power figures."""
        return [d for d in devices if d not in self.power]

    def idle_W(self, devices: Iterable[str]) -> float:
        return sum(self.power[d].idle_W for d in devices if d in self.power)

    def extra_W(self, device: str) -> float:
        """busy_W - idle_W: the watts a busy second adds."""
        power = self.power.get(device)
        return 0.0 if power is None else power.busy_W - power.idle_W

    def route(self, src: str, dst: str) -> tuple[Link, ...]:
        """The links a transfer src -> dst crosses: the direct one, else both through the host."""
        if src == dst:
            return ()
        direct = self._links.get((src, dst))
        if direct is not None:
            return (direct,)
        hops = tuple(link for link in (self._links.get((src, self.host)), self._links.get((self.host, dst))) if link is not None)
        return hops

    def J_per_byte(self, src: str, dst: str) -> float:
        return sum(link.energy_J_per_byte for link in self.route(src, dst))

    def transfer_J(self, nbytes: int, src: str, dst: str) -> float:
        return nbytes * self.J_per_byte(src, dst)

    def schedule_J(self, schedule: "Schedule") -> ScheduleEnergy:
        """One request under the schedule: every device over the makespan, plus its transfers."""
        makespan = schedule.makespan_s
        busy: dict[str, float] = {d: 0.0 for d in schedule.devices}
        for slot in schedule.slots:
            busy[slot.device] = busy.get(slot.device, 0.0) + (slot.end_s - slot.start_s)
        devices = {d: self.power[d].energy_J(makespan, busy.get(d, 0.0)) for d in schedule.devices if d in self.power}
        links: dict[str, float] = {}
        for transfer in schedule.transfers:
            src = self.host if transfer.src_device == self.host else transfer.src_device
            route = self.route(src, transfer.dst_device)
            hop_src = src
            for link in route:
                hop_dst = link.dst if link.src == hop_src else link.src
                key = f"{hop_src} -> {hop_dst}"
                links[key] = links.get(key, 0.0) + transfer.nbytes * link.energy_J_per_byte
                hop_src = hop_dst
        return ScheduleEnergy(sum(devices.values()) + sum(links.values()), devices, links)
