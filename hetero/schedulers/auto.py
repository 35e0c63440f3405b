"""Auto: pick an algorithm by the graph's shape and size, and say which and why.

A selection rule, not an algorithm of its own: chains go to the exact dp (Kang et al.,
Neurosurgeon, ASPLOS 2017, generalised); graphs of at most ``ILP_MAX_TASKS`` nodes on at most
``ILP_MAX_DEVICES`` devices to the exact ilp; everything else to the best of the list schedulers
heft (Topcuoglu et al. 2002) and peft (Arabnejad and Barbosa 2014), and dp when the graph is a
series of several segments. The throughput objective takes the smallest steady-state period among
the pipeline DP's stages (PipeDream) and heft's and peft's placements (wide DAGs pipeline better
when their parallel branches spread over devices than as contiguous stages).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import Goal, TaskArrays, placement_indices
from hetero.schedulers.dp import dp, segments
from hetero.schedulers.heft import heft
from hetero.schedulers.ilp import ilp
from hetero.schedulers.peft import peft
from hetero.schedulers.pipeline import pipeline, pipeline_period

log = logging.getLogger(__name__)
ILP_MAX_TASKS = 12
ILP_MAX_DEVICES = 4
ILP_TIME_LIMIT_S = 10.0


def _noted(schedule: Schedule, note: str) -> Schedule:
    log.info(note)
    return dataclasses.replace(schedule, notes=(note,) + schedule.notes)


def _best_period(tasks: TaskArrays) -> Schedule:
    """The pipeline stages, or heft's or peft's placement when that pipelines faster."""
    results: list[Schedule] = []
    for algorithm in (pipeline, heft, peft):
        try:
            result = algorithm(tasks)
        except ScheduleError as err:
            log.info("auto: %s", err)
            continue
        period = pipeline_period(tasks, placement_indices(tasks, result))
        results.append(dataclasses.replace(result, objective="throughput", period_s=period))
    if not results:
        raise ScheduleError("auto: no schedule fits the devices' capabilities and memory")
    best = min(results, key=lambda s: s.period_s)
    tried = ", ".join(f"{s.algorithm} {s.period_s:.6g} s" for s in results)
    return _noted(best, f"auto: throughput objective -> smallest period of {tried}: {best.algorithm}")


def auto(tasks: TaskArrays, objective: str = "latency") -> Schedule:
    """The schedule of the algorithm this graph suits best, with an ``auto:`` note saying which."""
    if objective == "throughput":
        return _best_period(tasks)
    if tasks.is_chain():
        return _noted(dp(tasks), f"auto: the {tasks.n} nodes form a chain -> dp (exact)")
    candidates: list[tuple[str, Callable[[TaskArrays], Schedule]]] = [("heft", heft), ("peft", peft)]
    if tasks.n <= ILP_MAX_TASKS and tasks.k <= ILP_MAX_DEVICES:
        try:
            result = ilp(tasks, time_limit_s=ILP_TIME_LIMIT_S)
            return _noted(result, f"auto: small graph ({tasks.n} nodes, {tasks.k} devices) -> ilp (exact)")
        except ScheduleError as err:
            log.info("auto: ilp failed (%s); trying the heuristics", err)
    pieces = len(segments(tasks))
    if pieces > 1:
        candidates.append(("dp", dp))
    results: list[Schedule] = []
    errors: list[ScheduleError] = []
    for name, algorithm in candidates:
        try:
            results.append(algorithm(tasks))
        except ScheduleError as err:
            errors.append(err)
    if not results:
        raise errors[0]
    best = min(results, key=lambda s: s.makespan_s)
    tried = ", ".join(f"{s.algorithm} {s.makespan_s:.6g} s" for s in results)
    return _noted(best, f"auto: {tasks.n} nodes, {pieces} series segments -> best of {tried}: {best.algorithm}")


def auto_energy(tasks: TaskArrays, goal: Goal) -> Schedule:
    """Energy goals: ilp on small graphs that are not chains (exact), else the series-segment dp (exact
    over whole-segment placements, so exact on chains).

    With a budget under the latency objective, heft's and peft's schedules compete too when they
    fit the budget (wide DAGs run faster spread than in segments).
    """
    if not tasks.is_chain() and tasks.n <= ILP_MAX_TASKS and tasks.k <= ILP_MAX_DEVICES:
        try:
            result = ilp(tasks, time_limit_s=ILP_TIME_LIMIT_S, goal=goal)
            return _noted(result, f"auto: small graph ({tasks.n} nodes, {tasks.k} devices), energy goal -> ilp (exact)")
        except ScheduleError as err:
            log.info("auto: ilp failed (%s); trying dp", err)
    result = dp(tasks, goal)
    if goal.objective == "energy":
        return _noted(result, f"auto: energy objective -> dp (exact over whole-segment placements; "
                              f"{len(segments(tasks))} series segments)")
    results = [result]
    for algorithm in (heft, peft):
        try:
            candidate = algorithm(tasks)
        except ScheduleError as err:
            log.info("auto: %s", err)
            continue
        if goal.schedule_key(tasks, candidate) is not None:
            results.append(candidate)
    keyed = [(goal.schedule_key(tasks, s), s) for s in results]
    best = min((item for item in keyed if item[0] is not None), key=lambda item: item[0], default=(None, result))[1]
    tried = ", ".join(f"{s.algorithm} {s.makespan_s:.6g} s" for s in results)
    return _noted(best, f"auto: least latency within {goal.energy_budget_J:.6g} J per request -> best of {tried}: {best.algorithm}")
