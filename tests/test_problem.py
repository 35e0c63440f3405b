"""Problem files and the table cost model: loading, routing, and every error path's message."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import networkx as nx
import pytest

from hetero.cost.protocol import CostModel, Link, TableCostModel
from hetero.errors import InputError
from hetero.problem import as_task_graph, load_problem, problem_from_dict, problem_to_dict, write_problem

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "problems"

BASE = {
    "devices": ["P1", {"name": "P2", "memory_bytes": 100}],
    "links": [{"src": "P1", "dst": "P2", "latency_s": 1, "bandwidth_Bps": 10}],
    "tasks": {"T1": {"P1": 1, "P2": 2}, "T2": {"P1": 3}, "T3": {"P2": 0.5}, "T4": {"P1": 1}},
    "edges": [
        {"src": "T1", "dst": "T2", "bytes": 10},
        {"src": "T1", "dst": "T3", "bytes": 20},
        {"src": "T2", "dst": "T4", "bytes": 30},
        {"src": "T3", "dst": "T4", "bytes": 40},
    ],
}


def test_routed_chain_loads_with_io_memory_and_routing() -> None:
    problem = load_problem(DATA / "routed_chain.json")
    assert problem.name == "routed_chain"
    assert problem.memory_bytes == {"a0": 1000}
    assert isinstance(problem.cost, CostModel)
    cost = problem.cost
    assert cost.host == "host"
    assert cost.transfer(100, "a0", "a0") == 0.0
    assert cost.transfer(100, "host", "a0") == pytest.approx(0.5 + 1.0)
    assert cost.transfer(100, "a0", "host") == pytest.approx(1.5), "a link serves both directions"
    assert cost.transfer(100, "a0", "a1") == pytest.approx(1.5 + 0.25 + 2.0), "no direct link: through the host"
    assert not cost.can_run("post", "a0") and math.isinf(cost.compute("post", "a0"))
    graph = problem.graph
    assert graph.nodes["load"]["input_bytes"] == 10 and graph.nodes["post"]["result_bytes"] == 5
    assert graph.nodes["infer"]["weight_bytes"] == 600
    assert graph.nodes["infer"]["output_bytes"] == 50, "output defaults to the bytes of the out-edges"
    assert graph.edges["load", "infer"]["nbytes"] == 100


@pytest.mark.parametrize("name", ["heft_paper.json", "edge_soc.json"])
def test_examples_round_trip(tmp_path: Path, name: str) -> None:
    problem = load_problem(EXAMPLES / name)
    write_problem(tmp_path / name, problem)
    again = load_problem(tmp_path / name)
    assert problem_to_dict(again) == problem_to_dict(problem)
    assert nx.utils.graphs_equal(again.graph, problem.graph)


def test_as_task_graph_of_a_plain_digraph() -> None:
    graph = nx.DiGraph()
    graph.add_edge("a", "b", nbytes=7)
    graph.add_node("a", weight_bytes=3)
    tasks = as_task_graph(graph)
    assert tasks.nodes["a"] == {"weight_bytes": 3, "output_bytes": 7, "input_bytes": 0, "result_bytes": 0}
    assert as_task_graph(tasks) is tasks


def test_cost_model_rejects_unroutable_pairs_and_bad_links() -> None:
    with pytest.raises(InputError, match="no route from a to c: no direct link, and a is the host"):
        TableCostModel(["a", "b", "c"], {}, [Link("a", "b", 0, 1)], host="a")
    with pytest.raises(InputError, match="no route from b to c: no direct link and no links b -> h -> c"):
        TableCostModel(["b", "c"], {}, [Link("h", "b", 0, 1)], host="h")
    with pytest.raises(InputError, match="bandwidth_Bps 0 must be > 0"):
        Link("a", "b", 0, 0)
    with pytest.raises(InputError, match="latency_s -1"):
        Link("a", "b", -1, 1)
    with pytest.raises(InputError, match="listed twice"):
        TableCostModel(["a", "b"], {}, [Link("a", "b", 0, 1), Link("a", "b", 0, 2)])


def _edit(path: tuple, value: object):
    def apply(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


_DELETE = object()

ERRORS = [
    (_edit(("edges", 3, "dst"), "T11"), "problem.json: edges[3].dst 'T11' is not a task"),
    (_edit(("edges", 0, "src"), 5), "edges[0].src 5 is not a task"),
    (_edit(("edges", 1), {"src": "T1", "dst": "T2", "bytes": 1}), "edges[1] duplicates edges[0] (T1 -> T2)"),
    (_edit(("edges", 2), {"src": "T4", "dst": "T1", "bytes": 1}), "edges form a cycle: T1 -> T3 -> T4 -> T1"),
    (_edit(("edges", 0, "bytes"), -4), "edges[0].bytes -4 is negative"),
    (_edit(("edges", 0, "bytes"), 2.5), "edges[0].bytes must be a whole number of bytes"),
    (_edit(("edges", 0, "weight"), 2), "unknown key 'weight' in edges[0] (allowed: src, dst, bytes)"),
    (_edit(("edges", 0), {"src": "T1", "dst": "T1", "bytes": 0}), "edges[0] joins task T1 to itself"),
    (_edit(("tasks", "T2", "P1"), -3), "tasks.T2.P1 -3 must be >= 0"),
    (_edit(("tasks", "T2", "P1"), "fast"), "tasks.T2.P1 must be a number, not 'fast'"),
    (_edit(("tasks", "T2"), {"P9": 1}), "tasks.T2: 'P9' is not a device (devices: P1, P2)"),
    (_edit(("tasks", "T2"), {}), "tasks.T2 runs on no device"),
    (_edit(("tasks",), {}), "tasks must be a non-empty object"),
    (_edit(("devices",), ["P1", "P1"]), "devices[1].name 'P1' duplicates devices[0]"),
    (_edit(("devices",), []), "devices is empty"),
    (_edit(("devices", 1, "memory_bytes"), -1), "devices[1].memory_bytes -1 is negative"),
    (_edit(("devices", 1, "speed"), 1), "unknown key 'speed' in devices[1] (allowed: name, memory_bytes, power)"),
    (_edit(("links", 0, "dst"), "P7"), "links[0].dst 'P7' is not a device or the host"),
    (_edit(("links", 0, "bandwidth_Bps"), 0), "links[0].bandwidth_Bps 0 must be > 0"),
    (_edit(("links", 0, "latency_s"), _DELETE), "links[0] has no 'latency_s'"),
    (_edit(("links",), []), "no route from P1 to P2"),
    (_edit(("colour",), "red"), "unknown key 'colour' in the top level (allowed: name, description, host, devices"),
    (_edit(("tasks",), _DELETE), "the top level has no 'tasks' (required: devices, tasks)"),
    (_edit(("inputs",), {"T9": 4}), "inputs: 'T9' is not a task"),
    (_edit(("outputs",), {"T4": -4}), "outputs.T4 -4 is negative"),
    (_edit(("task_memory",), {"T1": {"weights": 4}}), "unknown key 'weights' in task_memory.T1"),
    (_edit(("tasks", "<input>"), {"P1": 1}), "tasks key '<input>' is a reserved name"),
    (_edit(("host",), "P3"), "host 'P3' is not a device: name one of the devices (P1, P2), or leave host out to use the first"),
    (_edit(("devcies",), ["P1"]), "unknown key 'devcies' in the top level (allowed: name, description, host, devices, links, "
     "tasks, edges, inputs, outputs, task_memory); did you mean 'devices'?"),
]


@pytest.mark.parametrize("edit,message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_problem_errors_name_the_file_and_field(tmp_path: Path, edit, message: str) -> None:
    doc = copy.deepcopy(BASE)
    edit(doc)
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as caught:
        load_problem(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: "), text
    assert message.replace("problem.json: ", "") in text, text
    assert "\n" not in text


def test_duplicate_json_keys_and_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"devices": ["P1"], "tasks": {"T1": {"P1": 1}, "T1": {"P1": 2}}}')
    with pytest.raises(InputError, match="key 'T1' appears twice"):
        load_problem(path)
    path.write_text('{"devices": ["P1"],')
    with pytest.raises(InputError, match=r"dup.json: not valid JSON \(line 1"):
        load_problem(path)
    with pytest.raises(InputError, match="no such problem file"):
        load_problem(tmp_path / "missing.json")


def test_base_problem_is_valid() -> None:
    problem = problem_from_dict(copy.deepcopy(BASE), "base")
    assert list(problem.graph.nodes) == ["T1", "T2", "T3", "T4"]
    assert problem.cost.host == "P1", "the host defaults to the first device"
