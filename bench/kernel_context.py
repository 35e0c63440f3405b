"""Issue 14: a model's op timed inside the model (as ``hetero profile MODEL`` times it) against the
same op configuration timed the way ``hetero profile --kernels`` samples it, alternating in one
process so that load falls on both.

    .venv/bin/python bench/kernel_context.py ../shared/models/resnet18.onnx [--rounds 3] [--variants sampler,noflush]

Per op: the in-model median (its thread count: 1, cap, or '?' not settled) (``time_ops_in_graph``, the model profile's code), each variant's
isolated median (``kernel_timing.time_in_plan`` on ``kernel_space.build_sample(config_of(op))``),
their ratio (median over rounds), and the thread count each context settled on.
Variants (all with flush = the model's bytes per run, as the predictor assumes, but noflush):
``sampler`` (kernel_timing.time_settled: each thread choice timed, the faster kept), ``learned``
(time_in_plan: the device's own 3+3 trials after flushes, the sampler before issue 14's fix),
``warm`` (learned, helper threads woken before the op), ``noflush`` (learned, no flush).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hetero.backends.registry import open_device  # noqa: E402
from hetero.cost.kernel_estimate import bytes_per_run, classify_ops  # noqa: E402
from hetero.cost.kernel_timing import time_in_plan, time_settled  # noqa: E402
from hetero.cost.kernel_space import build_sample, config_of  # noqa: E402
from hetero.cost.timing import Budget, time_ops_in_graph  # noqa: E402
from hetero.quant.precision import load_with_precision  # noqa: E402


def pick_ops(graph, per_kind: int):
    """A few ops of each kind: 3x3 conv, 1x1 conv, depthwise, stem, pool, add, gap, Q/DQ, gemm."""
    chosen, counts = [], {}
    for op in graph.ops_in_order():
        config = config_of(op, 0)
        if config is None:
            continue
        kind = config["family"] + (f"{config['k']}x{config['k']}s{config['stride']}" if config["family"] in ("conv", "pointwise", "depthwise") else "")
        if counts.get(kind, 0) < per_kind:
            counts[kind] = counts.get(kind, 0) + 1
            chosen.append((kind, op))
    return chosen


def chosen_threads(device, op) -> str:
    entry = getattr(device, "_thread_trials", {}).get(id(op))
    if entry is None or entry[0] is not op:
        return "-"
    chosen = entry[1].get("chosen")
    return "?" if chosen is None else ("cap" if chosen == 0 else str(chosen))


def isolated(device, op, flush: int, rng, warm: bool = False, settle: bool = False) -> tuple[float, str, str]:
    graph, sample = build_sample(config_of(op, flush), rng)
    try:
        kernel_class = classify_ops(device, graph).get(sample.name, sample.type)
        if settle:
            median, _, _ = time_settled(device, graph, sample, rng, flush)
            threads = "both"  # each choice forced and timed: the faster kept
        else:
            median, _, _ = time_in_plan(device, graph, sample, rng, flush, warm_helpers=warm)
            threads = chosen_threads(device, sample)
    finally:
        device.close()
        device._thread_trials.clear()
    return median, threads, kernel_class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-kind", type=int, default=2)
    parser.add_argument("--variants", default="sampler,learned")
    parser.add_argument("--budget-s", type=float, default=0.15, help="in-model: seconds per op signature")
    args = parser.parse_args()
    graph, _ = load_with_precision(args.model, "int8", None)
    device = open_device("cpu")
    flush_model = bytes_per_run(graph)
    flushes = {"sampler": flush_model, "noflush": 0, "warm": flush_model, "learned": flush_model}
    variants = [v for v in args.variants.split(",") if v]
    ops = pick_ops(graph, args.per_kind)
    rng = np.random.default_rng(0)
    inmodel: dict[str, list[float]] = {op.name: [] for _, op in ops}
    inthreads: dict[str, str] = {}
    alone: dict[tuple[str, str], list[float]] = {}
    alone_threads: dict[tuple[str, str], list[str]] = {}
    classes: dict[str, str] = {}
    print(f"{args.model}: {len(ops)} ops, bytes per run {flush_model / 2**20:.1f} MiB, load {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        started = time.perf_counter()
        stats = time_ops_in_graph(device, graph, Budget(seconds_per_op=args.budget_s), rng)
        for _, op in ops:
            inmodel[op.name].append(stats[op.signature()].expected_s)
            inthreads[op.name] = chosen_threads(device, op)
        device.close()
        device._thread_trials.clear()
        for variant in variants:
            for _, op in ops:
                seconds, threads, kernel_class = isolated(device, op, flushes[variant], rng, warm=variant == "warm", settle=variant == "sampler")
                alone.setdefault((variant, op.name), []).append(seconds)
                alone_threads.setdefault((variant, op.name), []).append(threads)
                classes[op.name] = kernel_class
        print(f"round {r + 1}: {time.perf_counter() - started:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    header = f"{'kind':<16} {'op':<44} {'in-model us':>11} {'thr':>4}" + "".join(f" {v + ' us':>12} {'ratio':>6} {'thr':>9}" for v in variants)
    print(header)
    ratios: dict[str, list[float]] = {v: [] for v in variants}
    for kind, op in ops:
        m = statistics.median(inmodel[op.name])
        line = f"{kind:<16} {op.name[-44:]:<44} {m * 1e6:>11.1f} {inthreads[op.name]:>4}"
        for v in variants:
            a = alone[(v, op.name)]
            ratio = statistics.median([x / y for x, y in zip(a, inmodel[op.name])])
            ratios[v].append(ratio)
            line += f" {statistics.median(a) * 1e6:>12.1f} {ratio:>6.2f} {','.join(alone_threads[(v, op.name)]):>9}"
        print(line + f"  {classes[op.name]}")
    for v in variants:
        r = np.asarray(ratios[v])
        print(f"{v}: isolated / in-model median {np.median(r):.2f} (range {r.min():.2f}-{r.max():.2f}), "
              f"within 10% {np.mean(np.abs(r - 1) <= 0.1):.0%}, load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
