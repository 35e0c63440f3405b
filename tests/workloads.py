"""Seeded random scheduling problems for the tests and bench/schedulers.py: chains, layered DAGs, fork-join.

Costs follow the usual generator of the HEFT paper (Topcuoglu et al. 2002, section 5.1): each
node has a mean cost drawn uniformly, each device's cost is that mean times a factor uniform in
[1 - beta/2, 1 + beta/2] (beta = heterogeneity), and edge data is scaled so the ratio of mean
transfer to mean compute time is ``ccr``. Device 0 is the host; some device pairs lack a direct
link and route through it.
"""

from __future__ import annotations

import math
from typing import Mapping

import networkx as nx
import numpy as np

from hetero.cost.protocol import Link, TableCostModel
from hetero.problem import Problem


def _task_graph(name: str, n: int, edges: list[tuple[int, int]]) -> nx.DiGraph:
    graph = nx.DiGraph(name=name, task_graph=True)
    for i in range(n):
        graph.add_node(f"t{i}", weight_bytes=0, output_bytes=0, input_bytes=0, result_bytes=0)
    for u, v in edges:
        graph.add_edge(f"t{u}", f"t{v}", nbytes=0)
    return graph


def chain(n: int) -> nx.DiGraph:
    """t0 -> t1 -> ... -> t(n-1)."""
    return _task_graph(f"chain{n}", n, [(i, i + 1) for i in range(n - 1)])


def layered(n: int, rng: np.random.Generator, width: int | None = None, fan_in: int = 3) -> nx.DiGraph:
    """Nodes in layers of random width; each node reads from up to fan_in nodes of earlier layers."""
    width = width or max(1, int(round(math.sqrt(n))))
    layers: list[list[int]] = []
    placed = 0
    while placed < n:
        size = min(n - placed, int(rng.integers(1, 2 * width)))
        layers.append(list(range(placed, placed + size)))
        placed += size
    edges: set[tuple[int, int]] = set()
    for depth in range(1, len(layers)):
        earlier = [u for layer in layers[max(0, depth - 2) : depth] for u in layer]
        for v in layers[depth]:
            count = int(rng.integers(1, fan_in + 1))
            for u in rng.choice(earlier, size=min(count, len(earlier)), replace=False):
                edges.add((int(u), v))
    return _task_graph(f"layered{n}", n, sorted(edges))


def fork_join(branches: int, depth: int, stages: int = 1) -> nx.DiGraph:
    """``stages`` times: a fork node, ``branches`` parallel chains of ``depth`` nodes, a join node."""
    edges: list[tuple[int, int]] = []
    node = 0
    previous_join: int | None = None
    for _ in range(stages):
        fork = node
        node += 1
        if previous_join is not None:
            edges.append((previous_join, fork))
        tails = []
        for _ in range(branches):
            last = fork
            for _ in range(depth):
                edges.append((last, node))
                last = node
                node += 1
            tails.append(last)
        join = node
        node += 1
        edges.extend((tail, join) for tail in tails)
        previous_join = join
    return _task_graph(f"forkjoin{branches}x{depth}x{stages}", node, edges)


def random_problem(
    graph: nx.DiGraph,
    devices: int,
    rng: np.random.Generator,
    ccr: float = 1.0,
    heterogeneity: float = 1.0,
    missing_kernels: float = 0.0,
    missing_links: float = 0.3,
    io_bytes: int = 0,
    memory_fraction: float | None = None,
) -> Problem:
    """Random costs for a task graph (modified in place: edge bytes, node bytes)."""
    names = list(graph.nodes)
    device_names = [f"d{j}" for j in range(devices)]
    mean_cost = rng.uniform(1.0, 10.0, size=len(names))
    factors = rng.uniform(1 - heterogeneity / 2, 1 + heterogeneity / 2, size=(len(names), devices))
    compute: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        allowed = [j for j in range(devices) if j == 0 or rng.random() >= missing_kernels]
        compute[name] = {device_names[j]: float(mean_cost[i] * max(factors[i, j], 0.05)) for j in allowed}
    bandwidth = 1e6
    links = [Link("d0", device_names[j], 1e-3 * rng.random(), bandwidth * rng.uniform(0.5, 2)) for j in range(1, devices)]
    for a in range(1, devices):
        for b in range(a + 1, devices):
            if rng.random() >= missing_links:
                links.append(Link(device_names[a], device_names[b], 1e-3 * rng.random(), bandwidth * rng.uniform(0.5, 2)))
    mean_seconds = float(mean_cost.mean())
    for u, v in graph.edges:
        graph.edges[u, v]["nbytes"] = int(rng.uniform(0, 2) * ccr * mean_seconds * bandwidth)
    for name in names:
        node = graph.nodes[name]
        node["weight_bytes"] = int(rng.integers(0, 4 * bandwidth))
        node["output_bytes"] = sum(b for _, _, b in graph.out_edges(name, data="nbytes")) or int(bandwidth)
        if io_bytes and graph.in_degree(name) == 0:
            node["input_bytes"] = io_bytes
        if io_bytes and graph.out_degree(name) == 0:
            node["result_bytes"] = io_bytes
            node["output_bytes"] += io_bytes
    memory: dict[str, int] = {}
    if memory_fraction is not None:
        total = sum(graph.nodes[n]["weight_bytes"] + graph.nodes[n]["output_bytes"] for n in names)
        for j in range(1, devices):
            memory[device_names[j]] = int(total * memory_fraction)
    cost = TableCostModel(device_names, compute, links, host="d0")
    return Problem(name=str(graph.graph.get("name", "random")), graph=graph, cost=cost, memory_bytes=memory)


# name, FLOP/s, bytes/s of memory, launch seconds, op types without a kernel
SYNTHETIC_DEVICES = (
    ("cpu", 5e10, 2e10, 2e-6, ()),
    ("gpu", 1e12, 2e11, 2e-5, ()),
    ("npu", 4e12, 1e11, 5e-5, ("Softmax", "Flatten", "Reshape", "GlobalAveragePool")),
)


def roofline_problem(graph: nx.DiGraph, devices: int = 3, memory_bytes: Mapping[str, int] | None = None) -> Problem:
    """A model Graph with made-up roofline costs on a CPU host, a GPU and an NPU (for benchmarks)."""
    chosen = SYNTHETIC_DEVICES[:devices]
    compute: dict[str, dict[str, float]] = {}
    for name, data in graph.nodes(data=True):
        op = data["op"]
        compute[name] = {
            device: launch_s + max(op.flops / flops_per_s, (op.bytes_read + op.bytes_written) / bytes_per_s)
            for device, flops_per_s, bytes_per_s, launch_s, missing in chosen
            if op.type not in missing
        }
    links = [Link("cpu", device, 2e-5, 8e9) for device, *_ in chosen[1:]]
    cost = TableCostModel([d for d, *_ in chosen], compute, links, host="cpu")
    return Problem(name=str(graph.graph.get("name", "model")), graph=graph, cost=cost, memory_bytes=dict(memory_bytes or {}))
