"""Schedule records: invariants at construction, validate() per broken invariant, plan files, traces, charts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import networkx as nx
import pytest

from hetero.cost.protocol import Link, TableCostModel
from hetero.errors import InputError
from hetero.problem import load_problem
from hetero.schedule import INPUT_NODE, OUTPUT_NODE, Schedule, ScheduleError, Slot, Transfer, memory_required, read_plan, write_plan
from hetero.schedulers import schedule
from hetero.trace import chrome_trace, schedule_events, write_schedule_trace

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def paper():
    problem = load_problem(EXAMPLES / "heft_paper.json")
    return problem, schedule(problem.graph, problem.cost, "heft")


def _with(result: Schedule, slots=None, transfers=None) -> Schedule:
    return dataclasses.replace(
        result, slots=tuple(slots if slots is not None else result.slots), transfers=tuple(transfers if transfers is not None else result.transfers)
    )


def test_overlapping_slots_raise_at_construction() -> None:
    with pytest.raises(ScheduleError, match="slots of a .* and b .* overlap on device d0"):
        Schedule("test", ("d0",), "d0", (Slot("a", "d0", 0, 2), Slot("b", "d0", 1, 3)))
    with pytest.raises(ScheduleError, match="task a has two slots"):
        Schedule("test", ("d0", "d1"), "d0", (Slot("a", "d0", 0, 2), Slot("a", "d1", 3, 4)))
    with pytest.raises(ScheduleError, match="must satisfy 0 <= start <= end"):
        Slot("a", "d0", 2, 1)
    with pytest.raises(ScheduleError, match="stays on d0"):
        Transfer("a", "b", "d0", "d0", 1, 0, 1)
    touching = Schedule("test", ("d0",), "d0", (Slot("a", "d0", 0, 2), Slot("b", "d0", 2, 3), Slot("c", "d0", 3, 3)))
    assert touching.makespan_s == 3 and touching.placement == {"a": "d0", "b": "d0", "c": "d0"}


def test_paper_schedule_validates_and_round_trips(paper, tmp_path: Path) -> None:
    problem, result = paper
    result.validate(problem.graph, problem.cost)
    write_plan(tmp_path / "plan.json", result)
    again = read_plan(tmp_path / "plan.json")
    assert again == result
    again.validate(problem.graph, problem.cost)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"], "atomic write leaves no temporary file"


def test_plan_file_errors(tmp_path: Path, paper) -> None:
    path = tmp_path / "plan.json"
    path.write_text("{}")
    with pytest.raises(InputError, match="not a hetero plan file"):
        read_plan(path)
    plan = paper[1].to_dict()
    del plan["slots"]
    path.write_text(json.dumps(plan))
    with pytest.raises(InputError, match="missing field 'slots'"):
        read_plan(path)
    plan = paper[1].to_dict()
    plan["slots"][2]["start_s"] = 5.0
    path.write_text(json.dumps(plan))
    with pytest.raises(InputError, match="overlap on device"):
        read_plan(path)


def _broken(result: Schedule, problem) -> list[tuple[Schedule, str]]:
    slots = {s.node: s for s in result.slots}
    transfers = list(result.transfers)
    cases = []
    early = [dataclasses.replace(s, start_s=43.0, end_s=50.0) if s.node == "n10" else s for s in result.slots]
    cases.append((early, transfers, "task n10 starts at 43 s before its input from n7 arrives at 66 s"))
    cases.append((result.slots, transfers[1:], f"{transfers[0].src_node} -> {transfers[0].dst_node} crosses"))
    short = [dataclasses.replace(transfers[0], end_s=transfers[0].start_s + 1)] + transfers[1:]
    cases.append((result.slots, short, "needs"))
    late = [dataclasses.replace(t, end_s=t.end_s + 100) if t.dst_node == "n10" else t for t in transfers]
    cases.append((result.slots, late, "task n10 starts at 73 s before its input from"))
    wrong_bytes = [dataclasses.replace(transfers[0], nbytes=transfers[0].nbytes + 1)] + transfers[1:]
    cases.append((result.slots, wrong_bytes, "bytes, the edge has"))
    slow = [dataclasses.replace(s, end_s=s.end_s - 1) if s.node == "n10" else s for s in result.slots]
    cases.append((slow, transfers, "task n10 takes 6 s on P2; the cost model says 7 s"))
    cases.append((result.slots[1:], transfers, f"task {result.slots[0].node} has no slot"))
    extra = transfers + [Transfer("n1", "n10", "P3", "P2", 5, 9, 14)]
    cases.append((result.slots, extra, "transfer n1 -> n10 matches no edge"))
    return [(_with(result, s, t), message) for s, t, message in cases]


def test_validate_names_each_broken_invariant(paper) -> None:
    problem, result = paper
    for broken, message in _broken(result, problem):
        with pytest.raises(ScheduleError) as caught:
            broken.validate(problem.graph, problem.cost)
        assert message in str(caught.value), (message, str(caught.value))


def test_validate_capability_io_and_memory() -> None:
    problem = load_problem(DATA / "routed_chain.json")
    result = schedule(problem.graph, problem.cost, "heft", memory_bytes=problem.memory_bytes)
    placement = dict(result.placement)
    assert placement == {"load": "host", "infer": "a0", "post": "a1"}
    kinds = {(t.src_node, t.dst_node): (t.src_device, t.dst_device) for t in result.transfers}
    assert kinds[("post", OUTPUT_NODE)] == ("a1", "host")
    assert ("<input>", "load") not in kinds, "graph input read on the host needs no transfer"
    assert result.memory_bytes["a0"] == 600 + 100 + 50
    with pytest.raises(ScheduleError, match="device a0 needs 750 bytes of memory; its capacity is 700"):
        result.validate(problem.graph, problem.cost, {"a0": 700})
    moved = [dataclasses.replace(s, device="a0", end_s=s.start_s + 1) if s.node == "post" else s for s in result.slots]
    with pytest.raises(ScheduleError, match="task post is placed on a0, which cannot run it"):
        _with(result, moved).validate(problem.graph, problem.cost)
    no_output = [t for t in result.transfers if t.dst_node != OUTPUT_NODE]
    with pytest.raises(ScheduleError, match=r"post -> <output> crosses a1 -> host but has no transfer"):
        _with(result, None, no_output).validate(problem.graph, problem.cost)


def test_memory_counts_weights_outputs_and_received_copies() -> None:
    graph = nx.DiGraph(task_graph=True)
    graph.add_node("a", weight_bytes=5, output_bytes=10, input_bytes=4, result_bytes=0)
    graph.add_node("b", weight_bytes=7, output_bytes=3, input_bytes=0, result_bytes=3)
    graph.add_edge("a", "b", nbytes=10)
    slots = [Slot("a", "x", 1, 2), Slot("b", "y", 3, 4)]
    transfers = [
        Transfer(INPUT_NODE, "a", "h", "x", 4, 0, 1),
        Transfer("a", "b", "x", "y", 10, 2, 3),
        Transfer("b", OUTPUT_NODE, "y", "h", 3, 4, 5),
    ]
    needed = memory_required(graph, ["x", "y", "h"], slots, transfers)
    # x: weights 5 + (input copy 4 during [0, 2) and output 10 during [1, 3)) -> 19
    # y: weights 7 + (received 10 during [2, 4) and output 3 during [3, 5)) -> 20; host counts nothing
    assert needed == {"x": 19, "y": 20, "h": 0}


def test_chrome_trace_has_one_event_per_slot_and_transfer(paper, tmp_path: Path) -> None:
    _, result = paper
    trace = chrome_trace(schedule_events(result), result.devices)
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == len(result.slots) + len(result.transfers)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"P1", "P2", "P3"}
    last = max(complete, key=lambda e: e["ts"] + e["dur"])
    assert last["ts"] + last["dur"] == pytest.approx(80e6)
    write_schedule_trace(tmp_path / "trace.json", result)
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"]


def test_gantt_png(paper, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from hetero.app.plots import write_gantt

    write_gantt(tmp_path / "gantt.png", paper[1], "heft paper")
    assert (tmp_path / "gantt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gantt_labels_fit_their_bars_idle_devices_are_named_and_time_reads_in_ms() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from hetero.app.plots import _gantt_figure, time_unit

    problem = load_problem(EXAMPLES / "edge_soc.json")
    plan = schedule(problem.graph, problem.cost, "heft", memory_bytes=problem.memory_bytes)
    cost = TableCostModel(["cpu", "opencl:0"], {n: {"cpu": 1e-4, "opencl:0": 1e-3} for n in ("a", "very_long_node_name_x")},
                          [Link("cpu", "opencl:0", 1e-5, 1e9)])
    graph = nx.DiGraph()
    graph.add_edge("a", "very_long_node_name_x", nbytes=8)
    one_device = schedule(graph, cost, "heft")
    assert set(one_device.placement.values()) == {"cpu"}
    for result, unit in ((plan, "ms"), (one_device, "ms")):
        figure = _gantt_figure(Figure, result, "a title long enough to need the whole width of the chart, or more")
        axes = figure.axes[0]
        assert axes.get_xlabel() == f"time ({unit})" and time_unit(result.makespan_s)[0] == unit
        renderer = figure.canvas.get_renderer()
        frame = axes.get_window_extent(renderer)
        labels = [t for t in axes.texts if t.get_text()]
        assert labels, "some slot must be wide enough for its name"
        bars = [patch.get_window_extent(renderer) for patch in axes.patches]
        for text in labels:
            box = text.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1, text.get_text()
            assert any(bar.x0 <= box.x0 and box.x1 <= bar.x1 for bar in bars), f"{text.get_text()} overflows its bar"
        whole = figure.get_tightbbox(renderer)
        assert whole.x0 >= 0 and whole.x1 <= figure.bbox.x1 + 1, "something is cut off at the figure's edge"
    rows = [tick.get_text() for tick in _gantt_figure(Figure, one_device, None).axes[0].get_yticklabels()]
    assert "opencl:0" not in rows and "cpu" in rows
    assert "idle: opencl:0" in _gantt_figure(Figure, one_device, None).axes[0].get_title()
    assert time_unit(80.0) == ("s", 1.0) and time_unit(3e-6) == ("µs", 1e6)


def test_single_device_schedule_without_links() -> None:
    cost = TableCostModel(["only"], {"a": {"only": 1.0}, "b": {"only": 2.0}}, [])
    graph = nx.DiGraph()
    graph.add_edge("a", "b", nbytes=8)
    result = schedule(graph, cost, "heft")
    assert result.makespan_s == 3.0 and result.transfers == ()
    swapped = _with(result, [Slot("a", "only", 2, 3), Slot("b", "only", 0, 2)])
    with pytest.raises(ScheduleError, match="task b starts at 0 s on only before its predecessor a ends at 3 s"):
        swapped.validate(graph, cost)
    assert Link("x", "y", 0.5, 10).seconds(5) == 1.0
