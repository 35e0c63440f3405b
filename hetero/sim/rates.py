"""Piecewise-constant rates over simulated time: device speed and link bandwidth under events.

Scripted events (a slowdown, background load, a bandwidth drop) are known before the run, so a
device's speed and a link's bandwidth are fixed functions of time. :class:`RateProfile` holds one
such function and answers, exactly, when an amount of work started at some time is done, even
when the rate changes part way. That is what lets a run of several ops be one simulated event.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Iterable, Sequence

from hetero.errors import InputError
from hetero.sim.scenario import DynamicEvent


class RateProfile:
    """``rate(t) = rates[i]`` for ``times[i] <= t < times[i+1]``; amounts are rate x seconds."""

    def __init__(self, base: float, changes: Iterable[tuple[float, float, float]] = ()) -> None:
        """``changes``: (start_s, end_s, multiplier) intervals, multiplied where they overlap."""
        changes = [(start, end, factor) for start, end, factor in changes if end > start]
        edges = sorted({0.0, *(s for s, _, _ in changes), *(e for _, e, _ in changes if math.isfinite(e))})
        times: list[float] = []
        rates: list[float] = []
        for t in edges:
            rate = base
            for start, end, factor in changes:
                if start <= t < end:
                    rate *= factor
            if not rates or rate != rates[-1]:
                times.append(t)
                rates.append(rate)
        if any(not r > 0 for r in rates):
            raise InputError(f"a device's speed or a link's bandwidth drops to {min(rates):g} under the scenario's "
                             "events; use smaller slowdown factors (or fewer overlapping ones)")
        self.times = times
        self.rates = rates
        self.base = base

    @property
    def constant(self) -> bool:
        return len(self.rates) == 1

    def at(self, t: float) -> float:
        """The rate at time t."""
        return self.rates[bisect_right(self.times, t) - 1]

    def next_change(self, t: float) -> float:
        """The first time after t at which the rate changes (inf if never)."""
        i = bisect_right(self.times, t)
        return self.times[i] if i < len(self.times) else math.inf

    def finish(self, start_s: float, amount: float) -> float:
        """When ``amount`` started at ``start_s`` is done."""
        return self.finishes(start_s, (amount,))[0]

    def finishes(self, start_s: float, cumulative: Sequence[float]) -> list[float]:
        """When each of the non-decreasing cumulative amounts started at ``start_s`` is done."""
        i = bisect_right(self.times, start_s) - 1
        rate = self.rates[i]
        if i + 1 == len(self.times) or start_s + cumulative[-1] / rate <= self.times[i + 1]:
            if rate == 1.0:
                return [start_s + amount for amount in cumulative]
            return [start_s + amount / rate for amount in cumulative]
        ends: list[float] = []
        t, done = start_s, 0.0
        for amount in cumulative:
            while True:
                limit = self.times[i + 1] if i + 1 < len(self.times) else math.inf
                if t + (amount - done) / self.rates[i] <= limit:
                    break
                done += (limit - t) * self.rates[i]
                t = limit
                i += 1
            ends.append(t + (amount - done) / self.rates[i])
        return ends


def device_speeds(events: Sequence[DynamicEvent], devices: Sequence[str]) -> dict[str, RateProfile]:
    """Per device, the speed multiplier (1 = as the cost model predicts) under slowdowns and load."""
    changes: dict[str, list[tuple[float, float, float]]] = {d: [] for d in devices}
    for event in events:
        if event.kind in ("slowdown", "load") and event.device is not None and event.device not in changes:
            raise InputError(f"{event.kind} event at {event.at_s:g} s names device '{event.device}', which is not "
                             f"simulated (devices: {', '.join(devices)}); name one of those")
        if event.kind == "slowdown" and event.device is not None:
            changes[event.device].append((event.at_s, event.end_s, 1.0 / event.factor))
        elif event.kind == "load" and event.device is not None:
            changes[event.device].append((event.at_s, event.end_s, 1.0 - event.utilisation))
    return {d: RateProfile(1.0, changes[d]) for d in devices}


def link_factors(events: Sequence[DynamicEvent]) -> dict[frozenset[str], list[tuple[float, float, float]]]:
    """Per link (unordered ends), the bandwidth multipliers of bandwidth events."""
    factors: dict[frozenset[str], list[tuple[float, float, float]]] = {}
    for event in events:
        if event.kind == "bandwidth" and event.link is not None:
            factors.setdefault(frozenset(event.link), []).append((event.at_s, event.end_s, event.factor))
    return factors
