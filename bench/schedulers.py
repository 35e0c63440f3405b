"""Benchmark the schedulers: schedule quality on seeded random DAGs and models, and HEFT's speed.

Run: ``.venv/bin/python bench/schedulers.py [--seeds 5] [--quick]``.

Quality: makespans relative to ilp's optimum on small graphs (where HiGHS proves optimality) and
speedup over the best single device on larger layered, fork-join and chain DAGs and on imported
models (roofline costs on a made-up CPU/GPU/NPU). Speed: hetero's heft on a 1,000-node layered
DAG with 8 devices, against a plain pure-Python HEFT (dicts, cost-model calls, insertion) written
below and run round-robin in the same process, after checking both give the same makespan.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from hetero.cost.protocol import CostModel
from hetero.problem import Problem, as_task_graph
from hetero.schedulers import compile_tasks, schedule
from hetero.schedulers.heft import heft

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic task graphs live with the tests
from workloads import chain, fork_join, layered, random_problem, roofline_problem  # noqa: E402

HEURISTICS = ("single", "greedy", "dp", "heft", "peft", "auto")
SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def reference_heft(graph, cost: CostModel) -> float:
    """A textbook pure-Python HEFT with insertion (no numpy); returns the makespan."""
    devices = list(cost.devices)
    tasks = as_task_graph(graph)
    successors = {v: list(tasks.successors(v)) for v in tasks}
    predecessors = {v: list(tasks.predecessors(v)) for v in tasks}
    nbytes = {(u, v): data["nbytes"] for u, v, data in tasks.edges(data=True)}

    def mean_compute(v: str) -> float:
        times = [cost.compute(v, d) for d in devices if cost.can_run(v, d)]
        return sum(times) / len(times)

    def mean_transfer(u: str, v: str) -> float:
        pairs = [(a, b) for a in devices for b in devices if a != b]
        return sum(cost.transfer(nbytes[(u, v)], a, b) for a, b in pairs) / len(pairs) if pairs else 0.0

    rank: dict[str, float] = {}
    order = list(tasks.nodes)
    position = {v: i for i, v in enumerate(order)}

    def upward(v: str) -> float:
        if v not in rank:
            rank[v] = mean_compute(v) + max((mean_transfer(v, w) + upward(w) for w in successors[v]), default=0.0)
        return rank[v]

    for v in reversed(order):
        upward(v)
    busy: dict[str, list[tuple[float, float]]] = {d: [] for d in devices}
    placed: dict[str, tuple[str, float]] = {}
    for v in sorted(order, key=lambda v: (-round(rank[v], 9), position[v])):
        best = None
        for d in devices:
            if not cost.can_run(v, d):
                continue
            ready = max((placed[u][1] + cost.transfer(nbytes[(u, v)], placed[u][0], d) for u in predecessors[v]), default=0.0)
            duration = cost.compute(v, d)
            start, previous_end = ready, 0.0
            for begin, end in busy[d]:
                if max(ready, previous_end) + duration <= begin:
                    start = max(ready, previous_end)
                    break
                previous_end = end
                start = max(ready, previous_end)
            if best is None or start + duration < best[0]:
                best = (start + duration, d, start)
        finish, device, start = best
        busy[device].append((start, finish))
        busy[device].sort()
        placed[v] = (device, finish)
    return max(finish for _, finish in placed.values())


def best_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, run round-robin so background load hits all alike."""
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def bench_speed(nodes: int, devices: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    problem = random_problem(layered(nodes, rng), devices, rng)
    tasks = compile_tasks(problem.graph, problem.cost)
    ours = schedule(problem.graph, problem.cost, "heft").makespan_s
    theirs = reference_heft(problem.graph, problem.cost)
    same = "same makespan" if abs(ours - theirs) <= 1e-9 * ours else f"MAKESPANS DIFFER ({ours} vs {theirs})"
    times = best_times(
        {
            "hetero heft (compiled arrays)": lambda: heft(tasks),
            "hetero schedule(..., 'heft')": lambda: schedule(problem.graph, problem.cost, "heft", validate=False),
            "pure-Python reference HEFT": lambda: reference_heft(problem.graph, problem.cost),
        },
        repeats,
    )
    edges = problem.graph.number_of_edges()
    print(f"HEFT on a layered DAG: {nodes} nodes, {edges} edges, {devices} devices ({same}: {ours:.6g} s)")
    for name, seconds in times.items():
        print(f"  {name:32s} {seconds * 1e3:8.1f} ms")
    reference = times["pure-Python reference HEFT"]
    end_to_end = times["hetero schedule(..., 'heft')"]
    print(f"  hetero end-to-end is {reference / end_to_end:.1f}x faster than the reference")


def quality_rows(problems: list[tuple[str, Problem]], algorithms: tuple[str, ...], exact: bool) -> None:
    ratios: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    solved = defaultdict(int)
    for family, problem in problems:
        results = {a: schedule(problem.graph, problem.cost, a).makespan_s for a in algorithms}
        if exact:
            optimum = schedule(problem.graph, problem.cost, "ilp", time_limit_s=20)
            if not any(note.startswith("ilp: optimal") for note in optimum.notes):
                continue
            solved[family] += 1
            base = optimum.makespan_s
        else:
            solved[family] += 1
            base = results["single"]
        for algorithm, makespan in results.items():
            ratios[family][algorithm].append(makespan / base if exact else base / makespan)
    header = "makespan / ilp optimum (mean, worst)" if exact else "speedup over best single device (mean, worst)"
    print(f"{header}:")
    print(f"  {'family':22s} {'n':>3s}  " + "  ".join(f"{a:>13s}" for a in algorithms))
    for family, per_algorithm in ratios.items():
        cells = []
        for algorithm in algorithms:
            values = per_algorithm[algorithm]
            worst = max(values) if exact else min(values)
            cells.append(f"{statistics.mean(values):6.3f} ({worst:5.2f})")
        print(f"  {family:22s} {solved[family]:3d}  " + "  ".join(cells))


def small_problems(seeds: int) -> list[tuple[str, Problem]]:
    problems = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        problems.append(("layered 10 x 3, ccr 1", random_problem(layered(10, rng), 3, rng, ccr=1.0)))
        problems.append(("layered 10 x 3, ccr 5", random_problem(layered(10, rng), 3, rng, ccr=5.0)))
        problems.append(("fork-join 2x3 x 3", random_problem(fork_join(2, 3, 1), 3, rng, missing_kernels=0.3)))
        problems.append(("chain 10 x 3", random_problem(chain(10), 3, rng, ccr=0.5)))
    return problems


def large_problems(seeds: int) -> list[tuple[str, Problem]]:
    problems = []
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        problems.append(("layered 200 x 4", random_problem(layered(200, rng), 4, rng, ccr=1.0)))
        problems.append(("fork-join 4x5x4 x 4", random_problem(fork_join(4, 5, 4), 4, rng, ccr=0.5)))
        problems.append(("chain 100 x 4", random_problem(chain(100), 4, rng, ccr=0.5)))
    return problems


def model_problems() -> list[tuple[str, Problem]]:
    from hetero.ir.source import load_graph

    sources = ["builtin:seed-cnn", "builtin:resnet18", "builtin:mobilenetv2"]
    sources += [str(p) for p in sorted(SHARED_MODELS.glob("*.onnx"))]
    problems = []
    for source in sources:
        try:
            graph = load_graph(source)
        except Exception as err:  # a model hetero cannot import is reported, not fatal to the bench
            print(f"  skipping {source}: {err}")
            continue
        problems.append((Path(source).name.replace("builtin:", ""), roofline_problem(graph)))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="speed only")
    args = parser.parse_args(argv)
    bench_speed(1000, 8, args.repeats)
    bench_speed(1000, 4, args.repeats)
    if args.quick:
        return 0
    quality_rows(small_problems(args.seeds), HEURISTICS, exact=True)
    quality_rows(large_problems(args.seeds), HEURISTICS, exact=False)
    quality_rows(model_problems(), HEURISTICS, exact=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
