"""Per-hand-off overhead of a device on another host, against the same device here.

Needs a running cluster with a hetero worker named ``edge`` serving ``cpu``::

    dask scheduler --port 8786 &
    hetero worker tcp://127.0.0.1:8786 --name edge --devices cpu &
    python bench/remote_handoff.py tcp://127.0.0.1:8786

Serves the seed CNN (int8) all on local cpu and all on edge/cpu (two hand-offs per request: the
input to the edge, the logits back) and prints the median latencies and their difference per
hand-off.
"""

from __future__ import annotations

import sys

import numpy as np

from hetero.cost.protocol import Link, TableCostModel
from hetero.exec.runtime import Runtime
from hetero.policy import PolicyContext, make_policy
from hetero.quant.precision import load_for_precision
from hetero.remote import Cluster, open_devices
from hetero.schedulers import fixed_schedule


def main(address: str, requests: int = 200) -> None:
    with Cluster(address) as cluster:
        graph = load_for_precision("builtin:seed-cnn", "int8")
        devices = open_devices(["cpu", "edge/cpu"], cluster)
        names = list(devices)
        cost = TableCostModel(names, {op.name: {n: 1e-4 for n in names} for op in graph.ops_in_order()},
                              [Link(a, b, 1e-3, 1e8) for n in names for a, b in (("host", n), (n, "host"))], host="host")
        x = np.random.default_rng(0).random(graph.inputs[0].shape, dtype=np.float32)
        work = [{graph.inputs[0].name: x}] * requests

        def median_latency(device: str) -> float:
            placement = {op.name: device for op in graph.ops_in_order()}
            runtime = Runtime(graph, devices, make_policy("static"), PolicyContext(graph, cost),
                              initial=fixed_schedule(graph, cost, placement))
            runtime.serve(work[:20])
            return float(np.median(runtime.serve(work).latencies_s))

        local, remote = median_latency("cpu"), median_latency("edge/cpu")
        print(f"all on cpu {local * 1e3:.3f} ms, all on edge/cpu {remote * 1e3:.3f} ms: "
              f"{(remote - local) / 2 * 1e3:.3f} ms per hand-off ({remote / local:.1f}x)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8786")
