"""DP: exact partitioning of chains and series of segments over k devices.

Generalises the partition point of Kang et al., "Neurosurgeon: collaborative intelligence between
the cloud and mobile edge", ASPLOS 2017 (one cut between two devices) to any number of cuts over k
devices, with transfer costs and memory capacities.

The nodes, in topological order, split at *cut nodes*: a cut is a node c such that every edge from
c or an earlier node to a later one leaves from c itself. The segments between cuts run in series;
each segment goes whole onto one device and runs there in topological order, the next segment
starting when the cut's output has arrived. Dynamic programming over (segment, device) finds the
best assignment; states keep Pareto labels (finish time, graph-output arrival, and per capped
device its bytes of weights and peak segment activations), so the optimum is exact under memory
capacities too. A chain has one node per segment, so there the result is the optimal schedule.
A DAG without cuts is one segment: dp then equals the best single device.

Energy (:class:`~hetero.schedulers.base.Goal`): a label also carries the dynamic joules of its
prefix (busy power above idle, transfers, graph I/O); a request's energy is the devices' idle watts
x makespan + those joules, nondecreasing in every label field, so the same Pareto pruning stays
exact for ``objective="energy"`` and for the least latency within an energy budget per request.

Memory per device is counted conservatively: weights + graph I/O copies + the largest segment
working set (the cut's data coming in plus every output the segment makes); for a chain of tasks
that take time, without graph I/O on capped devices, this is exactly the peak the schedule needs.
(A task of zero seconds frees its input the instant its output appears, so there it over-counts.)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import LATENCY, Goal, TaskArrays, make_schedule

log = logging.getLogger(__name__)
LABEL_LIMIT = 256


def segments(tasks: TaskArrays) -> list[tuple[int, int]]:
    """Series segments as (first, last) node indices; the last node of each is its cut."""
    reach = np.arange(tasks.n)
    if len(tasks.edge_src):
        np.maximum.at(reach, tasks.edge_src, tasks.edge_dst)
    furthest_before = np.maximum.accumulate(np.concatenate([[-1], reach[:-1]]))
    result, first = [], 0
    for i in range(tasks.n):
        if furthest_before[i] <= i:
            result.append((first, i))
            first = i + 1
    return result


@dataclass(frozen=True)
class Label:
    """One Pareto-optimal way to have finished a prefix of segments, the last on ``device``."""

    finish_s: float
    output_s: float
    fixed_bytes: tuple[float, ...]
    peak_bytes: tuple[float, ...]
    device: int
    parent: "Label | None"
    energy_J: float = 0.0

    def dominates(self, other: "Label") -> bool:
        return (
            self.finish_s <= other.finish_s
            and self.output_s <= other.output_s
            and self.energy_J <= other.energy_J
            and all(a <= b for a, b in zip(self.fixed_bytes, other.fixed_bytes))
            and all(a <= b for a, b in zip(self.peak_bytes, other.peak_bytes))
        )


class SegmentDP:
    """The dynamic program over series segments."""

    def __init__(self, tasks: TaskArrays, goal: Goal = LATENCY) -> None:
        self.tasks = tasks
        self.goal = goal
        self.segments = segments(tasks)
        # a capacity above everything the graph could ever hold at once cannot bind: left out of the labels
        most = float(tasks.weight_bytes.sum() + tasks.output_bytes.sum() + tasks.input_bytes.sum()
                     + tasks.result_bytes.sum() + tasks.edge_bytes.sum())
        self.capped = [d for d in range(tasks.k) if math.isfinite(tasks.capacity_bytes[d]) and tasks.capacity_bytes[d] < most]
        self.truncated = False

    def simulate(self, segment: int, device: int, previous: Label | None) -> tuple[list[float], list[float]]:
        """Start and end of each node of a segment placed on device after the previous label."""
        tasks = self.tasks
        first, last = self.segments[segment]
        free = 0.0 if previous is None else previous.finish_s
        starts, ends = [], []
        for i in range(first, last + 1):
            ready = float(tasks.input_s[i, device])
            for e in tasks.pred_edges[i].tolist():
                source = int(tasks.edge_src[e])
                if source >= first:
                    ready = max(ready, ends[source - first])
                else:
                    assert previous is not None
                    ready = max(ready, previous.finish_s + float(tasks.comm_s[e, previous.device, device]))
            begin = max(free, ready)
            free = begin + float(tasks.compute_s[i, device])
            starts.append(begin)
            ends.append(free)
        return starts, ends

    def extend(self, segment: int, device: int, previous: Label | None) -> Label | None:
        """The label of placing a segment on a device after ``previous``, or None if it does not fit."""
        tasks = self.tasks
        first, last = self.segments[segment]
        nodes = slice(first, last + 1)
        if not np.isfinite(tasks.compute_s[nodes, device]).all():
            return None
        _, ends = self.simulate(segment, device, previous)
        output_s = 0.0 if previous is None else previous.output_s
        results = tasks.result_s[nodes, device] + np.array(ends)
        if tasks.result_bytes[nodes].any():
            output_s = max(output_s, float(results[tasks.result_bytes[nodes] > 0].max()))
        fixed = list(previous.fixed_bytes) if previous else [0.0] * len(self.capped)
        peak = list(previous.peak_bytes) if previous else [0.0] * len(self.capped)
        if device in self.capped:
            slot = self.capped.index(device)
            off_host = tasks.devices[device] != tasks.host
            io_outputs = (tasks.result_bytes[nodes] > 0) & off_host
            fixed[slot] += float(tasks.weight_bytes[nodes].sum())
            if off_host:
                fixed[slot] += float(tasks.input_bytes[nodes].sum() + tasks.output_bytes[nodes][io_outputs].sum())
            working = float(tasks.output_bytes[nodes][~io_outputs].sum())
            if previous is not None and previous.device == device:
                working += float(tasks.output_bytes[first - 1])
            elif previous is not None:
                working += float(tasks.edge_bytes[tasks.succ_edges[first - 1]].sum())
            peak[slot] = max(peak[slot], working)
            if fixed[slot] + peak[slot] > tasks.capacity_bytes[device]:
                return None
        energy = 0.0
        if self.goal.uses_energy and tasks.energy is not None:
            terms = tasks.energy
            energy = previous.energy_J if previous is not None else 0.0
            energy += float(terms.extra_J[nodes, device].sum() + terms.input_J[nodes, device].sum()
                            + terms.result_J[nodes, device].sum())
            if previous is not None:
                incoming = tasks.succ_edges[first - 1]
                energy += float(terms.comm_J[incoming, previous.device, device].sum())
        return Label(ends[-1], output_s, tuple(fixed), tuple(peak), device, previous, energy)

    def prune(self, labels: list[Label]) -> list[Label]:
        goal, energy = self.goal, self.tasks.energy
        if goal.uses_energy and energy is not None:
            idle = energy.idle_W
            if goal.energy_budget_J is not None:  # what is over the budget already only grows
                labels = [l for l in labels if idle * max(l.finish_s, l.output_s) + l.energy_J <= goal.energy_budget_J * (1 + 1e-9)]
            if goal.objective == "energy":
                labels.sort(key=lambda l: (idle * max(l.finish_s, l.output_s) + l.energy_J, l.finish_s))
                dominates = self._cheaper
            else:
                labels.sort(key=lambda l: (l.finish_s, l.output_s, l.energy_J))
                dominates = Label.dominates
        else:
            labels.sort(key=lambda l: (l.finish_s, l.output_s))
            dominates = Label.dominates
        kept: list[Label] = []
        for label in labels:
            if not any(dominates(other, label) for other in kept):
                kept.append(label)
        if len(kept) > LABEL_LIMIT:
            self.truncated = True
            kept = kept[:LABEL_LIMIT]
        return kept

    def _cheaper(self, one: Label, other: Label) -> bool:
        """For the energy objective: ``one`` ends no costlier than ``other`` whatever follows.

        Every later time is max(finish + c, d) or max(output, ...): 1-Lipschitz in finish and output,
        so the makespan grows by at most max(finish - other's, output - other's, 0) and the energy
        by idle_W times that.
        """
        assert self.tasks.energy is not None
        later = max(one.finish_s - other.finish_s, one.output_s - other.output_s, 0.0)
        return (
            one.energy_J + self.tasks.energy.idle_W * later <= other.energy_J
            and all(a <= b for a, b in zip(one.fixed_bytes, other.fixed_bytes))
            and all(a <= b for a, b in zip(one.peak_bytes, other.peak_bytes))
        )

    def solve(self) -> Label:
        frontier: list[Label] | None = None
        for segment in range(len(self.segments)):
            candidates: list[list[Label]] = [[] for _ in range(self.tasks.k)]
            for previous in frontier if frontier is not None else [None]:
                for device in range(self.tasks.k):
                    label = self.extend(segment, device, previous)
                    if label is not None:
                        candidates[device].append(label)
            frontier = [label for per_device in candidates for label in self.prune(per_device)]
            if not frontier and self.goal.energy_budget_J is not None:
                least = SegmentDP(self.tasks, Goal("energy")).solve()
                least_J = self.tasks.energy.idle_W * max(least.finish_s, least.output_s) + least.energy_J
                raise ScheduleError(f"dp: no partition meets the energy budget of {self.goal.energy_budget_J:.6g} J per "
                                    f"request (the least energy is {least_J:.6g} J); raise energy_budget or plan for energy")
            if not frontier:
                first, last = self.segments[segment]
                raise ScheduleError(
                    f"dp: no device can take segment {self.tasks.names[first]}..{self.tasks.names[last]} "
                    "within its capabilities and memory; try heft"
                )
        assert frontier is not None
        keyed = [(self.goal.key(self.tasks, max(l.finish_s, l.output_s), l.energy_J), l) for l in frontier]
        within = [(key, l) for key, l in keyed if key is not None]
        if not within:
            least = min(self.tasks.energy.idle_W * max(l.finish_s, l.output_s) + l.energy_J for l in frontier)
            raise ScheduleError(f"dp: no partition meets the energy budget of {self.goal.energy_budget_J:.6g} J per request "
                                f"(the least energy is {least:.6g} J); raise energy_budget or plan for energy")
        return min(within, key=lambda item: (item[0], item[1].device))[1]


def dp(tasks: TaskArrays, goal: Goal = LATENCY) -> Schedule:
    """Exact series-segment partitioning on compiled tasks, for the goal's objective."""
    if tasks.n == 0:
        return make_schedule(tasks, np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), "dp")
    program = SegmentDP(tasks, goal)
    best = program.solve()
    chosen: list[Label] = []
    label: Label | None = best
    while label is not None:
        chosen.append(label)
        label = label.parent
    chosen.reverse()
    placement = np.zeros(tasks.n, dtype=np.int64)
    start, end = np.zeros(tasks.n), np.zeros(tasks.n)
    previous: Label | None = None
    for segment, label in enumerate(chosen):
        first, last = program.segments[segment]
        starts, ends = program.simulate(segment, label.device, previous)
        placement[first : last + 1] = label.device
        start[first : last + 1], end[first : last + 1] = starts, ends
        previous = label
    sizes = [last - first + 1 for first, last in program.segments]
    notes = [f"dp: {len(sizes)} series segments (largest {max(sizes)} nodes); exact over whole-segment placements"]
    if program.truncated:
        notes.append(f"dp: more than {LABEL_LIMIT} Pareto labels in a state were cut; the result may not be optimal")
        log.warning("dp: label limit %d reached; result may not be optimal", LABEL_LIMIT)
    return make_schedule(tasks, placement, start, end, "dp", notes=notes)
