"""Benchmark the simulator: simulated op executions per second against raw simpy, same process.

Run: ``.venv/bin/python bench/simulator.py [--seconds 20] [--repeats 3]``.

hetero: resnet18 (49 ops) on 4 devices (i7 CPU host, Iris Xe iGPU, two T4s on PCIe, catalog
figures), 8 closed-loop clients, 5% lognormal noise, the periodic policy (so every op and every
transfer is observed by the policy), two placements: the pipeline stages of the throughput
objective and HEFT's latency schedule (more cross-device transfers, shorter runs).
Peer: raw simpy, a loop that holds a Resource and runs one timeout per op (4 resources, 2
processes each), the cheapest way to simulate one op per event. The two alternate, best of
``--repeats`` each; the ratio is hetero's op rate over simpy's.
"""

from __future__ import annotations

import argparse
import logging
import time

import simpy

from hetero.sim import build_world, parse_scenario, simulate

SCENARIO = """\
model: builtin:resnet18
host: cpu
devices:
  - {{name: cpu, spec: intel-i7-1165g7-cpu}}
  - {{name: igpu, spec: laptop-iris-xe}}
  - {{name: gpu, spec: nvidia-t4, count: 2}}
links:
  - {{between: [cpu, igpu], latency: 10 us, bandwidth: 34 GB/s}}
  - {{between: [cpu, gpu], latency: 10 us, bandwidth: 12 GB/s}}
workload: {{kind: closed, clients: 8}}
scheduler: {{algorithm: {algorithm}, objective: {objective}}}
noise: {{distribution: lognormal, cv: 0.05}}
policy: {{name: periodic, period: 50 ms}}
duration: {seconds} s
seed: 1
"""


def hetero_rate(world, algorithm: str, objective: str, seconds: float) -> tuple[float, int, int, dict]:
    """Op executions per wall second of one simulation, the op count, requests and the plan."""
    scenario = parse_scenario(SCENARIO.format(algorithm=algorithm, objective=objective, seconds=seconds), "bench.yaml")
    started = time.perf_counter()
    result = simulate(scenario, world=world)
    wall = time.perf_counter() - started
    return result.op_executions / wall, result.op_executions, result.requests["completed"], result.plans[0]["ops_per_device"]


def simpy_rate(ops: int) -> float:
    """Raw simpy: timeouts while holding a Resource, 4 resources x 2 processes."""
    env = simpy.Environment()
    resources = [simpy.Resource(env, capacity=1) for _ in range(4)]
    per_process = ops // 8

    def worker(resource: simpy.Resource, duration_s: float):
        for _ in range(per_process):
            with resource.request() as request:
                yield request
                yield env.timeout(duration_s)

    for i, resource in enumerate(resources):
        for j in range(2):
            env.process(worker(resource, 1e-4 * (1 + i + j)))
    started = time.perf_counter()
    env.run()
    return per_process * 8 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    world = build_world(parse_scenario(SCENARIO.format(algorithm="auto", objective="throughput", seconds=1), "bench.yaml"))
    configs = (("auto", "throughput"), ("heft", "latency"))
    best: dict[str, float] = {}
    details: dict[str, tuple[int, int, dict]] = {}
    for _ in range(args.repeats):
        for algorithm, objective in configs:
            rate, ops, requests, plan = hetero_rate(world, algorithm, objective, args.seconds)
            key = f"{algorithm}/{objective}"
            best[key] = max(best.get(key, 0.0), rate)
            details[key] = (ops, requests, plan)
            best["simpy"] = max(best.get("simpy", 0.0), simpy_rate(200_000))
    print(f"raw simpy (Resource + timeout per op):   {best['simpy']:>12,.0f} op executions/s")
    for algorithm, objective in configs:
        key = f"{algorithm}/{objective}"
        ops, requests, plan = details[key]
        print(f"hetero resnet18, 4 devices, {key:<16} {best[key]:>12,.0f} op executions/s  "
              f"ratio {best[key] / best['simpy']:.2f}  ({ops:,} ops, {requests:,} requests, plan {plan})")


if __name__ == "__main__":
    main()
