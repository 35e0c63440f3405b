"""Plots a person can read: log latency when the tail spans decades, a colour per device, labels that fit, grouped Gantt."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from hetero.app.plots import _gantt_figure, _simulation_figure, latency_scale, partition_runs  # noqa: E402
from hetero.cost.energy import DevicePower  # noqa: E402
from hetero.cost.protocol import Link, TableCostModel  # noqa: E402
from hetero.schedulers import schedule  # noqa: E402
from hetero.sim import Scenario, simulate, table_world  # noqa: E402
from hetero.sim.scenario import DynamicEvent, PolicySpec, Workload  # noqa: E402


def test_latency_scale_is_log_when_the_tail_spans_decades():
    assert latency_scale([0.001, 0.0012, 0.002]) == "linear"
    assert latency_scale([0.001, 0.0011, 0.5]) == "log"
    assert latency_scale([0.0, np.nan, 0.3]) == "linear"


def _result():
    graph = nx.DiGraph(name="two", task_graph=True)
    graph.add_nodes_from(["a", "b"])
    graph.add_edge("a", "b", nbytes=1000)
    power = {"phone": DevicePower(0.5, 4.0), "edge": DevicePower(10.0, 70.0)}
    world = table_world(graph, {"a": {"phone": 0.010, "edge": 0.001}, "b": {"phone": 0.020, "edge": 0.002}},
                        [Link("phone", "edge", 0.001, 1e6)], host="phone", devices=("phone", "edge"), power=power)
    events = (DynamicEvent("slowdown", 1.0, 1.0, device="edge", factor=300.0),
              DynamicEvent("load", 9.7, None, device="edge", utilisation=0.9),  # near the right edge
              DynamicEvent("fail", 9.8, None, device="edge"))
    run = Scenario(model="", devices=(), workload=Workload("poisson", rate_per_s=30.0), duration_s=10.0, events=events,
                   policy=PolicySpec("failover"), seed=2, algorithm="single")
    return simulate(run, world=world)


def test_simulation_plot_colours_devices_and_keeps_every_label_inside():
    result = _result()
    figure = _simulation_figure(Figure, result, "a long title that still has to fit on the figure")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    latency_axes, busy_axes, power_axes = figure.axes
    assert latency_axes.get_yscale() == latency_scale(result.request_latency_s) == "log"
    for axes in (busy_axes, power_axes):
        colours = {line.get_label(): line.get_color() for line in axes.get_lines() if line.get_label() in result.devices}
        assert set(colours) == {"phone", "edge"} and colours["phone"] != colours["edge"]
        assert {t.get_text() for t in axes.get_legend().get_texts()} == {"phone", "edge"}
    same = {line.get_label(): line.get_color() for line in busy_axes.get_lines() if line.get_label() in result.devices}
    assert same == {line.get_label(): line.get_color() for line in power_axes.get_lines() if line.get_label() in result.devices}
    width, height = figure.bbox.width, figure.bbox.height
    texts = [figure._suptitle] + [t for axes in figure.axes for t in (*axes.texts, axes.title, axes.xaxis.label,
                                                                      axes.yaxis.label, *axes.get_legend().get_texts())]
    texts = [t for t in texts if t is not None and t.get_visible() and t.get_text().strip()]
    labels = [t.get_text() for t in texts]
    assert "slowdown edge" in labels and "load edge" in labels and "fail edge" in labels
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, text.get_text()


def test_a_gantt_of_many_ops_is_grouped_by_partition():
    n = 160
    graph = nx.DiGraph(name="long", task_graph=True)
    for i in range(n):
        graph.add_node(f"op{i}")
        if i:
            graph.add_edge(f"op{i - 1}", f"op{i}", nbytes=10)
    # blocks of 40 ops alternate which device is faster: four partitions
    compute = {f"op{i}": {"cpu": 1e-3 if (i // 40) % 2 == 0 else 5e-3, "gpu": 5e-3 if (i // 40) % 2 == 0 else 1e-3}
               for i in range(n)}
    cost = TableCostModel(["cpu", "gpu"], compute, [Link("cpu", "gpu", 1e-5, 1e9)], host="cpu")
    plan = schedule(graph, cost, "dp")
    runs = partition_runs(plan)
    assert [(device, len(slots)) for device, slots in runs] == [("cpu", 40), ("gpu", 40), ("cpu", 40), ("gpu", 40)]
    figure = _gantt_figure(Figure, plan, None)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts == ["40 ops: op0 … op39", "40 ops: op40 … op79", "40 ops: op80 … op119", "40 ops: op120 … op159"]
    assert "160 ops in 4 partitions" in figure.axes[0].get_title()
