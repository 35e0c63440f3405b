"""Single device: everything on the one device that finishes soonest.

The baseline every heterogeneous schedule is compared with (e.g. the "all on the mobile device"
and "all in the cloud" baselines of Kang et al., "Neurosurgeon: collaborative intelligence between
the cloud and mobile edge", ASPLOS 2017). Graph input and output still cross from and to the host.
"""

from __future__ import annotations

import numpy as np

from hetero.schedule import Schedule, ScheduleError
from hetero.schedulers.base import LATENCY, Goal, TaskArrays, list_times, make_schedule


def on_device(tasks: TaskArrays, device: int) -> Schedule | None:
    """Everything on one device, or None when it cannot run every node or lacks the memory."""
    if not np.isfinite(tasks.compute_s[:, device]).all():
        return None
    placement = np.full(tasks.n, device, dtype=np.int64)
    start, end = list_times(tasks, placement)
    schedule = make_schedule(tasks, placement, start, end, "single", notes=(f"single: all on {tasks.devices[device]}",))
    if schedule.memory_bytes[tasks.devices[device]] > tasks.capacity_bytes[device]:
        return None
    return schedule


def single(tasks: TaskArrays, goal: Goal = LATENCY) -> Schedule:
    """The best single-device schedule for the goal (least latency, least energy, or least latency within the budget)."""
    candidates = [s for s in (on_device(tasks, d) for d in range(tasks.k)) if s is not None]
    if not candidates:
        reasons = []
        for d, device in enumerate(tasks.devices):
            missing = np.flatnonzero(~np.isfinite(tasks.compute_s[:, d]))
            reasons.append(f"{device} cannot run {tasks.names[missing[0]]}" if len(missing) else f"{device} lacks memory")
        raise ScheduleError(f"single: no device can run every task ({'; '.join(reasons)}); use heft or dp")
    keyed = [(goal.schedule_key(tasks, s), s) for s in candidates]
    within = [(key, s) for key, s in keyed if key is not None]
    if not within:
        raise ScheduleError(f"single: no device alone meets the energy budget of {goal.energy_budget_J:.6g} J per request; "
                            "raise energy_budget or use dp")
    return min(within, key=lambda item: item[0])[1]
