"""Discrete-event simulation (simpy) of partitioned inference on heterogeneous devices.

    scenario = load_scenario("examples/scenarios/phone_edge_wifi.yaml")
    result = simulate(scenario)            # a SimResult; result.to_dict() is RESULT.json

Modules, in the order a request meets them: ``scenario`` (the YAML file, checked field by field
with ``fields``), ``world`` (model, devices and links as a cost model), ``workload`` (arrivals,
scripted failures), ``engine`` (the Simulator and a request's life), ``plan`` (a schedule as
index tables), ``execution`` (a request in flight, device workers), ``network`` (links),
``rates`` (speed and bandwidth under events), ``energy`` (power fields and joules), ``metrics``
(the result), ``outputs`` (files).
"""

from __future__ import annotations

from typing import Callable

from hetero.policy import Policy
from hetero.schedule import Schedule
from hetero.errors import ScenarioError, SimulationError
from hetero.sim.engine import Simulator
from hetero.sim.metrics import SimResult
from hetero.sim.scenario import Scenario, load_scenario, parse_scenario
from hetero.sim.world import World, build_world, table_world, world_from_problem


def simulate(
    scenario: Scenario,
    *,
    world: World | None = None,
    policy: Policy | None = None,
    seed: int | None = None,
    trace: bool = False,
    progress: Callable[[float], None] | None = None,
    coalesce: bool = True,
    initial: Schedule | None = None,
) -> SimResult:
    """Run a scenario (on ``world``, default: built from the scenario's model and devices).

    ``seed`` overrides the scenario's; ``trace`` records per-op events; ``progress`` is called
    with the simulated time now and then; ``coalesce=False`` simulates every op as its own
    event (same results, slower: the reference for the coalesced runs); ``initial`` is the plan
    the policy starts from (default: the policy plans with the scenario's scheduler).
    """
    world = world if world is not None else build_world(scenario)
    return Simulator(scenario, world, policy=policy, seed=seed, trace=trace, progress=progress, coalesce=coalesce,
                     initial=initial).run()


__all__ = [
    "Scenario",
    "ScenarioError",
    "SimResult",
    "SimulationError",
    "Simulator",
    "World",
    "build_world",
    "load_scenario",
    "parse_scenario",
    "simulate",
    "table_world",
    "world_from_problem",
]
