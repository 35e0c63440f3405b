"""What happens to the system from outside: request arrivals and scripted device failures.

Arrivals stop at the scenario's duration (or after ``requests`` of them); requests already in
flight then finish. A closed loop keeps ``clients`` requests outstanding, each client thinking
``think_s`` between them; open loops (Poisson, CSV trace) start one process per arrival.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generator, Iterable, Iterator

import numpy as np
import simpy

if TYPE_CHECKING:
    from hetero.sim.engine import Simulator
    from hetero.sim.scenario import DynamicEvent

CHUNK = 4096


def start_workload(sim: "Simulator") -> None:
    """Start the arrival processes of the scenario's workload."""
    workload = sim.scenario.workload
    if workload.kind == "closed":
        for _ in range(workload.clients):
            sim.env.process(closed_client(sim, workload.think_s))
    elif workload.kind == "poisson":
        sim.env.process(open_arrivals(sim, poisson_times(sim.arrival_rng, workload.rate_per_s)))
    else:
        sim.env.process(open_arrivals(sim, workload.arrivals_s))


def poisson_times(rng: np.random.Generator, rate_per_s: float) -> Iterator[float]:
    """Arrival times of a Poisson process (exponential gaps), drawn in chunks."""
    now = 0.0
    while True:
        for gap in rng.exponential(1.0 / rate_per_s, CHUNK).tolist():
            now += gap
            yield now


def open_arrivals(sim: "Simulator", times: Iterable[float]) -> Generator[simpy.Event, object, None]:
    """One request process per arrival time before the duration."""
    env, duration = sim.env, sim.scenario.duration_s
    for at in times:
        if at >= duration:
            return
        if at > env.now:
            yield env.timeout(at - env.now)
        request = sim.new_request()
        if request is None:
            return
        env.process(sim.serve(request))


def closed_client(sim: "Simulator", think_s: float) -> Generator[simpy.Event, object, None]:
    """A client that sends a request, waits for its result, thinks, and again, until the duration."""
    env, duration = sim.env, sim.scenario.duration_s
    while env.now < duration:
        request = sim.new_request()
        if request is None:
            return
        completed = yield from sim.serve(request)
        if not completed:
            yield sim.next_change()  # no device could take it: wait for a recovery or a new plan
        elif think_s:
            yield env.timeout(think_s)


def start_script(sim: "Simulator") -> None:
    """Record every scripted event for the result and start the process that fails and recovers devices."""
    changes: list[tuple[float, int, str, str]] = []
    for event in sim.scenario.events:
        sim.recorder.mark(event)
        if event.kind == "update":
            from hetero.sim.update import live_update

            sim.env.process(live_update(sim, event, sim.recorder.marks[-1]))
        if event.kind == "objective":
            sim.env.process(_objective_change(sim, event))
        if event.kind == "fail" and event.device is not None:
            changes.append((event.at_s, 1, "fail", event.device))
            if event.duration_s is not None:
                changes.append((event.end_s, 0, "recover", event.device))
        elif event.kind == "recover" and event.device is not None:
            changes.append((event.at_s, 0, "recover", event.device))
    if changes:
        sim.env.process(_failures(sim, sorted(changes)))


def _failures(sim: "Simulator", changes: list[tuple[float, int, str, str]]) -> Generator[simpy.Event, object, None]:
    """Fail and recover devices on time; a recovery after the duration is left out (it would extend the run)."""
    env = sim.env
    for at, _, kind, device in changes:
        if at >= sim.scenario.duration_s:
            return
        if at > env.now:
            yield env.timeout(at - env.now)
        if kind == "fail":
            sim.fail_device(device)
        else:
            sim.recover_device(device)


def _objective_change(sim: "Simulator", event: "DynamicEvent") -> Generator[simpy.Event, object, None]:
    """At the event's time the policy plans for the new objective (an energy budget, say, as the battery runs low)."""
    if event.at_s > sim.env.now:
        yield sim.env.timeout(event.at_s - sim.env.now)
    sim.change_objective(event)
