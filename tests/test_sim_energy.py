"""The simulator's energy figures by hand, its own numbers (throughput, end), and the energy fields of a scenario."""

from __future__ import annotations

import json

import networkx as nx
import pytest

from hetero.cost.energy import DevicePower
from hetero.cost.protocol import Link
from hetero.errors import ScenarioError
from hetero.sim import Scenario, parse_scenario, simulate, table_world
from hetero.sim.scenario import DynamicEvent, PolicySpec, Workload


def scenario(workload: Workload, duration_s: float = 1e9, **fields) -> Scenario:
    return Scenario(model="", devices=(), workload=workload, duration_s=duration_s, **fields)


def _chain_world(power: dict[str, DevicePower] | None, energy_J_per_byte: float = 0.0):
    """a (on the phone) -> b (only on the edge): 1000 bytes cross a 1 MB/s link each request."""
    graph = nx.DiGraph(name="two", task_graph=True)
    graph.add_node("a", output_bytes=1000)
    graph.add_node("b", output_bytes=10)
    graph.add_edge("a", "b", nbytes=1000)
    link = Link("phone", "edge", 0.0, 1e6, energy_J_per_byte=energy_J_per_byte)
    return table_world(graph, {"a": {"phone": 0.010}, "b": {"edge": 0.002}}, [link], host="phone",
                       devices=("phone", "edge"), power=power)


def test_energy_of_a_run_by_hand():
    power = {"phone": DevicePower(0.5, 4.0), "edge": DevicePower(10.0, 70.0)}
    world = _chain_world(power, energy_J_per_byte=2e-6)
    result = simulate(scenario(Workload("closed", requests=10)), world=world)
    # each request: a 10 ms on the phone, 1 ms over the link, b 2 ms on the edge: 13 ms, back to back
    assert result.latency_s["mean"] == pytest.approx(0.013)
    assert result.end_s == pytest.approx(0.130)
    phone = 0.5 * 0.130 + 3.5 * 0.100
    edge = 10.0 * 0.130 + 60.0 * 0.020
    data = result.to_dict()
    assert data["energy_J"]["devices"] == pytest.approx({"phone": phone, "edge": edge})
    assert data["energy_J"]["links"] == pytest.approx({"phone -> edge": 10 * 1000 * 2e-6, "edge -> phone": 0.0})
    assert data["energy_J"]["total"] == pytest.approx(phone + edge + 0.02)
    assert data["energy_per_request_J"] == pytest.approx((phone + edge + 0.02) / 10)
    assert json.loads(json.dumps(data))["energy_per_request_J"] == data["energy_per_request_J"]  # top-level number


def test_devices_without_power_are_named_and_draw_nothing():
    world = _chain_world({"phone": DevicePower(0.5, 4.0)})
    result = simulate(scenario(Workload("closed", requests=2)), world=world)
    assert result.energy_J["without_power"] == ["edge"] and set(result.energy_J["devices"]) == {"phone"}
    assert simulate(scenario(Workload("closed", requests=2)), world=_chain_world(None)).energy_J is None


def test_the_energy_objective_plans_for_energy_in_the_simulator():
    """b runs on the phone too, slower but cheaper: objective energy keeps both ops on the phone."""
    graph = nx.DiGraph(name="two", task_graph=True)
    graph.add_nodes_from(["a", "b"])
    graph.add_edge("a", "b", nbytes=1000)
    link = Link("phone", "edge", 0.0, 1e6, energy_J_per_byte=2e-6)
    power = {"phone": DevicePower(0.5, 4.0), "edge": DevicePower(1.0, 70.0)}
    world = table_world(graph, {"a": {"phone": 0.010}, "b": {"phone": 0.020, "edge": 0.002}}, [link], host="phone",
                        devices=("phone", "edge"), power=power)
    fast = simulate(scenario(Workload("closed", requests=5)), world=world)
    frugal = simulate(scenario(Workload("closed", requests=5), objective="energy"), world=world)
    assert fast.plans[0]["ops_per_device"] == {"phone": 1, "edge": 1}
    assert frugal.plans[0]["ops_per_device"] == {"phone": 2}
    assert frugal.energy_per_request_J < fast.energy_per_request_J and frugal.latency_s["mean"] > fast.latency_s["mean"]
    budget = simulate(scenario(Workload("closed", requests=5), energy_budget_J=frugal.energy_per_request_J * 1.01),
                      world=world)
    assert budget.plans[0]["ops_per_device"] == {"phone": 2}


def test_throughput_is_over_the_time_requests_were_served():
    """A closed loop of one client over a 0.067 ms op with requests: N: ~15,000/s, and the run ends with the last one."""
    graph = nx.DiGraph()
    graph.add_node("op")
    world = table_world(graph, {"op": {"cpu": 0.067e-3}}, [], host="cpu")
    result = simulate(scenario(Workload("closed", requests=300), duration_s=20.0), world=world)
    assert result.throughput_per_s == pytest.approx(1 / 0.067e-3, rel=1e-6)
    assert result.end_s == pytest.approx(300 * 0.067e-3) and result.served_s == pytest.approx(300 * 0.067e-3)
    assert result.utilisation["cpu"] == pytest.approx(1.0)
    # an open workload that runs to the duration reports over the duration
    open_loop = simulate(scenario(Workload("poisson", rate_per_s=2000.0), duration_s=2.0), world=world)
    assert open_loop.end_s == pytest.approx(2.0, abs=1e-3)
    assert open_loop.throughput_per_s == pytest.approx(2000.0, rel=0.05)


def test_a_recovery_after_the_end_does_not_extend_the_run():
    graph = nx.DiGraph()
    graph.add_node("op")
    world = table_world(graph, {"op": {"cpu": 1e-3, "gpu": 1e-3}}, [Link("cpu", "gpu", 0.0, 1e9)], host="cpu")
    events = (DynamicEvent("fail", 1.5, 10.0, device="gpu"),)
    result = simulate(scenario(Workload("poisson", rate_per_s=100.0), duration_s=2.0, events=events,
                               policy=PolicySpec("failover")), world=world)
    assert result.end_s == pytest.approx(2.0, abs=0.01)


BASE = """\
model: builtin:seed-cnn
host: phone
devices:
  - {name: phone, spec: snapdragon-8gen2-cpu, power: {idle: 400 mW, busy: 4.5 W}}
  - {name: edge, spec: nvidia-t4}
links:
  - {between: [phone, edge], latency: 5 ms, bandwidth: 50 Mbit/s, energy: 300 nJ/bit}
workload: {kind: closed, requests: 3}
scheduler: {algorithm: dp, objective: latency, energy_budget: 20 mJ}
events:
  - {at: 1 s, kind: slowdown, device: phone, factor: 2}
duration: 10 s
"""


def test_energy_fields_and_units_parse():
    parsed = parse_scenario(BASE)
    assert parsed.devices[0].power == DevicePower(0.4, 4.5, parsed.devices[0].power.source)
    assert parsed.devices[1].power is None
    assert parsed.links[0].energy_J_per_byte == pytest.approx(300e-9 * 8)
    assert parsed.energy_budget_J == pytest.approx(0.02)
    wifi = parse_scenario(BASE.replace("energy: 300 nJ/bit", "energy: wifi"))
    assert wifi.links[0].energy_J_per_byte == pytest.approx(8 * 2.8317e-7)
    per_byte = parse_scenario(BASE.replace("energy: 300 nJ/bit", "energy: 2.4 uJ/byte"))
    assert per_byte.links[0].energy_J_per_byte == pytest.approx(2.4e-6)
    bare = parse_scenario(BASE.replace("energy: 300 nJ/bit", "energy: 2e-6"))  # joules per byte
    assert bare.links[0].energy_J_per_byte == pytest.approx(2e-6)


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("busy: 4.5 W", "busy: 4.5 V", 4, "devices[0].power.busy '4.5 V' is not a power (e.g. '4.5 W' or '400 mW'; units: W, mW, kW)"),
        ("busy: 4.5 W", "bussy: 4.5 W", 4, "devices[0].power.bussy is not a known field (allowed: idle, busy); did you mean 'busy'?"),
        ("busy: 4.5 W", "busy: 300 mW", 4, "devices[0].power.busy 0.3 W is below idle 0.4 W"),
        ("energy: 300 nJ/bit", "energy: 300 nJ/bits", 7, "links[0].energy '300 nJ/bits' is not a link energy"),
        ("energy: 300 nJ/bit", "energy: wify", 7, "links[0].energy 'wify' is not a link energy (a link class: wifi"),
        ("energy_budget: 20 mJ", "energy_budget: 20 mW", 9, "scheduler.energy_budget '20 mW' is not an energy"),
        ("objective: latency, energy_budget", "objective: energy, energy_budget", 9,
         "scheduler.energy_budget bounds the latency objective's energy per request; with objective energy leave it out"),
        ("at: 1 s", "at: 12 s", 11, "events[0].at 12 s is not before the end of the scenario (duration 10 s)"),
        ("at: 1 s", "at: 10 s", 11, "events[0].at 10 s is not before the end of the scenario"),
        ("algorithm: dp, objective: latency", "algorithm: heft, objective: latency", 9,
         "scheduler.algorithm 'heft' does not plan for energy (objective latency, energy_budget); use one of auto, dp, single, ilp"),
    ],
)
def test_energy_field_errors_name_file_line_and_field(old, new, line, message):
    assert old in BASE
    with pytest.raises(ScenarioError) as err:
        parse_scenario(BASE.replace(old, new), "s.yaml")
    assert str(err.value).startswith(f"s.yaml:{line}: ")
    assert message in str(err.value)


def test_an_objective_event_replans_for_energy_when_the_battery_runs_low():
    graph = nx.DiGraph(name="two", task_graph=True)
    graph.add_nodes_from(["a", "b"])
    graph.add_edge("a", "b", nbytes=1000)
    link = Link("phone", "edge", 0.0, 1e6, energy_J_per_byte=2e-6)
    power = {"phone": DevicePower(0.5, 4.0), "edge": DevicePower(1.0, 70.0)}
    world = table_world(graph, {"a": {"phone": 0.010}, "b": {"phone": 0.020, "edge": 0.002}}, [link], host="phone",
                        devices=("phone", "edge"), power=power)
    low = (DynamicEvent("objective", 1.0, objective="energy"),)
    result = simulate(scenario(Workload("poisson", rate_per_s=20.0), 2.0, events=low, policy=PolicySpec("failover")),
                      world=world)
    assert [(p["why"], p["ops_per_device"]) for p in result.plans] == [
        ("initial", {"phone": 1, "edge": 1}), ("objective energy", {"phone": 2})]
    assert result.plans[1]["at_s"] == 1.0 and result.events[0]["objective"] == "energy"
    static = simulate(scenario(Workload("poisson", rate_per_s=20.0), 2.0, events=low), world=world)
    assert len(static.plans) == 1  # the static policy keeps its plan
    text = BASE.replace("  - {at: 1 s, kind: slowdown, device: phone, factor: 2}",
                        "  - {at: 1 s, kind: objective, objective: latency, energy_budget: 5 mJ}")
    event = parse_scenario(text).events[0]
    assert (event.kind, event.objective, event.energy_budget_J) == ("objective", "latency", pytest.approx(0.005))
    with pytest.raises(ScenarioError, match=r"s.yaml:11: events\[0\].objective 'power' is not one of latency, throughput, energy"):
        parse_scenario(text.replace("kind: objective, objective: latency", "kind: objective, objective: power"), "s.yaml")
