"""Design-space sweeps: many scenarios (a grid or random draws over a base scenario) on Dask.

    sweep = load_sweep("examples/sweeps/gateway_mix.yaml")     # every point checked up front
    with dask_client(workers=2) as client:
        run_sweep(sweep, "results.csv", client)                 # resumable: only missing rows run

Modules: ``spec`` (the sweep file, dotted paths, points), ``run`` (Dask execution),
``results`` (the append-only, resumable CSV), ``pareto`` (the front and its plot).
"""

from __future__ import annotations

from hetero.sweep.run import SweepSummary, dask_client, run_sweep, simulate_batch
from hetero.sweep.spec import Point, Sweep, SweepError, load_sweep

__all__ = ["Point", "Sweep", "SweepError", "SweepSummary", "dask_client", "load_sweep", "run_sweep", "simulate_batch"]
