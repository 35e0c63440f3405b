"""Schedulers by name: ``schedule(graph, cost, algorithm, objective, memory_bytes) -> Schedule``.

One algorithm per module, each citing its source: single, greedy, dp (series-segment DP after
Neurosurgeon), heft (Topcuoglu et al. 2002), peft (Arabnejad and Barbosa 2014), ilp (HiGHS MILP),
pipeline (PipeDream's stage DP, the throughput objective) and auto (picks one and says which).
Every one takes the same compiled :class:`~hetero.schedulers.base.TaskArrays`, so model graphs
and problem-file task graphs go through the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Mapping

import networkx as nx

from hetero.cost.energy import EnergyModel
from hetero.cost.protocol import CostModel
from hetero.errors import InputError
from hetero.schedule import Schedule
# Modules, not their functions, are bound here, so that ``import hetero.schedulers.heft`` stays a module.
from hetero.schedulers import auto, dp, greedy, heft, ilp, peft, pipeline, single
from hetero.schedulers.base import Goal, TaskArrays, compile_tasks, placement_indices, with_energy

log = logging.getLogger(__name__)

ALGORITHMS: dict[str, Callable[[TaskArrays], Schedule]] = {
    "single": single.single,
    "greedy": greedy.greedy,
    "dp": dp.dp,
    "heft": heft.heft,
    "peft": peft.peft,
    "ilp": ilp.ilp,
    "pipeline": pipeline.pipeline,
}
OBJECTIVES = ("latency", "throughput", "energy")
# The algorithms that plan for energy (objective energy, or latency within energy_budget_J)
ENERGY_ALGORITHMS = ("auto", "dp", "single", "ilp")


def algorithm_names() -> list[str]:
    """Names accepted by :func:`schedule`."""
    return ["auto", *ALGORITHMS]


def schedule(
    graph: nx.DiGraph,
    cost: CostModel,
    algorithm: str = "auto",
    objective: str = "latency",
    memory_bytes: Mapping[str, int] | None = None,
    *,
    time_limit_s: float = ilp.DEFAULT_TIME_LIMIT_S,
    validate: bool = True,
    energy: EnergyModel | None = None,
    energy_budget_J: float | None = None,
) -> Schedule:
    """Schedule a model Graph or task graph on the cost model's devices; the result is validated.

    ``memory_bytes`` maps device names to capacities in bytes. With ``objective="throughput"``,
    auto and dp use the pipeline-stage DP; other algorithms keep their latency schedule and report
    the steady-state period of its placement. ``energy`` (device power, link energy) puts the
    energy of one request on the result (``energy_J``, when every device has power figures); ``objective="energy"`` minimises it and
    ``energy_budget_J`` bounds it under the latency objective, both with auto, dp, single or
    ilp (:data:`ENERGY_ALGORITHMS`; the others refuse). ``solve_s`` on the result is the time the
    algorithm took (compiling the graph included, validation excluded).
    """
    if algorithm not in ALGORITHMS and algorithm != "auto":
        raise InputError(f"unknown scheduling algorithm '{algorithm}' (choose from {', '.join(algorithm_names())})")
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective '{objective}' (choose from {', '.join(OBJECTIVES)})")
    goal = _goal(algorithm, objective, energy, energy_budget_J)
    started = time.perf_counter()
    tasks = with_energy(compile_tasks(graph, cost, memory_bytes), energy if goal.uses_energy else None)
    if goal.uses_energy and algorithm == "ilp":
        result = ilp.ilp(tasks, time_limit_s=time_limit_s, goal=goal)
    elif goal.uses_energy:
        result = auto.auto_energy(tasks, goal) if algorithm == "auto" else ALGORITHMS[algorithm](tasks, goal)
    elif algorithm == "auto":
        result = auto.auto(tasks, objective)
    elif objective == "throughput" and algorithm == "dp":
        result = pipeline.pipeline(tasks)
    elif algorithm == "ilp":
        result = ilp.ilp(tasks, time_limit_s=time_limit_s)
    else:
        result = ALGORITHMS[algorithm](tasks)
    if objective == "throughput" and result.period_s is None:
        period = pipeline.pipeline_period(tasks, placement_indices(tasks, result))
        note = f"{result.algorithm} minimises latency; steady-state period of its placement {period:.6g} s"
        result = dataclasses.replace(result, objective="throughput", period_s=period, notes=result.notes + (note,))
    if goal.uses_energy:
        result = dataclasses.replace(result, objective=objective)
    if energy is not None and not energy.missing(result.devices):  # a partial sum would mislead: None
        result = dataclasses.replace(result, energy_J=energy.schedule_J(result).total_J)
    result = dataclasses.replace(result, solve_s=time.perf_counter() - started)
    log.info("%s: makespan %.6g s in %.3f s", result.algorithm, result.makespan_s, result.solve_s)
    if validate:
        result.validate(tasks.tasks, cost, memory_bytes)
    return result


def _goal(algorithm: str, objective: str, energy: EnergyModel | None, budget_J: float | None) -> Goal:
    """The goal of an energy-aware request, refused where the algorithm or the objective cannot plan for it."""
    if budget_J is not None and not (math.isfinite(budget_J) and budget_J > 0):
        raise InputError(f"energy_budget_J must be a positive number of joules per request, got {budget_J!r}")
    if objective != "energy" and budget_J is None:
        return Goal()
    what = "objective energy" if objective == "energy" else "an energy budget per request"
    if objective == "throughput":
        raise InputError("an energy budget applies to the latency objective, not throughput; drop the budget or use "
                         "--objective latency")
    if objective == "energy" and budget_J is not None:
        raise InputError("an energy budget bounds the latency objective; with --objective energy leave it out")
    if algorithm not in ENERGY_ALGORITHMS:
        raise InputError(f"{what}: algorithm {algorithm} does not plan for energy; use one of {', '.join(ENERGY_ALGORITHMS)}")
    if energy is None:
        raise InputError(f"{what} needs device power figures (catalog devices have them; give power for the others)")
    return Goal(objective if objective == "energy" else "latency", budget_J)


__all__ = [
    "ALGORITHMS",
    "ENERGY_ALGORITHMS",
    "OBJECTIVES",
    "TaskArrays",
    "algorithm_names",
    "compile_tasks",
    "schedule",
]


def fixed_schedule(graph: nx.DiGraph, cost: CostModel, placement: Mapping[str, str], algorithm: str = "fixed") -> Schedule:
    """The timed schedule of a given placement (list scheduling in topological order)."""
    from hetero.schedulers.base import list_times, make_schedule

    tasks = compile_tasks(graph, cost)
    missing = [name for name in tasks.names if name not in placement]
    if missing:
        raise InputError(f"the placement does not place node {missing[0]} ({len(missing)} nodes unplaced)")
    index = {device: d for d, device in enumerate(tasks.devices)}
    unknown = sorted({placement[n] for n in tasks.names} - set(index))
    if unknown:
        raise InputError(f"the placement uses device '{unknown[0]}', not among {', '.join(tasks.devices)}")
    import numpy as np

    chosen = np.array([index[placement[name]] for name in tasks.names], dtype=np.int64)
    for i, name in enumerate(tasks.names):
        if chosen[i] not in tasks.capable(i):
            raise InputError(f"the placement puts {name} on {placement[name]}, which has no kernel for it")
    start, end = list_times(tasks, chosen)
    return make_schedule(tasks, chosen, start, end, algorithm)
