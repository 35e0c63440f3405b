"""Schedulers: known answers, exactness against brute force, and validity on random problems."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetero.errors import InputError
from hetero.problem import Problem, load_problem, problem_from_dict
from hetero.schedule import ScheduleError
from hetero.schedulers import algorithm_names, compile_tasks, schedule
from hetero.schedulers import ilp as ilp_module
from hetero.schedulers.base import list_times, make_schedule
from hetero.schedulers.dp import segments
from hetero.schedulers.heft import priority_order, upward_ranks
from hetero.schedulers.peft import optimistic_cost_table
from hetero.schedulers.pipeline import pipeline_period
from hetero.app.summary import json_summary, schedule_summary, summary_lines

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems"
HEURISTICS = ("single", "greedy", "dp", "heft", "peft")


@pytest.fixture(scope="module")
def paper() -> Problem:
    return load_problem(EXAMPLES / "heft_paper.json")


def test_heft_paper_ranks_order_and_makespan_80(paper: Problem) -> None:
    tasks = compile_tasks(paper.graph, paper.cost)
    ranks = dict(zip(tasks.names, upward_ranks(tasks)))
    published = {"n1": 108.0, "n2": 77.0, "n3": 80.0, "n4": 80.0, "n5": 69.0, "n6": 63.333, "n7": 42.667,
                 "n8": 35.667, "n9": 44.333, "n10": 14.667}
    for name, rank in published.items():
        assert ranks[name] == pytest.approx(rank, abs=1e-3), name
    order = [tasks.names[i] for i in priority_order(upward_ranks(tasks))]
    assert order == ["n1", "n3", "n4", "n2", "n5", "n6", "n9", "n7", "n8", "n10"]
    result = schedule(paper.graph, paper.cost, "heft")
    assert result.makespan_s == 80.0
    slots = {s.node: (s.device, s.start_s, s.end_s) for s in result.slots}
    assert slots == {
        "n1": ("P3", 0, 9), "n3": ("P3", 9, 28), "n4": ("P2", 18, 26), "n2": ("P1", 27, 40), "n5": ("P3", 28, 38),
        "n6": ("P2", 26, 42), "n9": ("P2", 56, 68), "n7": ("P3", 38, 49), "n8": ("P1", 57, 62), "n10": ("P2", 73, 80),
    }


def test_ilp_beats_heft_on_the_paper_example(paper: Problem) -> None:
    result = schedule(paper.graph, paper.cost, "ilp")
    assert result.makespan_s <= 80.0
    assert result.makespan_s == pytest.approx(73.0)
    assert any(note.startswith("ilp: optimal") for note in result.notes)


def test_peft_optimistic_cost_table_by_hand() -> None:
    # a -> b -> c on two devices, mean transfer 2 per edge; c costs (1, 5), b costs (4, 1).
    doc = {
        "devices": ["x", "y"],
        "links": [{"src": "x", "dst": "y", "latency_s": 0, "bandwidth_Bps": 1}],
        "tasks": {"a": {"x": 1, "y": 1}, "b": {"x": 4, "y": 1}, "c": {"x": 1, "y": 5}},
        "edges": [{"src": "a", "dst": "b", "bytes": 2}, {"src": "b", "dst": "c", "bytes": 2}],
    }
    problem = problem_from_dict(doc)
    table = optimistic_cost_table(compile_tasks(problem.graph, problem.cost))
    # OCT(b, x) = min(0 + 1, 0 + 5 + 2) = 1; OCT(b, y) = min(1 + 2, 5) = 3
    # OCT(a, x) = min(1 + 4, 3 + 1 + 2) = 5; OCT(a, y) = min(1 + 4 + 2, 3 + 1) = 4
    assert table.tolist() == [[5, 4], [1, 3], [0, 0]]
    result = schedule(problem.graph, problem.cost, "peft")
    result.validate(problem.graph, problem.cost)


# ---------------------------------------------------------------- random problems


@st.composite
def problems(
    draw, max_tasks: int = 7, max_devices: int = 3, chain: bool = False, io: bool = True, capacities: bool = True,
    positive: bool = False,
):
    n = draw(st.integers(1, max_tasks))
    k = draw(st.integers(1, max_devices))
    devices = [f"D{j}" for j in range(k)]
    seconds = st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0] + ([] if positive else [0.0]))
    tasks = {}
    for i in range(n):
        allowed = draw(st.lists(st.sampled_from(devices), min_size=1, max_size=k, unique=True))
        tasks[f"T{i}"] = {d: draw(seconds) for d in allowed}
    if chain:
        pairs = [(i, i + 1) for i in range(n - 1)]
    else:
        pairs = [(i, j) for j in range(n) for i in range(j) if draw(st.booleans())]
    edges = [{"src": f"T{i}", "dst": f"T{j}", "bytes": draw(st.integers(0, 20))} for i, j in pairs]
    links = [{"src": "D0", "dst": d, "latency_s": draw(st.sampled_from([0.0, 0.5, 1.0])),
              "bandwidth_Bps": draw(st.sampled_from([1.0, 4.0, 10.0]))} for d in devices[1:]]
    for a, b in itertools.combinations(devices[1:], 2):
        if draw(st.booleans()):
            links.append({"src": a, "dst": b, "latency_s": 0.25, "bandwidth_Bps": 2.0})
    doc = {"devices": [], "links": links, "tasks": tasks, "edges": edges}
    for d in devices:
        limit = draw(st.one_of(st.none(), st.integers(0, 120))) if capacities and d != "D0" else None
        doc["devices"].append(d if limit is None else {"name": d, "memory_bytes": limit})
    if io and draw(st.booleans()):
        doc["inputs"] = {"T0": draw(st.integers(1, 10))}
        doc["outputs"] = {f"T{n - 1}": draw(st.integers(1, 10))}
    if capacities:
        doc["task_memory"] = {f"T{i}": {"weight_bytes": draw(st.integers(0, 30))} for i in range(n) if draw(st.booleans())}
    return problem_from_dict(doc, "hypothesis")


def _run(problem: Problem, algorithm: str, **options):
    """A validated schedule, or None when the algorithm is allowed to find none for this problem."""
    try:
        result = schedule(problem.graph, problem.cost, algorithm, memory_bytes=problem.memory_bytes, **options)
    except ScheduleError as err:
        capped = bool(problem.memory_bytes)
        whole = algorithm in ("single", "dp", "pipeline")
        assert capped or whole, f"{algorithm} failed without memory limits: {err}"
        assert "\n" not in str(err)
        return None
    result.validate(problem.graph, problem.cost, problem.memory_bytes)
    for node, device in result.placement.items():
        assert problem.cost.can_run(node, device)
    return result


@pytest.mark.parametrize("algorithm", ["auto", *HEURISTICS, "pipeline"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_every_scheduler_is_valid_on_random_dags(algorithm: str, problem: Problem) -> None:
    _run(problem, algorithm)
    throughput = _run(problem, algorithm, objective="throughput")
    if throughput is not None:
        assert throughput.objective == "throughput" and throughput.period_s is not None
        busiest_device = max(
            sum(s.end_s - s.start_s for s in throughput.slots if s.device == d) for d in throughput.devices
        )
        assert throughput.period_s >= busiest_device - 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_tasks=6))
def test_ilp_is_valid_on_random_dags(problem: Problem) -> None:
    _run(problem, "ilp", time_limit_s=20)


def _brute_force_chain(problem: Problem, objective: str = "latency") -> float:
    """The best makespan (or period) over every placement of a chain, by enumeration."""
    tasks = compile_tasks(problem.graph, problem.cost, problem.memory_bytes)
    best = math.inf
    for combo in itertools.product(range(tasks.k), repeat=tasks.n):
        placement = np.array(combo, dtype=np.int64)
        if not np.isfinite(tasks.compute_s[np.arange(tasks.n), placement]).all():
            continue
        if objective == "throughput":
            stages = [d for d, _ in itertools.groupby(combo)]
            if len(stages) != len(set(stages)):
                continue  # pipeline stages are contiguous, one device each
        start, end = list_times(tasks, placement)
        result = make_schedule(tasks, placement, start, end, "brute")
        if any(result.memory_bytes[d] > problem.memory_bytes.get(d, math.inf) for d in tasks.devices):
            continue
        best = min(best, pipeline_period(tasks, placement) if objective == "throughput" else result.makespan_s)
    return best


@settings(max_examples=150, deadline=None)
@given(problem=problems(max_tasks=6, chain=True, io=False, positive=True))
def test_dp_equals_brute_force_on_chains(problem: Problem) -> None:
    """Exact under memory capacities too (a zero-second task would free its input as its output appears)."""
    assert all(end - start == 0 for start, end in segments(compile_tasks(problem.graph, problem.cost)))
    best = _brute_force_chain(problem)
    result = _run(problem, "dp")
    if result is None:
        assert best == math.inf
    else:
        assert result.makespan_s == pytest.approx(best, rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(problem=problems(max_tasks=6, chain=True, io=True, capacities=False))
def test_dp_equals_brute_force_on_chains_with_graph_io(problem: Problem) -> None:
    result = _run(problem, "dp")
    assert result is not None
    assert result.makespan_s == pytest.approx(_brute_force_chain(problem), rel=1e-9, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(problem=problems(max_tasks=5, chain=True, io=True, capacities=False))
def test_ilp_equals_brute_force_on_chains(problem: Problem) -> None:
    result = _run(problem, "ilp", time_limit_s=20)
    assert result is not None
    assert result.makespan_s == pytest.approx(_brute_force_chain(problem), rel=1e-6, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(problem=problems(max_tasks=6, chain=True, io=True, capacities=False))
def test_pipeline_equals_brute_force_on_chains(problem: Problem) -> None:
    result = _run(problem, "dp", objective="throughput")
    best = _brute_force_chain(problem, "throughput")
    if result is None:
        assert best == math.inf
    else:
        assert result.algorithm == "pipeline"
        assert result.period_s == pytest.approx(best, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_tasks=6, capacities=False))
def test_ilp_is_never_worse_than_any_heuristic(problem: Problem) -> None:
    exact = _run(problem, "ilp", time_limit_s=30)
    assert exact is not None
    for algorithm in HEURISTICS:
        other = _run(problem, algorithm)
        if other is not None:
            assert exact.makespan_s <= other.makespan_s * (1 + 1e-5) + 1e-9, (algorithm, exact.notes)


def _heuristic_makespans(problem: Problem) -> dict[str, float]:
    found = {}
    for algorithm in HEURISTICS:
        other = _run(problem, algorithm)
        if other is not None:
            found[algorithm] = other.makespan_s
    return found


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(max_tasks=6))
def test_milp_reported_optimal_is_never_beaten_under_memory(problem: Problem) -> None:
    """The MILP on its own (no heuristic safety net) counts memory as Schedule does: no heuristic's
    validated schedule beats an optimum it reports, and it finds a schedule whenever one does."""
    tasks = compile_tasks(problem.graph, problem.cost, problem.memory_bytes)
    others = _heuristic_makespans(problem)
    try:
        alone = ilp_module.ilp(tasks, time_limit_s=30, safety_net=False)
    except ScheduleError as err:
        assert not others, f"the MILP found no schedule ({err}) but {others} did"
        return
    alone.validate(problem.graph, problem.cost, problem.memory_bytes)
    assert alone.algorithm == "ilp"
    if any(note.startswith("ilp: optimal") for note in alone.notes):
        for algorithm, makespan in others.items():
            assert alone.makespan_s <= makespan * (1 + 1e-5) + 1e-9, (algorithm, makespan, alone.makespan_s)


def test_ilp_on_edge_soc_is_optimal_under_memory_and_names_what_it_returns() -> None:
    problem = load_problem(EXAMPLES / "edge_soc.json")
    tasks = compile_tasks(problem.graph, problem.cost, problem.memory_bytes)
    alone = ilp_module.ilp(tasks, safety_net=False)
    alone.validate(problem.graph, problem.cost, problem.memory_bytes)
    assert any(note.startswith("ilp: optimal") for note in alone.notes)
    others = _heuristic_makespans(problem)
    assert min(others.values()) >= alone.makespan_s * (1 - 1e-9), others
    returned = schedule(problem.graph, problem.cost, "ilp", memory_bytes=problem.memory_bytes)
    assert returned.algorithm == "ilp" and returned.makespan_s == pytest.approx(alone.makespan_s, rel=1e-9)
    auto = schedule(problem.graph, problem.cost, memory_bytes=problem.memory_bytes)
    assert auto.algorithm == "ilp", auto.notes


# ---------------------------------------------------------------- memory, capability, models


def test_memory_capacity_is_respected_by_every_algorithm() -> None:
    problem = load_problem(EXAMPLES / "edge_soc.json")
    uncapped = schedule(problem.graph, problem.cost, "heft")
    assert uncapped.memory_bytes["npu"] > problem.memory_bytes["npu"], "the example's NPU limit must bind"
    for algorithm in algorithm_names():
        try:
            result = schedule(problem.graph, problem.cost, algorithm, memory_bytes=problem.memory_bytes)
        except ScheduleError:
            assert algorithm == "single"
            continue
        result.validate(problem.graph, problem.cost, problem.memory_bytes)
        assert result.memory_bytes["npu"] <= problem.memory_bytes["npu"], algorithm
    with pytest.raises(ScheduleError, match="fits in the memory of none"):
        schedule(problem.graph, problem.cost, "heft", memory_bytes={"cpu": 1, "gpu": 1, "npu": 1})


def test_no_kernel_means_never_placed_there() -> None:
    doc = {
        "devices": ["cpu", "fast"],
        "links": [{"src": "cpu", "dst": "fast", "latency_s": 0, "bandwidth_Bps": 1e9}],
        "tasks": {f"t{i}": ({"cpu": 10} if i % 3 == 1 else {"cpu": 10, "fast": 1}) for i in range(9)},
        "edges": [{"src": f"t{i}", "dst": f"t{i + 1}", "bytes": 1} for i in range(8)],
    }
    problem = problem_from_dict(doc)
    for algorithm in algorithm_names():
        result = schedule(problem.graph, problem.cost, algorithm)
        assert all(result.placement[f"t{i}"] == "cpu" for i in range(1, 9, 3)), algorithm
    with pytest.raises(ScheduleError, match="single: no device can run every task"):
        schedule(problem.graph, problem.cost, "single", memory_bytes={"cpu": 0})


def test_model_graph_inputs_start_and_outputs_end_on_the_host() -> None:
    from hetero.ir.source import load_graph
    from workloads import roofline_problem

    graph = load_graph("builtin:seed-cnn")
    problem = roofline_problem(graph)
    for algorithm in algorithm_names():
        result = schedule(graph, problem.cost, algorithm)
        result.validate(graph, problem.cost)
        first, last = next(graph.ops_in_order()).name, list(graph.ops_in_order())[-1].name
        if result.placement[first] != "cpu":
            assert any(t.dst_node == first and t.src_device == "cpu" for t in result.transfers)
        if result.placement[last] != "cpu":
            assert any(t.src_node == last and t.dst_device == "cpu" for t in result.transfers)


def test_auto_says_which_algorithm_it_picked(paper: Problem) -> None:
    from workloads import chain, fork_join, random_problem

    rng = np.random.default_rng(3)
    chained = random_problem(chain(30), 3, rng)
    assert schedule(chained.graph, chained.cost).notes[0].startswith("auto: the 30 nodes form a chain -> dp")
    assert schedule(paper.graph, paper.cost).notes[0].startswith("auto: small graph (10 nodes, 3 devices) -> ilp")
    big = random_problem(fork_join(4, 5, 3), 3, rng)
    result = schedule(big.graph, big.cost)
    assert result.notes[0].startswith("auto: 66 nodes") and result.algorithm in ("heft", "peft", "dp")
    piped = schedule(big.graph, big.cost, objective="throughput")
    assert piped.notes[0].startswith("auto: throughput objective -> smallest period of pipeline")
    for algorithm in ("pipeline", "heft", "peft"):
        assert piped.period_s <= schedule(big.graph, big.cost, algorithm, objective="throughput").period_s


def test_bad_requests_raise_input_errors(paper: Problem) -> None:
    with pytest.raises(InputError, match="unknown scheduling algorithm 'fast'"):
        schedule(paper.graph, paper.cost, "fast")
    with pytest.raises(InputError, match="unknown objective 'power'"):
        schedule(paper.graph, paper.cost, objective="power")
    with pytest.raises(InputError, match="objective energy needs device power figures"):
        schedule(paper.graph, paper.cost, objective="energy")
    with pytest.raises(InputError, match="memory capacity given for 'P9'"):
        schedule(paper.graph, paper.cost, memory_bytes={"P9": 5})
    with pytest.raises(ScheduleError, match="ilp: 66 tasks is too many"):
        from workloads import fork_join, random_problem

        big = random_problem(fork_join(4, 5, 3), 2, np.random.default_rng(0))
        schedule(big.graph, big.cost, "ilp")


def test_summary_of_the_paper_schedule(paper: Problem) -> None:
    result = schedule(paper.graph, paper.cost, "heft")
    summary = schedule_summary(result, paper.graph, paper.cost)
    assert summary["single_device"] == {"device": "P1", "seconds": 127.0}
    assert summary["speedup"] == pytest.approx(127 / 80)
    assert [run["device"] for run in summary["partitions"]] == ["P3", "P1", "P3", "P2", "P3", "P2", "P3", "P1", "P2"]
    assert summary["partitions"][-1] == {"device": "P2", "first": "n9", "last": "n10", "nodes": 2, "compute_s": 19.0}
    assert summary["bytes_between_devices"] == sum(t.nbytes for t in result.transfers)
    assert any("speedup 1.587x" in line for line in summary_lines(summary))
    record = json_summary(result)
    assert set(record) >= {"makespan", "placement", "slots", "algorithm", "seconds"} and record["makespan"] == 80.0


def test_heft_is_fast_on_1000_nodes_and_8_devices() -> None:
    import time

    from workloads import layered, random_problem

    rng = np.random.default_rng(0)
    problem = random_problem(layered(1000, rng), 8, rng)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        schedule(problem.graph, problem.cost, "heft", validate=False)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.5, f"heft took {min(timings):.3f} s (bench/schedulers.py measures it properly)"
