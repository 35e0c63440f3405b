"""hetero validate --placement auto|PLAN.json|random:SEED and its per-op / per-hand-off breakdown.

Real runs of builtin:seed-cnn int8 over cpu + opencl:0 (PoCL) with the measured profile in
profiles/; few requests, so the numbers are noisy, and the tests check structure and arithmetic
of the breakdown, not its figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import host_seed_profile

from hetero.app.cli import main
from hetero.app.validate import validate
from hetero.schedule import write_plan

pytestmark = pytest.mark.opencl  # plans across cpu and opencl:0

ROOT = Path(__file__).resolve().parents[1]
MODEL = "builtin:seed-cnn"
DEVICES = ["cpu", "opencl:0"]


def _cross_edges(graph, placement) -> set[tuple[str, str]]:
    return {(u, v) for u, v in graph.edges if placement[u] != placement[v]}


def _ran_on(validation) -> dict[str, set[str]]:
    """The devices each op ran on in the measured run (from the runtime's trace events)."""
    ran: dict[str, set[str]] = {}
    for event in validation.report.events:
        if event.kind == "compute":
            ran.setdefault(event.name, set()).add(event.device)
    return ran


@pytest.fixture(scope="module")
def random_run():
    from hetero.quant.precision import load_for_precision

    result = validate(MODEL, DEVICES, host_seed_profile(), requests=4, placement="random:3")
    return result, load_for_precision(MODEL, "int8")


def test_random_placement_is_the_plan_that_runs(random_run):
    result, _ = random_run
    placement = dict(result.plan.placement)
    assert result.plan.algorithm == "random:3"
    assert set(placement.values()) == set(DEVICES)  # this seed crosses devices, so there are hand-offs to check
    assert _ran_on(result) == {node: {device} for node, device in placement.items()}
    again = validate(MODEL, DEVICES, host_seed_profile(), requests=1, placement="random:3")
    assert dict(again.plan.placement) == placement  # the seed fixes the placement
    other = validate(MODEL, DEVICES, host_seed_profile(), requests=1, placement="random:4")
    assert dict(other.plan.placement) != placement


def test_breakdown_rows_sum_to_its_totals(random_run):
    result, graph = random_run
    data = result.to_dict()
    rows, handoffs, totals = data["per_op"], data["handoffs"], data["totals"]
    assert [row["node"] for row in rows] == [op.name for op in graph.ops_in_order()]
    assert all(math.isfinite(row["measured_s"]) and row["measured_s"] > 0 for row in rows)
    for row in rows + handoffs:
        assert row["error_s"] == pytest.approx(row["predicted_s"] - row["measured_s"])
    assert totals["op_predicted_s"] == pytest.approx(sum(r["predicted_s"] for r in rows))
    assert totals["op_measured_s"] == pytest.approx(sum(r["measured_s"] for r in rows))
    assert totals["op_error_s"] == pytest.approx(sum(r["error_s"] for r in rows))
    assert totals["handoffs"] == len(handoffs)
    assert totals["handoff_error_s"] == pytest.approx(sum(r["error_s"] for r in handoffs))
    assert totals["makespan_predicted_s"] == pytest.approx(result.plan.makespan_s)
    assert totals["makespan_error_s"] == pytest.approx(result.plan.makespan_s - result.measured_latency_s)
    assert totals["rest_error_s"] == pytest.approx(totals["makespan_error_s"] - totals["op_error_s"] - totals["handoff_error_s"])
    # the ops and hand-offs of one request happen inside its latency (the chain's gaps do not overlap)
    assert totals["op_measured_s"] < result.measured_latency_s


def test_handoff_rows_are_exactly_the_cross_device_edges(random_run):
    result, graph = random_run
    handoffs = result.to_dict()["handoffs"]
    assert {(r["src"], r["dst"]) for r in handoffs} == _cross_edges(graph, result.plan.placement)
    assert len(handoffs) == len(_cross_edges(graph, result.plan.placement)) > 0
    predicted = {(t.src_node, t.dst_node): t.end_s - t.start_s for t in result.plan.transfers}
    for row in handoffs:
        assert (row["src_device"], row["dst_device"]) == (result.plan.placement[row["src"]], result.plan.placement[row["dst"]])
        assert row["bytes"] == graph.edges[row["src"], row["dst"]]["nbytes"]
        assert row["predicted_s"] == pytest.approx(predicted[row["src"], row["dst"]])
        assert 0 < row["measured_s"] < result.measured_latency_s
        assert row["waited_s"] >= 0  # the gap starts when the consumer's last input is ready
        if graph.in_degree(row["dst"]) == 1:
            assert row["waited_s"] == 0  # no other input to wait for


def test_a_plan_file_is_the_placement_validated_and_printed(random_run, tmp_path, capsys):
    result, graph = random_run
    flipped = {node: ("cpu" if device == "opencl:0" else "opencl:0") for node, device in result.plan.placement.items()}
    from hetero.cost.model import cost_model_for
    from hetero.schedulers import fixed_schedule

    cost, _ = cost_model_for(graph, host_seed_profile(), DEVICES, "int8")
    plan = tmp_path / "plan.json"
    write_plan(plan, fixed_schedule(graph, cost, flipped))
    assert main(["validate", MODEL, "--devices", ",".join(DEVICES), "--profile", host_seed_profile(), "--requests", "2",
                 "--placement", str(plan), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["placement"] == flipped
    assert {(r["src"], r["dst"]) for r in data["handoffs"]} == _cross_edges(graph, flipped)
    assert main(["validate", MODEL, "--devices", ",".join(DEVICES), "--profile", host_seed_profile(), "--requests", "2",
                 "--placement", str(plan)]) == 0
    table = capsys.readouterr().out
    assert "hand-off" in table and "rest (host I/O" in table
    assert all(op.name in table for op in graph.ops_in_order())


@pytest.mark.parametrize("placement, key", [
    ("random:x", "random:SEED"),
    ("random:", "random:SEED"),
    ("missing-plan.json", "no such plan file"),
    ("OPENCL_PLAN", "not in --devices"),
])
def test_bad_placement_is_one_error_line(placement, key, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    devices = "cpu,opencl:0"
    if placement == "OPENCL_PLAN":  # a plan that uses opencl:0, validated with --devices cpu
        from hetero.cost.model import cost_model_for
        from hetero.quant.precision import load_for_precision
        from hetero.schedulers import fixed_schedule

        graph = load_for_precision(MODEL, "int8")
        cost, _ = cost_model_for(graph, host_seed_profile(), DEVICES, "int8")
        placement = str(tmp_path / "opencl.json")
        write_plan(placement, fixed_schedule(graph, cost, {op.name: "opencl:0" for op in graph.ops_in_order()}))
        devices = "cpu"
    assert main(["validate", MODEL, "--devices", devices, "--profile", host_seed_profile(), "--requests", "1", "--placement", placement]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hetero: error: ") and key in lines[0], captured.err
    assert captured.out == ""


# ----------------------------------------------------------------------------- hand-off costs in the profile


CALIBRATIONS = ("handoffs", "wakeup", "contention", "layout")  # hetero profile --update-calibration's fields


def _bare(tmp_path: Path) -> str:
    """The checked-in profile as profiles were before the runtime calibrations: none of their fields."""
    data = {k: v for k, v in json.loads(Path(host_seed_profile()).read_text()).items() if k not in CALIBRATIONS}
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(data))
    return str(path)


def _with_handoffs(tmp_path: Path, handoffs: dict) -> str:
    data = json.loads(Path(_bare(tmp_path)).read_text())
    data["handoffs"] = handoffs
    path = tmp_path / "with-handoffs.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_old_profiles_charge_no_handoff_and_new_ones_round_trip(tmp_path):
    from hetero.cost.profile import load_profile, save_profile

    old = load_profile(_bare(tmp_path))  # a profile without the section loads and charges nothing
    assert old.handoffs == {} and old.handoff_s("cpu", "opencl:0") == 0.0
    path = _with_handoffs(tmp_path, {"cpu": {"opencl:0": 7e-5}, "opencl:0": {"cpu": 5e-5}})
    new = load_profile(path)
    assert new.handoff_s("cpu", "opencl:0") == 7e-5 and new.handoff_s("opencl:0", "cpu") == 5e-5
    save_profile(new, tmp_path / "again.json")
    assert load_profile(tmp_path / "again.json").handoffs == new.handoffs


@pytest.mark.parametrize("bad", [{"cpu": {"opencl:0": -1.0}}, {"cpu": 3.0}, {"cpu": {"opencl:0": "fast"}}])
def test_a_bad_handoff_entry_is_one_profile_error(tmp_path, bad, capsys):
    path = _with_handoffs(tmp_path, bad)
    assert main(["validate", MODEL, "--devices", "cpu", "--profile", path, "--requests", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hetero: error: {path}: ") and "handoffs" in err[0]


def test_cost_model_and_simulator_charge_the_handoff_on_cross_device_edges(tmp_path):
    from hetero.app.validate import _simulate
    from hetero.cost.model import cost_model_for
    from hetero.quant.precision import load_for_precision
    from hetero.schedulers import fixed_schedule

    graph = load_for_precision(MODEL, "int8")
    ops = [op.name for op in graph.ops_in_order()]
    placement = {name: ("cpu" if i < 3 else "opencl:0") for i, name in enumerate(ops)}  # one cpu -> opencl:0 edge
    handoff = 2e-3  # large, so it dominates the noise-free difference
    path = _with_handoffs(tmp_path, {"cpu": {"opencl:0": handoff}, "opencl:0": {"cpu": handoff}})
    bare = _bare(tmp_path)
    before, _ = cost_model_for(graph, bare, DEVICES, "int8")
    after, _ = cost_model_for(graph, path, DEVICES, "int8")
    assert after.transfer(1000, "cpu", "opencl:0") == pytest.approx(before.transfer(1000, "cpu", "opencl:0") + handoff)
    assert after.transfer(1000, "host", "opencl:0") == before.transfer(1000, "host", "opencl:0")  # host I/O: no hand-off
    assert after.compute(ops[0], "cpu") == before.compute(ops[0], "cpu")
    plan_before, plan_after = fixed_schedule(graph, before, placement), fixed_schedule(graph, after, placement)
    assert len(_cross_edges(graph, placement)) == 1
    assert plan_after.makespan_s == pytest.approx(plan_before.makespan_s + handoff)  # a chain: one hand-off on its path
    simulated = [_simulate(graph, cost, p, DEVICES, plan, "int8", requests=3, inflight=1)[0]
                 for cost, p, plan in ((before, bare, plan_before), (after, path, plan_after))]
    assert simulated[1] - simulated[0] == pytest.approx(handoff, rel=0.1)


def test_profiler_measures_a_handoff_per_device_pair():
    from hetero.backends import open_device
    from hetero.cost.profile import load_profile
    from hetero.cost.profiler import calibrate_handoffs

    links = load_profile(host_seed_profile()).links  # fitted on this machine's cpu and opencl:0
    measured = calibrate_handoffs([open_device("cpu"), open_device("opencl:0")], links, requests=10)
    assert set(measured) == {"cpu", "opencl:0", "host"}  # "host": a request's start and end on each device
    assert set(measured["host"]) == {"cpu", "opencl:0"}
    for src, dst in (("cpu", "opencl:0"), ("opencl:0", "cpu"), ("host", "cpu"), ("host", "opencl:0")):
        assert 0.0 <= measured[src][dst] < 0.05  # seconds: a thread wake-up, not a hang
    assert sum(measured[s][d] for s, d in (("cpu", "opencl:0"), ("opencl:0", "cpu"))) > 0  # a hop to another worker costs something
