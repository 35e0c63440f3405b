"""The simulator's model: DAG semantics against schedules, exact coalescing, queueing theory, links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from conftest import resnet_roofline_world
import simpy

from workloads import fork_join, layered, random_problem
from hetero.sim import Scenario, simulate, table_world, world_from_problem
from hetero.sim.network import Network
from hetero.sim.rates import RateProfile
from hetero.cost.protocol import Link
from hetero.sim.scenario import DynamicEvent, Noise, PolicySpec, Workload

ROOT = Path(__file__).resolve().parents[1]


def scenario(workload: Workload, duration_s: float = 1e9, **fields) -> Scenario:
    """A scenario for a world given directly (no model or devices to load)."""
    return Scenario(model="", devices=(), workload=workload, duration_s=duration_s, **fields)


ONE = Workload("closed", requests=1)


@pytest.fixture(scope="module")
def resnet_world():
    """resnet18 on a CPU host, two GPUs and an NPU (made-up roofline costs)."""
    return resnet_roofline_world()


def random_worlds():
    rng = np.random.default_rng(1)
    problems = [random_problem(layered(30, rng), 4, rng, ccr=1.0, io_bytes=1000) for _ in range(2)]
    problems.append(random_problem(fork_join(3, 4, 2), 3, rng, ccr=0.5, io_bytes=500))
    return [world_from_problem(p) for p in problems]


@pytest.mark.parametrize("algorithm", ["single", "greedy", "heft", "peft", "auto"])
def test_one_request_takes_the_predicted_makespan(algorithm, resnet_world):
    """Multi-device DAGs with transfers, graph input and output: simulated latency == makespan."""
    for world in random_worlds() + [resnet_world]:
        result = simulate(scenario(ONE, algorithm=algorithm), world=world)
        assert result.requests["completed"] == 1
        assert result.latency_s["mean"] == pytest.approx(result.predicted_makespan_s, rel=1e-9, abs=1e-12)


def test_one_request_with_dp_is_never_slower_than_predicted(resnet_world):
    """dp times each series segment after the previous one's cut; ASAP execution can only be earlier."""
    result = simulate(scenario(ONE, algorithm="dp"), world=resnet_world)
    assert result.latency_s["mean"] == pytest.approx(result.predicted_makespan_s, rel=1e-9)
    for world in random_worlds():
        result = simulate(scenario(ONE, algorithm="dp"), world=world)
        assert result.latency_s["mean"] <= result.predicted_makespan_s * (1 + 1e-9)


@pytest.mark.parametrize(
    "algorithm, objective, workload, noise",
    [
        ("heft", "latency", Workload("closed", clients=6), Noise()),
        ("greedy", "latency", Workload("poisson", rate_per_s=300.0), Noise("lognormal", 0.2)),
        ("auto", "throughput", Workload("closed", clients=8), Noise("exponential")),
    ],
)
def test_coalesced_runs_equal_one_event_per_op(resnet_world, algorithm, objective, workload, noise):
    """Coalescing is exact: the same latencies as simulating every op as its own event."""
    events = (DynamicEvent("slowdown", 0.3, 0.4, device="gpu0", factor=3.0), DynamicEvent("load", 0.5, 0.3, device="npu", utilisation=0.5))
    run = scenario(workload, 1.0, algorithm=algorithm, objective=objective, noise=noise, events=events, seed=4)
    fast = simulate(run, world=resnet_world)
    slow = simulate(run, world=resnet_world, coalesce=False)
    assert fast.op_executions == slow.op_executions > 1000
    np.testing.assert_allclose(fast.request_latency_s, slow.request_latency_s, rtol=0, atol=1e-12)


@pytest.mark.parametrize("policy", ["failover", "least-loaded", "periodic", "static"])
def test_coalesced_runs_equal_one_event_per_op_under_failures(resnet_world, policy):
    """Also when devices fail mid-run and adaptive policies decide from what they observed."""
    events = (DynamicEvent("fail", 0.3, 0.2, device="gpu0"), DynamicEvent("fail", 0.6, 0.1, device="npu"),
              DynamicEvent("slowdown", 0.1, 0.5, device="gpu1", factor=2.0))
    run = scenario(Workload("poisson", rate_per_s=500.0), 1.0, algorithm="auto", objective="throughput",
                   noise=Noise("lognormal", 0.1), events=events, seed=3,
                   policy=PolicySpec(policy, {"period": 0.05} if policy == "periodic" else {}))
    fast = simulate(run, world=resnet_world)
    slow = simulate(run, world=resnet_world, coalesce=False)
    assert fast.requests == slow.requests and fast.rebalances == slow.rebalances
    np.testing.assert_allclose(fast.request_latency_s, slow.request_latency_s, rtol=0, atol=1e-12)


def test_same_seed_same_result_and_seed_changes_it(resnet_world):
    run = scenario(Workload("poisson", rate_per_s=200.0), 1.0, algorithm="heft", noise=Noise("lognormal", 0.1),
                   policy=PolicySpec("periodic", {"period": 0.1}))
    first, second = simulate(run, world=resnet_world), simulate(run, world=resnet_world)
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    assert simulate(run, world=resnet_world, seed=5).to_dict() != first.to_dict()


def test_identical_results_across_processes(tmp_path):
    """Same scenario file and seed in fresh interpreters with different hash seeds: identical RESULT.json."""
    outputs = []
    for hash_seed in ("1", "2"):
        path = tmp_path / f"r{hash_seed}.json"
        code = ("from hetero.app.sim_outputs import run_scenario_file; "
                f"run_scenario_file({str(ROOT / 'examples/scenarios/gpu_failover.yaml')!r}, output={str(path)!r}, progress=False)")
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, capture_output=True)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_mm1_mean_latency():
    """Poisson arrivals, exponential service on one device: mean latency 1/(mu - lambda) within 2%."""
    graph = nx.DiGraph()
    graph.add_node("op")
    world = table_world(graph, {"op": {"cpu": 0.010}}, [], host="cpu")
    mu, lam = 100.0, 50.0
    run = scenario(Workload("poisson", rate_per_s=lam), 6000.0, noise=Noise("exponential", per="request"))
    result = simulate(run, world=world)
    assert result.requests["completed"] > 250_000
    assert result.latency_s["mean"] == pytest.approx(1 / (mu - lam), rel=0.02)
    assert result.utilisation["cpu"] == pytest.approx(lam / mu, rel=0.02)


def test_shared_link_contention():
    """Two transfers that start together on a shared link both take twice as long; dedicated, once."""
    for shared, expected in ((True, 2.0), (False, 1.0)):
        env = simpy.Environment()
        network = Network(env, [Link("a", "b", 0.0, 1000.0, shared)], host="a")
        arrivals = []
        for _ in range(2):
            network.send(1000, "a", "b", 0.0, lambda: arrivals.append(env.now))
        env.run()
        assert arrivals == pytest.approx([expected, expected])
        assert network.bytes_moved() == {"a -> b": 2000, "b -> a": 0}


def test_a_serial_group_carries_one_transfer_at_a_time_latency_included():
    """Links of one serial group (a device on another host: one actor call at a time) deliver
    transfers one after another, each its whole latency + bytes; other links overlap them."""
    env = simpy.Environment()
    links = [Link("far", "host", 0.5, 1000.0, serial="far"), Link("cpu", "far", 0.5, 1000.0, serial="far"),
             Link("cpu", "host", 0.5, 1000.0)]
    network = Network(env, links, host="host")
    arrivals: dict[str, list[float]] = {}
    for label, (src, dst) in {"up": ("host", "far"), "pair": ("cpu", "far"), "back": ("far", "host"),
                              "local": ("cpu", "host"), "local2": ("host", "cpu")}.items():
        network.send(500, src, dst, 0.0, lambda label=label: arrivals.setdefault(label, []).append(env.now))
    env.run()
    assert sorted(t for k in ("up", "pair", "back") for t in arrivals[k]) == pytest.approx([1.0, 2.0, 3.0])
    assert arrivals["local"] == arrivals["local2"] == pytest.approx([1.0])  # not in the group: at once


def test_shared_link_staggered_and_bandwidth_drop():
    env = simpy.Environment()
    factors = {frozenset(("a", "b")): [(1.5, 10.0, 0.5)]}
    network = Network(env, [Link("a", "b", 0.1, 1000.0, True)], host="a", factors=factors)
    arrivals = {}
    network.send(1000, "a", "b", 0.0, lambda: arrivals.setdefault("first", env.now))
    network.send(500, "a", "b", 0.5, lambda: arrivals.setdefault("second", env.now))
    env.run()
    # 0..0.5: first alone moves 500 B; from 0.5 both move at 500 B/s and would end at 1.5, but from
    # 1.5 the link runs at half speed... they end exactly then; plus 0.1 s latency each.
    assert arrivals == pytest.approx({"first": 1.6, "second": 1.6})
    env = simpy.Environment()
    network = Network(env, [Link("a", "b", 0.0, 1000.0, True)], host="a", factors=factors)
    arrivals = {}
    network.send(2000, "a", "b", 0.0, lambda: arrivals.setdefault("big", env.now))
    network.send(500, "a", "b", 1.0, lambda: arrivals.setdefault("small", env.now))
    env.run()
    # big: 1000 B alone by 1.0; 500 B/s each to 1.5 (250 B each); then 250 B/s each: small's last
    # 250 B end at 2.5, big has 500 left then alone at 500 B/s: ends at 3.5.
    assert arrivals == pytest.approx({"small": 2.5, "big": 3.5})


def test_rate_profile_finishes_across_changes():
    profile = RateProfile(1.0, [(1.0, 2.0, 0.5), (1.5, 3.0, 0.5)])
    assert profile.rates == [1.0, 0.5, 0.25, 0.5, 1.0]
    assert profile.finishes(0.0, [0.5, 1.0, 1.25, 1.5]) == pytest.approx([0.5, 1.0, 1.5, 2.25])
    assert profile.finish(3.0, 2.0) == pytest.approx(5.0)


def test_slowdown_stretches_ops_in_flight():
    """A slowdown that starts mid-op stretches the rest of it (work = integral of speed)."""
    graph = nx.DiGraph()
    graph.add_node("op")
    world = table_world(graph, {"op": {"cpu": 1.0}}, [], host="cpu")
    events = (DynamicEvent("slowdown", 0.5, None, device="cpu", factor=2.0),)
    result = simulate(scenario(ONE, events=events), world=world)
    assert result.latency_s["mean"] == pytest.approx(1.5)


def test_pipelining_overlaps_requests(resnet_world):
    """With stages on different devices, throughput beats 1/latency (several requests in flight)."""
    result = simulate(scenario(Workload("closed", clients=4), 0.5, algorithm="auto", objective="throughput"), world=resnet_world)
    assert result.throughput_per_s > 1.5 / result.predicted_makespan_s
    assert sum(1 for u in result.utilisation.values() if u > 0.2) >= 3


def test_trace_holds_every_op_and_transfer(resnet_world, tmp_path):
    from hetero.app.sim_outputs import write_trace

    result = simulate(scenario(Workload("closed", requests=3), algorithm="heft"), world=resnet_world, trace=True)
    computes = [e for e in result.trace if e.kind == "compute"]
    assert len(computes) == result.op_executions == 3 * len(resnet_world.graph)
    assert any(e.kind == "transfer" for e in result.trace)
    write_trace(tmp_path / "t.json", result)
    data = json.loads((tmp_path / "t.json").read_text())
    assert sum(1 for r in data["traceEvents"] if r.get("cat") == "compute") == len(computes)
