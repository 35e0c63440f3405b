"""Policies in the simulator: failover loses nothing, least-loaded balances, periodic recovers."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from conftest import resnet_roofline_world

from hetero.policy import ObservedCost
from hetero.schedulers import schedule
from hetero.sim import Scenario, simulate, table_world
from hetero.sim.scenario import DynamicEvent, PolicySpec, Workload


def scenario(workload: Workload, duration_s: float, **fields) -> Scenario:
    return Scenario(model="", devices=(), workload=workload, duration_s=duration_s, **fields)


@pytest.fixture(scope="module")
def world():
    """resnet18 on a CPU host, two equal GPUs and an NPU (made-up roofline costs)."""
    return resnet_roofline_world()


GPU0_DOWN = (DynamicEvent("fail", 0.3, 0.3, device="gpu0"),)


def test_failover_loses_no_request(world):
    run = scenario(Workload("poisson", rate_per_s=400.0), 1.0, algorithm="auto", objective="throughput",
                   events=GPU0_DOWN, policy=PolicySpec("failover"), seed=2)
    result = simulate(run, world=world)
    requests = result.requests
    assert requests["failed"] == requests["lost"] == 0
    assert requests["completed"] == requests["arrived"] > 300
    assert requests["retried"] > 0  # requests in flight on gpu0 were run again
    whys = [plan["why"] for plan in result.plans]
    assert whys[:3] == ["initial", "gpu0 failed", "gpu0 recovered"]
    assert "gpu0" not in result.plans[1]["ops_per_device"] and result.migrated_bytes > 0
    assert not result.errors


def test_static_loses_requests_when_its_device_fails(world):
    run = scenario(Workload("poisson", rate_per_s=400.0), 1.0, algorithm="auto", objective="throughput",
                   events=GPU0_DOWN, policy=PolicySpec("static"), seed=2)
    result = simulate(run, world=world)
    assert result.requests["lost"] > 0 and result.requests["failed"] > 0
    assert result.requests["completed"] + result.requests["lost"] + result.requests["failed"] == result.requests["arrived"]
    assert result.failures[0]["reason"] == "gpu0 is down"


@pytest.mark.parametrize("workload", [Workload("poisson", rate_per_s=50.0), Workload("closed", clients=3)])
def test_every_device_down_is_a_clear_error_and_service_resumes(workload):
    graph = nx.DiGraph()
    graph.add_edge("a", "b", nbytes=1000)
    one = table_world(graph, {"a": {"cpu": 0.005}, "b": {"cpu": 0.005}}, [], host="cpu")
    run = scenario(workload, 1.0, events=(DynamicEvent("fail", 0.2, 0.3, device="cpu"),), policy=PolicySpec("failover"))
    result = simulate(run, world=one)
    assert result.errors and "failover: every device is down (cpu failed at 0.2 s)" in result.errors[0]
    assert result.requests["failed"] + result.requests["lost"] > 0
    late = result.request_arrival_s + result.request_latency_s > 0.5
    assert late.sum() > 10  # served again after the recovery


def test_least_loaded_balances_two_equal_gpus(world):
    two = table_world(world.graph, {n: {d: world.cost.compute(n, d) for d in ("cpu", "gpu0", "gpu1")} for n in world.graph},
                      [l for l in world.links if "npu" not in (l.src, l.dst)], host="cpu", devices=("cpu", "gpu0", "gpu1"))
    single = schedule(two.graph, ObservedCost(two.cost, {}, ["gpu0"]), "single").makespan_s
    rate = 1.6 / single  # more than one GPU can serve
    run = scenario(Workload("poisson", rate_per_s=rate), 2000 * single, policy=PolicySpec("least-loaded"), seed=1)
    result = simulate(run, world=two)
    gpu0, gpu1 = result.utilisation["gpu0"], result.utilisation["gpu1"]
    assert gpu0 > 0.6 and gpu1 > 0.6 and abs(gpu0 - gpu1) < 0.1 * max(gpu0, gpu1), result.utilisation
    assert result.requests["completed"] == result.requests["arrived"] > 2000
    assert result.latency_s["p50"] < 2 * single  # not queueing without bound
    static = simulate(scenario(run.workload, run.duration_s, policy=PolicySpec("static"), seed=1), world=two)
    assert static.latency_s["p50"] > 10 * result.latency_s["p50"]  # one GPU alone is overloaded


def test_periodic_recovers_to_the_new_optimum_after_a_slowdown(world):
    initial = schedule(world.graph, world.cost, "heft")
    busiest = max(set(initial.placement.values()), key=list(initial.placement.values()).count)
    factor = 4.0
    events = (DynamicEvent("slowdown", 0.2, None, device=busiest, factor=factor),)
    optimum = schedule(world.graph, ObservedCost(world.cost, {busiest: factor}, world.devices), "heft").makespan_s
    assert optimum > initial.makespan_s * 1.05  # the slowdown matters
    results = {}
    for policy in ("static", "periodic"):
        run = scenario(Workload("closed", clients=1), 1.0, algorithm="heft", events=events,
                       policy=PolicySpec(policy, {"period": 0.05, "alpha": 0.3} if policy == "periodic" else {}))
        result = simulate(run, world=world)
        late = result.request_arrival_s > 0.6
        results[policy] = float(np.mean(result.request_latency_s[late]))
    assert results["periodic"] == pytest.approx(optimum, rel=0.10)
    assert results["static"] > 1.1 * optimum
