"""Links in the simulation: dedicated links carry transfers independently, shared ones contend.

A transfer over one link takes its serialization time (bytes at the link's bandwidth, which may
change under events) and then the link's latency. On a dedicated link transfers do not slow each
other (as the cost model assumes), so a transfer is one timeout. A shared link (Wi-Fi, one bus)
divides its bandwidth equally among the transfers on it at each moment (processor sharing): two
equal transfers that start together both take twice as long. Devices without a direct link talk
through the host, store and forward, as in :class:`hetero.cost.protocol.TableCostModel`.
Links of one ``serial`` group carry one transfer at a time, first come first served, each taking
its whole time (latency included): the actor calls of a device on another host, which its client
makes one after another, so two tensors crossing at once take two round trips, not one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import simpy

from hetero.cost.protocol import Link
from hetero.errors import InputError
from hetero.sim.rates import RateProfile

Arrive = Callable[[], None]
Valid = Callable[[], bool]
TransferLog = Callable[[str, str, str, int, float, float], None]  # label, src, dst, bytes, start, end
Observer = Callable[[str, str, int, float, float], None]  # src, dst, bytes, seconds, now (Policy.observe_transfer)


class Channel:
    """One link, both directions; bytes moved are counted per direction."""

    def __init__(self, env: simpy.Environment, spec: Link, bandwidth: RateProfile,
                 serial: simpy.Resource | None = None) -> None:
        self.env = env
        self.serial = serial  # one transfer at a time with the other links of its group
        self.spec = spec
        self.latency_s = spec.latency_s
        self.bandwidth = bandwidth
        self.shared = spec.shared
        self.bytes_moved: dict[tuple[str, str], int] = {(spec.src, spec.dst): 0, (spec.dst, spec.src): 0}
        self._active: dict[simpy.Event, list[float]] = {}  # transfer -> [bytes left, bytes] (shared links)
        self._changed: simpy.Event | None = None
        if self.shared:
            env.process(self._share())

    def arrival(self, start_s: float, nbytes: int) -> float:
        """When nbytes sent at start_s arrive over this link when alone on it."""
        return self.bandwidth.finish(start_s, nbytes) + self.latency_s

    def transmit(self, nbytes: int) -> simpy.Event:
        """Send nbytes now over the shared link; the event fires when they have arrived."""
        done = self.env.event()
        self._active[done] = [float(nbytes), float(nbytes)]
        if self._changed is not None and not self._changed.triggered:
            self._changed.succeed()
        return done

    def _share(self):
        """Processor sharing: every active transfer progresses at bandwidth / count."""
        while True:
            if not self._active:
                self._changed = self.env.event()
                yield self._changed
                continue
            now = self.env.now
            sharing = list(self._active.items())  # a transfer that joins later is not charged for this step
            rate = self.bandwidth.at(now) / len(sharing)
            soonest = min(left for _, (left, _) in sharing) / rate
            step = min(soonest, self.bandwidth.next_change(now) - now)
            self._changed = self.env.event()
            yield self.env.timeout(step) | self._changed
            moved = (self.env.now - now) * rate
            finished = []
            for transfer, state in sharing:
                state[0] -= moved
                if state[0] <= 1e-9 * state[1]:
                    finished.append(transfer)
            for transfer in finished:
                del self._active[transfer]
                self.env.timeout(self.latency_s).callbacks.append(lambda _, t=transfer: t.succeed())


@dataclass(frozen=True)
class Hop:
    channel: Channel
    src: str
    dst: str


@dataclass(frozen=True)
class Route:
    """The hops from one device to another; ``fixed`` when none is shared or changes bandwidth."""

    hops: tuple[Hop, ...]
    shared: bool  # or serial: carried by a process (_carry), not one timeout
    fixed: bool
    latency_s: float
    seconds_per_byte: float


class Network:
    """Routes, transfers and per-link byte counts."""

    def __init__(
        self,
        env: simpy.Environment,
        links: Iterable[Link],
        host: str,
        factors: Mapping[frozenset[str], Sequence[tuple[float, float, float]]] | None = None,
        log: TransferLog | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.env = env
        self.host = host
        self.log = log
        self.observe = observe
        self.channels: dict[tuple[str, str], Channel] = {}
        factors = factors or {}
        serial: dict[str, simpy.Resource] = {}
        for spec in links:
            if (spec.src, spec.dst) in self.channels:
                raise InputError(f"link {spec.src} - {spec.dst} is listed twice")
            if spec.serial and spec.serial not in serial:
                serial[spec.serial] = simpy.Resource(env, capacity=1)
            group = serial.get(spec.serial) if spec.serial else None
            channel = Channel(env, spec, RateProfile(spec.bandwidth_Bps, factors.get(frozenset((spec.src, spec.dst)), ())), group)
            self.channels[(spec.src, spec.dst)] = self.channels[(spec.dst, spec.src)] = channel
        self._routes: dict[tuple[str, str], Route] = {}

    def route(self, src: str, dst: str) -> Route:
        """The route from src to dst: a direct link, else through the host."""
        route = self._routes.get((src, dst))
        if route is None:
            key = (src, dst)
            if src == dst:
                hops: tuple[Hop, ...] = ()
            elif key in self.channels:
                hops = (Hop(self.channels[key], src, dst),)
            elif (src, self.host) in self.channels and (self.host, dst) in self.channels:
                hops = (Hop(self.channels[(src, self.host)], src, self.host), Hop(self.channels[(self.host, dst)], self.host, dst))
            else:
                raise InputError(f"no route from {src} to {dst}: no direct link and none through the host {self.host}; add a link")
            shared = any(hop.channel.shared or hop.channel.serial is not None for hop in hops)
            fixed = not shared and all(hop.channel.bandwidth.constant for hop in hops)
            route = Route(hops, shared, fixed, sum(hop.channel.latency_s for hop in hops),
                          sum(1.0 / hop.channel.bandwidth.base for hop in hops))
            self._routes[key] = route
        return route

    def send(self, nbytes: int, src: str, dst: str, start_s: float, arrive: Arrive, valid: Valid | None = None,
             label: str = "") -> None:
        """Move nbytes from src to dst starting at start_s (>= now); call ``arrive`` when they are there.

        ``valid`` is asked when the bytes would leave (for a transfer scheduled ahead of time whose
        producer may never finish); a transfer that is no longer valid moves nothing.
        """
        route = self._routes.get((src, dst)) or self.route(src, dst)
        if route.shared:
            self.env.process(self._carry(nbytes, route, start_s, arrive, valid, label))
            return
        if route.fixed:  # the cost model's own formula, so a lone transfer takes exactly what it predicts
            arrival = start_s + (route.latency_s + nbytes * route.seconds_per_byte)
        else:
            arrival = start_s
            for hop in route.hops:
                arrival = hop.channel.arrival(arrival, nbytes)

        def deliver(_: simpy.Event) -> None:
            if valid is not None and not valid():
                return
            self._delivered(route, nbytes, start_s, label)
            if self.observe is not None:
                self.observe(src, dst, nbytes, self.env.now - start_s, self.env.now)
            arrive()

        self.env.timeout(max(arrival - self.env.now, 0.0)).callbacks.append(deliver)

    def _delivered(self, route: Route, nbytes: int, start_s: float, label: str) -> None:
        begin = start_s
        for hop in route.hops:
            end = hop.channel.arrival(begin, nbytes) if self.log is not None else begin
            self._account(hop, nbytes, begin, end, label)
            begin = end

    def transfer(self, nbytes: int, src: str, dst: str, label: str = "") -> simpy.Event:
        """An event that fires when nbytes sent now from src have reached dst."""
        done = self.env.event()
        self.send(nbytes, src, dst, self.env.now, lambda: done.succeed(), label=label)
        return done

    def _carry(self, nbytes: int, route: Route, start_s: float, arrive: Arrive, valid: Valid | None, label: str):
        if start_s > self.env.now:
            yield self.env.timeout(start_s - self.env.now)
        if valid is not None and not valid():
            return
        for hop in route.hops:
            turn = hop.channel.serial.request() if hop.channel.serial is not None else None
            if turn is not None:
                yield turn
            begin = self.env.now
            if hop.channel.shared:
                yield hop.channel.transmit(nbytes)
            else:
                yield self.env.timeout(hop.channel.arrival(begin, nbytes) - begin)
            if turn is not None:
                hop.channel.serial.release(turn)
            self._account(hop, nbytes, begin, self.env.now, label)
        if self.observe is not None:
            self.observe(route.hops[0].src, route.hops[-1].dst, nbytes, self.env.now - start_s, self.env.now)
        arrive()

    def _account(self, hop: Hop, nbytes: int, begin: float, end: float, label: str) -> None:
        hop.channel.bytes_moved[(hop.src, hop.dst)] += nbytes
        if self.log is not None:
            self.log(label, hop.src, hop.dst, nbytes, begin, end)

    def bytes_moved(self) -> dict[str, int]:
        """Bytes per link direction, 'a -> b', in the order the links were listed."""
        seen: list[Channel] = []
        for channel in self.channels.values():
            if channel not in seen:
                seen.append(channel)
        return {f"{a} -> {b}": n for channel in seen for (a, b), n in channel.bytes_moved.items()}

    def shared_links(self) -> list[str]:
        return sorted({f"{c.spec.src} - {c.spec.dst}" for c in self.channels.values() if c.shared})

