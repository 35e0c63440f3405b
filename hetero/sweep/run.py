"""Running a sweep's simulations on Dask distributed: a LocalCluster of processes, or a cluster by address.

The (point, seed) runs still missing from RESULTS.csv are cut into batches (several simulations
per Dask task, so scheduling costs little next to simulating); each batch runs on a worker in
:func:`simulate_batch`, exactly as ``hetero simulate SCENARIO --seed S`` runs one scenario, and
its rows are appended to the file as the batch finishes. A point that fails (a policy error, a
workload too large) becomes a row with its error; a batch lost with its worker is counted as
failed and left out of the file, so the next run retries it. Leaving the ``with`` block (also by
Ctrl-C) closes the client and, for a LocalCluster, stops every worker process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from hetero.errors import HeteroError, InputError
from hetero.sweep.results import ENERGY, ResultsFile, columns_for
from hetero.sweep.spec import Sweep, format_value

log = logging.getLogger(__name__)

WORLD_CACHE = 4  # worlds kept per worker process (a world is the model's graph with its costs)
CONNECT_TIMEOUT_S = 15


@dataclass(frozen=True)
class Job:
    """One simulation: a point's scenario text, where it reads its relative paths, and the seed."""

    point: int
    seed: int
    text: str
    base: str
    scenario_hash: str
    max_events: int | None = None


@dataclass(frozen=True)
class SweepSummary:
    """What a run did: runs in the sweep, already in the file, computed now, failed."""

    runs: int
    already: int
    computed: int
    failed: int
    lost_batches: int
    workers: int
    wall_s: float
    dropped_torn_line: bool


def simulator_has_energy() -> bool:
    """Whether the simulator's result carries energy_per_request_J (read from the result itself)."""
    from hetero.sim.metrics import SimResult

    return ENERGY in {f.name for f in dataclasses.fields(SimResult)} or hasattr(SimResult, ENERGY)


_worlds: "OrderedDict[str, Any]" = OrderedDict()


def _world(scenario: Any) -> Any:
    """build_world(scenario), reused for the next points of the same model and device mix."""
    from hetero.sim.world import build_world
    from hetero.sweep.worlds import load_model_once, world_key

    key = world_key(scenario)
    if key in _worlds:
        _worlds.move_to_end(key)
        return _worlds[key]
    world = build_world(scenario, load=load_model_once)
    _worlds[key] = world
    while len(_worlds) > WORLD_CACHE:
        _worlds.popitem(last=False)
    return world


def metrics_of(result: Any) -> dict[str, Any]:
    """The CSV's metric columns from a SimResult, as its RESULT.json gives them (NaN as None)."""
    data = result.to_dict()
    latency, requests = data["latency_s"], data["requests"]
    row = {
        "latency_mean_s": latency["mean"], "latency_p50_s": latency["p50"], "latency_p95_s": latency["p95"],
        "latency_p99_s": latency["p99"], "throughput_per_s": data["throughput_per_s"],
        "completed": requests["completed"], "failed": requests["failed"], "lost": requests["lost"],
        "rebalances": data["rebalances"],
    }
    if ENERGY in data:
        row[ENERGY] = data[ENERGY]
    if data.get("errors"):
        row["error"] = "; ".join(data["errors"])
    return row


def simulate_batch(jobs: list[Job]) -> list[dict[str, Any]]:
    """Run each job as ``hetero simulate`` would (on a Dask worker); a failing job's row holds its error."""
    return [simulate_job(job) for job in jobs]


def simulate_job(job: Job) -> dict[str, Any]:
    """One simulation's row: the point, seed, hash and metrics, or the error it ended with."""
    from hetero.sim import Simulator
    from hetero.sim.scenario import parse_scenario

    row: dict[str, Any] = {"point": job.point, "seed": job.seed, "scenario_hash": job.scenario_hash}
    try:
        scenario = parse_scenario(job.text, job.base, Path(job.base).parent)
        result = Simulator(scenario, _world(scenario), seed=job.seed, max_events=job.max_events).run()
        row.update(metrics_of(result))
    except HeteroError as err:
        row["error"] = str(err)
    except Exception as err:  # a bug in hetero: the sweep goes on, the row says what happened
        log.exception("point %d seed %d", job.point, job.seed)
        row["error"] = f"unexpected {type(err).__name__}: {err}"
    return row


def default_workers() -> int:
    """The machine's cores (those this process may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A Client on a new LocalCluster of ``workers`` processes, or on the cluster at ``scheduler``."""
    from distributed import Client, LocalCluster

    if not logging.getLogger("hetero").isEnabledFor(logging.INFO):  # -v shows Dask's own log too
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({err}); "
                             "start one with 'dask scheduler' or leave --scheduler out for a local cluster") from None
        try:
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise InputError(f"--scheduler {scheduler}: the cluster has no workers after {CONNECT_TIMEOUT_S} s; "
                                 f"start some with 'dask worker {scheduler}'") from None
            yield client
        finally:
            client.close()
        return
    n = default_workers() if workers is None else workers
    # the worker processes start with SIGINT ignored: Ctrl-C reaches the whole process group, and
    # it is this process that stops them (closing the cluster), not each worker with a traceback
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               scheduler_kwargs={"dashboard": False}, silence_logs=logging.ERROR)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def worker_count(client: Any) -> int:
    """Threads across the cluster's workers (at least 1)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))


def batch_size(pending: int, workers: int, asked: int | None) -> int:
    """Simulations per task: as asked, else about four tasks per worker, 1 to 32."""
    if asked is not None:
        return asked
    return max(1, min(32, math.ceil(pending / (4 * workers))))


def run_sweep(sweep: Sweep, output: str | os.PathLike[str], client: Any, *, batch: int | None = None,
              max_events: int | None = None, on_start: Callable[[int], None] | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> SweepSummary:
    """Simulate the runs missing from ``output`` on ``client``'s cluster, appending rows as they finish.

    ``on_start(total)`` is told how many runs are to do; ``on_progress(done, failed)`` after each
    batch (failed: runs whose row has an error, plus runs of lost batches).
    """
    from distributed import as_completed

    started = time.perf_counter()
    columns = columns_for(sweep.axes, simulator_has_energy())
    by_index = {p.index: p for p in sweep.points}
    with ResultsFile(output, columns) as results:
        done = results.existing.keys
        jobs = [Job(p.index, seed, p.text, str(sweep.base), p.scenario_hash, max_events)
                for p in sweep.points for seed in p.seeds if (p.scenario_hash, seed) not in done]
        already = sweep.runs - len(jobs)
        workers = worker_count(client)
        size = batch_size(len(jobs), workers, batch if batch is not None else sweep.batch)
        batches = [jobs[i:i + size] for i in range(0, len(jobs), size)]
        log.info("sweep %s: %d runs, %d already in %s, %d to do in %d batches of up to %d on %d workers",
                 sweep.name, sweep.runs, already, output, len(jobs), len(batches), size, workers)
        if on_start is not None:
            on_start(len(jobs))
        futures = client.map(simulate_batch, batches, pure=False)
        sizes = {f.key: len(b) for f, b in zip(futures, batches)}
        computed = failed = lost = lost_runs = 0
        try:
            for future in as_completed(futures):
                try:
                    rows = future.result()
                except Exception as err:  # the worker died or the task could not run: retried next time
                    lost += 1
                    lost_runs += sizes[future.key]
                    failed += sizes[future.key]
                    log.warning("a batch of %d runs was lost (%s: %s); run the sweep again to retry them",
                                sizes[future.key], type(err).__name__, err)
                else:
                    for row in rows:
                        extra = sorted(set(row) - set(columns))
                        if extra:  # e.g. the workers' simulator reports energy, this process's did not
                            log.warning("leaving out %s: not a column of %s", ", ".join(extra), output)
                            row = {k: v for k, v in row.items() if k in columns}
                        point = by_index[row["point"]]
                        row.update({path: format_value(value) for path, value in point.values})
                        row["cost_usd"] = point.cost_usd
                        results.append(row)
                        computed += 1
                        failed += bool(row.get("error"))
                if on_progress is not None:
                    on_progress(computed + lost_runs, failed)
        finally:
            client.cancel(futures)
    return SweepSummary(sweep.runs, already, computed, failed, lost, workers, time.perf_counter() - started,
                        results.existing.dropped_torn_line)
