"""What the simulators charge beyond op times and link fits, from a measured profile: hand-offs,
wake-up after idling, contention between devices that share a resource group.

* Hand-offs ride on the links: :func:`profile_links` gives each device a host link and each
  measured device pair a direct link whose latency adds the profile's hand-off costs (a simulated
  link serves both directions, so it takes the mean of the two directions), so a lone transfer
  takes what the cost model's ``transfer`` says, less the consumer's wake-up, charged here after
  the idle time the simulation sees.
* :class:`DeviceEffects` is charged when a device begins a run of ops (:func:`charge`): the
  wake-up its profile table gives for the time since its last run ended, and, while another device
  of its resource group is running, its slowdown factor over the overlap; the device already
  running owes its own factor over the overlap, added to its next run (an approximation: its
  current run's op ends were fixed when it began).

validate's simulator and the scenario simulator (hetero.sim.world.build_world) both use these, so a
plan is charged the same in both; hetero.cost.contention measures what they charge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from hetero.cost.contention import wakeup_extra_s
from hetero.cost.protocol import HOST, Link
from hetero.errors import ProfileError

if TYPE_CHECKING:
    from hetero.cost.profile import Profile
    from hetero.sim.engine import Simulator


@dataclass(frozen=True)
class DeviceEffects:
    """Per simulated device: its wake-up table, resource group and slowdown factor."""

    wakeup: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
    slowdown: Mapping[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.wakeup) or any(f > 1.0 for f in self.slowdown.values())

    def merged(self, other: "DeviceEffects") -> "DeviceEffects":
        return DeviceEffects({**self.wakeup, **other.wakeup}, {**self.groups, **other.groups},
                             {**self.slowdown, **other.slowdown})


def effects_from_profile(profile: "Profile", names: Mapping[str, str], tag: str = "") -> DeviceEffects:
    """The effects of simulated devices ``names`` (simulated name -> the profile's device name);
    group names get ``tag`` (e.g. the profile's path) so groups of two profiles never mix."""
    wakeup = {sim: profile.wakeup[dev] for sim, dev in names.items() if profile.wakeup.get(dev)}
    groups = {sim: f"{tag}{group}" for sim, dev in names.items() for group in [profile.group_of(dev)] if group}
    slowdown = {sim: profile.slowdown(dev) for sim, dev in names.items() if sim in groups}
    return DeviceEffects(wakeup, groups, slowdown)


def host_link(profile: "Profile", profile_path: str, name: str, device: str) -> Link:
    """Simulated device ``name``'s link to the host from the profile's fits of ``device``: the mean
    of the up and down latencies, each with its hand-off (a request's start and end), and the
    harmonic mean of their bandwidths (a lone input plus a lone output take what the fits say)."""
    up, down = profile.link(HOST, device), profile.link(device, HOST)
    if up is None and down is None:
        raise ProfileError(f"{profile_path}: links: no link between {device} and the {HOST} was measured; "
                           f"profile {device} again (hetero profile MODEL --devices {device} -o {profile_path})")
    up, down = up or down, down or up
    assert up is not None and down is not None
    latency = (up.latency_s + profile.handoff_s(HOST, device) + down.latency_s + profile.handoff_s(device, HOST)) / 2
    return Link(name, HOST, latency, 2.0 / (1.0 / up.bandwidth_Bps + 1.0 / down.bandwidth_Bps),
                serial=name if on_another_host(profile, device) else "")


def on_another_host(profile: "Profile", device: str) -> bool:
    """Whether the profile measured ``device`` on another host (kind remote-*): its tensors cross
    in actor calls that its client makes one at a time, so its links are one ``serial`` group."""
    entry = profile.devices.get(device)
    return entry is not None and str(entry.identity.get("kind", "")).startswith("remote-")


def pair_links(profile: "Profile", names: Mapping[str, str]) -> list[Link]:
    """Direct links between simulated devices whose profile devices have a measured hand-off (via-host
    link fit plus hand-off, mean of the two directions, plus the layout conversion on each side that
    keeps its own layout); none for a profile without hand-offs."""
    links = []
    items = list(names.items())
    for i, (a_name, a) in enumerate(items):
        for b_name, b in items[i + 1:]:
            ab, ba = profile.link(a, b), profile.link(b, a)
            if ab is None or ba is None or not (profile.handoff_s(a, b) or profile.handoff_s(b, a)):
                continue
            latency = (ab.latency_s + profile.handoff_s(a, b) + ba.latency_s + profile.handoff_s(b, a)) / 2
            per_byte = (1.0 / ab.bandwidth_Bps + 1.0 / ba.bandwidth_Bps) / 2
            for device in (a, b):  # each side that keeps its own layout converts the tensor once
                fit = profile.layout.get(device)
                if fit:
                    latency += fit["latency_s"]
                    per_byte += 1.0 / fit["bandwidth_Bps"]
            remote = a_name if on_another_host(profile, a) else b_name if on_another_host(profile, b) else ""
            links.append(Link(a_name, b_name, latency, 1.0 / per_byte, serial=remote))
    return links


def profile_links(profile: "Profile", profile_path: str, devices: Sequence[str]) -> list[Link]:
    """The host link of each measured device and the hand-off links between them."""
    names = {name: name for name in devices}
    return [host_link(profile, profile_path, name, name) for name in devices] + pair_links(profile, names)


def charge(sim: "Simulator", device: int, now: float, works: list[float]) -> list[float]:
    """``works`` (the seconds of the ops of a run beginning now on ``device``) with the device's
    wake-up and its contention debt added to the first op, and its slowdown applied over the
    overlap with runs of other devices of its group; each of those runs' devices owes its own
    slowdown over the overlap, charged when it begins its next run (its run already going keeps
    its precomputed ends: the op ends and transfers it scheduled)."""
    effects: DeviceEffects | None = sim.world.effects
    if not effects or not works:
        return works
    name = sim.device_names[device]
    worker = sim.workers[device]
    table = effects.wakeup.get(name)
    if table:
        idle = now - worker.busy[-1][1] if worker.busy else float("inf")
        works[0] += wakeup_extra_s(table, idle)
    debts = sim.contention_debt_s
    works[0] += debts.pop(device, 0.0)
    group = effects.groups.get(name)
    if group is None:
        return works
    factor = effects.slowdown.get(name, 1.0)
    total = sum(works)
    for other, peer in enumerate(sim.workers):
        run = peer.current
        if other == device or run is None or not run.valid or effects.groups.get(sim.device_names[other]) != group:
            continue
        overlap = min(total, run.ends[run.valid - 1] - now)
        if overlap <= 0:
            continue
        peer_factor = effects.slowdown.get(sim.device_names[other], 1.0)
        if peer_factor > 1.0:
            debts[other] = debts.get(other, 0.0) + overlap * (peer_factor - 1.0)
        if factor > 1.0 and total > 0:
            scale = (total + overlap * (factor - 1.0)) / total
            works = [w * scale for w in works]
            total = sum(works)
    return works
