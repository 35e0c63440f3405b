"""Energy: the arithmetic on hand-computed cases, energy-aware schedules against brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hetero.cost.energy import DevicePower, EnergyModel
from hetero.cost.protocol import Link
from hetero.errors import InputError
from hetero.problem import Problem, problem_from_dict
from hetero.schedule import ScheduleError
from hetero.schedulers import compile_tasks, schedule
from hetero.schedulers.base import list_times, make_schedule


def test_device_energy_is_idle_over_the_span_plus_busy_above_idle():
    power = DevicePower(idle_W=0.4, busy_W=4.5)
    # 10 s of which 2 s busy: 0.4 * 10 + (4.5 - 0.4) * 2 = 4 + 8.2
    assert power.energy_J(10.0, 2.0) == pytest.approx(12.2)
    with pytest.raises(InputError, match="below idle_W"):
        DevicePower(idle_W=5.0, busy_W=1.0)


def _two_devices() -> Problem:
    """phone -> edge over a link of 1 MB/s and 2 uJ/byte; T0 on the phone, T1 on the edge by choice."""
    return problem_from_dict({
        "host": "phone",
        "devices": [{"name": "phone", "power": {"idle_W": 0.5, "busy_W": 4.0}},
                    {"name": "edge", "power": {"idle_W": 10.0, "busy_W": 70.0}}],
        "links": [{"src": "phone", "dst": "edge", "latency_s": 0.001, "bandwidth_Bps": 1e6, "energy_J_per_byte": 2e-6}],
        "tasks": {"T0": {"phone": 0.010, "edge": 0.001}, "T1": {"phone": 0.100, "edge": 0.002}},
        "edges": [{"src": "T0", "dst": "T1", "bytes": 1000}],
        "outputs": {"T1": 500},
    }, "two.json")


def test_schedule_energy_by_hand():
    problem = _two_devices()
    tasks = compile_tasks(problem.graph, problem.cost)
    placement = np.array([0, 1])  # T0 on the phone, T1 on the edge
    start, end = list_times(tasks, placement)
    plan = make_schedule(tasks, placement, start, end, "by-hand")
    # T0 0..0.010; 1000 B to the edge: 0.001 + 0.001 s, T1 0.012..0.014; 500 B back: 0.0015 s -> 0.0155 s
    assert plan.makespan_s == pytest.approx(0.0155)
    energy = problem.energy.schedule_J(plan)
    phone = 0.5 * 0.0155 + 3.5 * 0.010
    edge = 10.0 * 0.0155 + 60.0 * 0.002
    assert energy.devices_J == pytest.approx({"phone": phone, "edge": edge})
    assert energy.links_J == pytest.approx({"phone -> edge": 1000 * 2e-6, "edge -> phone": 500 * 2e-6})
    assert energy.total_J == pytest.approx(phone + edge + 1500 * 2e-6)
    terms = schedule(problem.graph, problem.cost, "dp", energy=problem.energy)
    assert terms.energy_J == pytest.approx(problem.energy.schedule_J(terms).total_J)


def test_a_route_through_the_host_pays_both_links():
    model = EnergyModel({}, [Link("h", "a", 0, 1, energy_J_per_byte=1.0), Link("h", "b", 0, 1, energy_J_per_byte=3.0)], "h")
    assert model.transfer_J(10, "a", "b") == 40.0 and model.transfer_J(10, "b", "h") == 30.0


def _random_chain(seed: int, n: int, k: int = 3) -> Problem:
    rng = np.random.default_rng(seed)
    devices = [f"D{j}" for j in range(k)]
    doc = {
        "host": "D0",
        "devices": [{"name": d, "power": {"idle_W": float(idle), "busy_W": float(idle + extra)}}
                    for d, idle, extra in zip(devices, rng.uniform(0, 5, k), rng.uniform(0, 50, k))],
        "links": [{"src": "D0", "dst": d, "latency_s": float(rng.uniform(0, 0.5)), "bandwidth_Bps": float(rng.uniform(5, 50)),
                   "energy_J_per_byte": float(rng.uniform(0, 0.5))} for d in devices[1:]],
        "tasks": {f"T{i}": {d: float(rng.uniform(0.1, 3)) for d in devices if d == "D0" or rng.random() > 0.15}
                  for i in range(n)},
        "edges": [{"src": f"T{i}", "dst": f"T{i + 1}", "bytes": int(rng.integers(0, 40))} for i in range(n - 1)],
        "inputs": {"T0": int(rng.integers(0, 20))},
        "outputs": {f"T{n - 1}": int(rng.integers(0, 20))},
    }
    return problem_from_dict(doc, f"chain{seed}")


def _every_placement(problem: Problem) -> list[tuple[float, float]]:
    """(makespan, energy) of every placement of a chain (list timing is optimal for a fixed chain placement)."""
    tasks = compile_tasks(problem.graph, problem.cost)
    found = []
    for combo in itertools.product(range(tasks.k), repeat=tasks.n):
        placement = np.array(combo, dtype=np.int64)
        if not np.isfinite(tasks.compute_s[np.arange(tasks.n), placement]).all():
            continue
        start, end = list_times(tasks, placement)
        plan = make_schedule(tasks, placement, start, end, "brute")
        found.append((plan.makespan_s, problem.energy.schedule_J(plan).total_J))
    return found


@pytest.mark.parametrize("seed", range(40))
def test_energy_objective_equals_brute_force_on_chains(seed):
    problem = _random_chain(seed, n=2 + seed % 5)
    every = _every_placement(problem)
    least = min(e for _, e in every)
    for algorithm in ("dp", "auto"):
        result = schedule(problem.graph, problem.cost, algorithm, "energy", energy=problem.energy)
        assert result.objective == "energy"
        assert result.energy_J == pytest.approx(least, rel=1e-9, abs=1e-12)
    alone = schedule(problem.graph, problem.cost, "single", "energy", energy=problem.energy)
    tasks = compile_tasks(problem.graph, problem.cost)
    singles = [e for (m, e), combo in zip(every, (c for c in itertools.product(range(tasks.k), repeat=tasks.n)
                                                  if np.isfinite(tasks.compute_s[np.arange(tasks.n), list(c)]).all()))
               if len(set(combo)) == 1]
    assert alone.energy_J == pytest.approx(min(singles), rel=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_latency_within_an_energy_budget_equals_brute_force_on_chains(seed):
    problem = _random_chain(100 + seed, n=2 + seed % 5)
    every = _every_placement(problem)
    energies = sorted(e for _, e in every)
    budget = energies[len(energies) // 3]  # some placements fit, some do not
    best = min(m for m, e in every if e <= budget * (1 + 1e-9))
    for algorithm in ("dp", "auto"):
        result = schedule(problem.graph, problem.cost, algorithm, "latency", energy=problem.energy, energy_budget_J=budget)
        assert result.makespan_s == pytest.approx(best, rel=1e-9)
        assert result.energy_J <= budget * (1 + 1e-9)
    unbounded = schedule(problem.graph, problem.cost, "dp", energy=problem.energy)
    assert unbounded.makespan_s == pytest.approx(min(m for m, _ in every), rel=1e-9)


def test_a_budget_below_the_least_energy_is_refused_with_the_least():
    problem = _random_chain(7, n=4)
    least = min(e for _, e in _every_placement(problem))
    with pytest.raises(ScheduleError, match=r"energy budget of .* J per request \(the least energy is "):
        schedule(problem.graph, problem.cost, "dp", energy=problem.energy, energy_budget_J=least * 0.9)


@pytest.mark.parametrize("algorithm", ["heft", "peft", "greedy", "pipeline"])
def test_algorithms_that_cannot_plan_for_energy_refuse(algorithm):
    problem = _random_chain(3, n=3)
    with pytest.raises(InputError, match=f"algorithm {algorithm} does not plan for energy; use one of auto, dp, single, ilp"):
        schedule(problem.graph, problem.cost, algorithm, "energy", energy=problem.energy)


def test_energy_needs_power_figures():
    problem = _random_chain(3, n=3)
    with pytest.raises(InputError, match="needs device power figures"):
        schedule(problem.graph, problem.cost, "dp", "energy")
    partial = EnergyModel({"D0": DevicePower(1, 2)}, [], "D0")
    with pytest.raises(InputError, match="device D1 has no power figures"):
        schedule(problem.graph, problem.cost, "dp", "energy", energy=partial)
    with pytest.raises(InputError, match="applies to the latency objective"):
        schedule(problem.graph, problem.cost, "dp", "throughput", energy=problem.energy, energy_budget_J=1.0)
    assert math.isfinite(schedule(problem.graph, problem.cost, "heft", energy=problem.energy).energy_J)


def test_rapl_power_from_the_counters(tmp_path, monkeypatch):
    """RAPL's energy_uj counters read over an idle and a busy span give watts; a counter that wraps is
    unwrapped. The spans run on a simulated clock (each sleep advances it exactly), so the figures do
    not depend on how late a loaded machine wakes a sleeping thread (0.356 s for a 0.3 s span seen)."""
    import types

    from hetero.cost import power
    from hetero.cost.power import measure_power

    now = [0.0]
    clock = types.SimpleNamespace(perf_counter=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    monkeypatch.setattr(power, "time", clock)

    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("999000000\n")
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a subzone (core), not counted again

    calls = []

    def busy() -> None:  # each unit of work: 0.02 s and 1 J on the counter, wrapping past its range
        calls.append(1)
        value = (int((zone / "energy_uj").read_text()) + 1_000_000) % 1_000_000_000
        (zone / "energy_uj").write_text(f"{value}\n")
        clock.sleep(0.02)

    entry = measure_power("cpu", 0, busy, seconds=0.3, powercap=tmp_path)
    assert entry["idle_W"] == pytest.approx(0.0, abs=1e-9)
    assert entry["busy_W"] == pytest.approx(len(calls) / 0.3, rel=0.15)  # 1 J a call over the 0.3 s busy span
    assert "RAPL intel-rapl:0" in entry["source"]
    missing = measure_power("cpu", 0, busy, powercap=tmp_path / "absent")
    assert "no RAPL driver" in missing["unavailable"]
    assert "NVIDIA" in measure_power("opencl", 0, busy)["unavailable"]


def _random_dag(seed: int, n: int, k: int) -> Problem:
    rng = np.random.default_rng(seed)
    devices = [f"D{j}" for j in range(k)]
    edges = sorted({(int(u), int(v)) for v in range(1, n) for u in rng.choice(v, size=min(v, int(rng.integers(1, 3))), replace=False)})
    doc = {
        "host": "D0",
        "devices": [{"name": d, "power": {"idle_W": float(idle), "busy_W": float(idle + extra)}}
                    for d, idle, extra in zip(devices, rng.uniform(0, 3, k), rng.uniform(0, 30, k))],
        "links": [{"src": "D0", "dst": d, "latency_s": float(rng.uniform(0, 0.3)), "bandwidth_Bps": float(rng.uniform(5, 50)),
                   "energy_J_per_byte": float(rng.uniform(0, 0.3))} for d in devices[1:]],
        "tasks": {f"T{i}": {d: float(rng.uniform(0.1, 3)) for d in devices} for i in range(n)},
        "edges": [{"src": f"T{u}", "dst": f"T{v}", "bytes": int(rng.integers(0, 30))} for u, v in edges],
    }
    return problem_from_dict(doc, f"dag{seed}")


def _every_schedule(problem: Problem) -> list[tuple[float, float]]:
    """(makespan, energy) of every placement in every topological order: every semi-active schedule."""
    tasks = compile_tasks(problem.graph, problem.cost)
    preds = [set(tasks.edge_src[tasks.pred_edges[i]].tolist()) for i in range(tasks.n)]
    orders = [order for order in itertools.permutations(range(tasks.n))
              if all(preds[v] <= set(order[:position]) for position, v in enumerate(order))]
    found = []
    for combo in itertools.product(range(tasks.k), repeat=tasks.n):
        placement = np.array(combo, dtype=np.int64)
        makespan = min(make_schedule(tasks, placement, *list_times(tasks, placement, order=order), "brute").makespan_s
                       for order in orders)
        found.append((makespan, problem.energy.idle_W(tasks.devices) * makespan + _dynamic(problem, tasks, placement)))
    return found


def _dynamic(problem: Problem, tasks, placement) -> float:
    from hetero.schedulers.base import energy_terms

    return energy_terms(tasks, problem.energy).dynamic_J(tasks, placement)


@pytest.mark.parametrize("seed", range(8))
def test_ilp_energy_goals_equal_brute_force_on_small_dags(seed):
    problem = _random_dag(200 + seed, n=3 + seed % 3, k=2 + seed % 2)
    every = _every_schedule(problem)
    least = min(e for _, e in every)
    for algorithm in ("ilp", "auto"):
        result = schedule(problem.graph, problem.cost, algorithm, "energy", energy=problem.energy, time_limit_s=20)
        assert result.energy_J == pytest.approx(least, rel=1e-6)
    budget = sorted(e for _, e in every)[len(every) // 3]
    best = min(m for m, e in every if e <= budget * (1 + 1e-9))
    within = schedule(problem.graph, problem.cost, "ilp", energy=problem.energy, energy_budget_J=budget, time_limit_s=20)
    assert within.makespan_s == pytest.approx(best, rel=1e-6) and within.energy_J <= budget * (1 + 1e-6)


def test_hetero_schedule_objective_energy_and_budget(tmp_path, capsys):
    import json

    from hetero.app.cli import main
    from hetero.problem import write_problem

    problem = _random_chain(11, n=5)
    path = tmp_path / "p.json"
    write_problem(path, problem)
    every = _every_placement(problem)
    assert main(["schedule", "--problem", str(path), "--objective", "energy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy_J"] == pytest.approx(min(e for _, e in every), rel=1e-9)
    budget = sorted(e for _, e in every)[len(every) // 2]
    assert main(["schedule", "--problem", str(path), "--energy-budget", str(budget)]) == 0
    out = capsys.readouterr().out
    assert "predicted energy: " in out and " J per request (D0 " in out
    assert main(["schedule", "--problem", str(path), "--objective", "energy", "--algorithm", "heft"]) == 1
    assert "hetero: error: objective energy: algorithm heft does not plan for energy" in capsys.readouterr().err
    assert main(["schedule", "builtin:seed-cnn", "--devices", "rpi5-cpu,jetson-orin-nano-gpu", "--objective", "energy",
                 "--precision", "fp32"]) == 0
    assert "predicted energy: " in capsys.readouterr().out


def test_latency_plans_report_energy_only_when_every_device_has_power():
    problem = _random_chain(5, n=3)
    partial = EnergyModel({"D0": DevicePower(1, 2)}, [], "D0")
    assert schedule(problem.graph, problem.cost, "heft", energy=partial).energy_J is None
    assert schedule(problem.graph, problem.cost, "heft", energy=problem.energy).energy_J > 0


def test_ilp_refuses_a_budget_nothing_meets():
    problem = _random_dag(300, n=4, k=2)
    least = min(e for _, e in _every_schedule(problem))
    with pytest.raises(ScheduleError, match="energy budget of"):
        schedule(problem.graph, problem.cost, "ilp", energy=problem.energy, energy_budget_J=least * 0.8, time_limit_s=20)
