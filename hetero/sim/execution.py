"""Requests in flight: the DAG bookkeeping of one request and the device workers that run it.

An :class:`Execution` is one attempt of one request through a compiled plan. An op may start when
its inputs from other devices have arrived and its device is free; the device runs its ops in the
plan's order. A :class:`DeviceWorker` serves, one run at a time, the ready executions queued on it,
oldest request first. A run goes as far as the execution's ops on that device have their inputs,
and takes one simulated timeout: this is exact, not an approximation, because

* op ends inside the run are known in advance (speeds are scripted, see ``rates``), so transfers
  leave at each op's own end, scheduled when the run starts, and
* when an older request becomes ready mid-run, the worker cuts the run at the next op boundary,
  which is when a per-op simulation would switch to it (the same happens to cancelled requests,
  and a failed device stops at once, keeping the ops that had finished), and
* before the policy decides anything, it is told about the ops that have ended inside runs still
  going (``Simulator.catch_up``), so it knows what a per-op simulation would have told it.

tests/test_sim.py checks this against ``coalesce=False`` (one event per op): same latencies.
"""

from __future__ import annotations

from bisect import bisect_right
from functools import partial
from heapq import heappop, heappush
from itertools import accumulate, count
from typing import TYPE_CHECKING, Callable

import simpy

from hetero.sim.effects import charge
from hetero.sim.plan import RESULT, CompiledPlan

if TYPE_CHECKING:
    from hetero.sim.engine import Request, Simulator


class Run:
    """Ops ``nodes`` of one execution on one device from start_s; op i ends at ends[i].

    ``valid`` is how many of them really run (fewer when the run is cut); the first ``observed``
    have been reported to the policy.
    """

    __slots__ = ("execution", "device", "nodes", "start_s", "ends", "valid", "observed")

    def __init__(self, execution: "Execution", device: int, nodes: tuple[int, ...], start_s: float, ends: list[float]) -> None:
        self.execution = execution
        self.device = device
        self.nodes = nodes
        self.start_s = start_s
        self.ends = ends
        self.valid = len(nodes)
        self.observed = 0

    def ran(self, position: int) -> Callable[[], bool]:
        """Whether op ``position`` of the run really ran (asked when its output would leave)."""
        return lambda: self.valid > position


class Execution:
    """One attempt of one request through one plan."""

    def __init__(self, sim: "Simulator", plan: CompiledPlan, request: "Request", noise: list[float] | None) -> None:
        self.sim = sim
        self.plan = plan
        self.request = request
        self.seq = request.seq
        self.noise = noise
        self.waiting = list(plan.remote_inputs)
        self.cursor = [0] * len(sim.workers)
        self.active = [False] * len(sim.workers)
        self.pending = plan.pending
        self.aborted = False
        self.moved = False  # aborted to follow a newer plan (Simulator._move_queued)
        self.finished = sim.env.event()
        self.start_s = sim.env.now

    def start(self) -> None:
        """Send the graph input to the devices that need it and queue the devices that can begin."""
        sim, plan = self.sim, self.plan
        if self.pending == 0:
            self.finished.succeed(True)
            return
        for node, nbytes in plan.graph_inputs:
            label = f"input -> {sim.node_names[node]}" if sim.tracing else ""
            sim.network.send(nbytes, sim.host, sim.device_names[plan.device_of[node]], sim.env.now,
                             partial(self.arrived, node), label=label)
        for device in plan.devices_used:
            self.offer(device)

    def offer(self, device: int) -> None:
        """Queue this execution on the device when its next op there has all its inputs."""
        if self.active[device]:
            return
        ops = self.plan.device_ops[device]
        position = self.cursor[device]
        if position < len(ops) and self.waiting[ops[position]] == 0:
            self.active[device] = True
            self.sim.workers[device].push(self)

    def arrived(self, node: int) -> None:
        """An input of ``node`` from another device (or the host) has arrived."""
        if self.aborted:
            return
        left = self.waiting[node] - 1
        self.waiting[node] = left
        if left == 0:
            self.offer(self.plan.device_of[node])

    def result_arrived(self) -> None:
        """A graph output has reached the host."""
        if self.aborted:
            return
        self.pending -= 1
        if self.pending == 0:
            self.finished.succeed(True)

    def begin_run(self, device: int, now: float) -> Run:
        """The longest stretch of ready ops from the cursor; schedules their outgoing transfers."""
        plan = self.plan
        ops = plan.device_ops[device]
        first = self.cursor[device]
        segment_end = plan.segment_end[device]
        last, waiting = segment_end[first], self.waiting
        while plan.coalesce and last < len(ops) and waiting[ops[last]] == 0:
            last = segment_end[last]
        nodes = ops[first:last]
        if self.noise is None:
            works = plan.device_work_s[device][first:last]
        else:
            noise, work = self.noise, plan.work_s
            works = [work[i] * noise[i] for i in nodes]
        if self.sim.world.effects is not None:  # wake-up after idling, contention (hetero.sim.effects)
            works = charge(self.sim, device, now, list(works))
        run = Run(self, device, nodes, now, self.sim.speeds[device].finishes(now, list(accumulate(works))))
        sends = plan.sends
        for position, node in enumerate(nodes):
            if sends[node]:
                self._send(run, position, node)
        return run

    def _send(self, run: Run, position: int, node: int) -> None:
        sim = self.sim
        source = sim.device_names[run.device]
        valid = run.ran(position)
        for target, target_device, nbytes in self.plan.sends[node]:
            if target == RESULT:
                arrive, destination = self.result_arrived, sim.host
                label = f"{sim.node_names[node]} -> output" if sim.tracing else ""
            else:
                arrive, destination = partial(self.arrived, target), sim.device_names[target_device]
                label = f"{sim.node_names[node]} -> {sim.node_names[target]}" if sim.tracing else ""
            sim.network.send(nbytes, source, destination, run.ends[position], arrive, valid, label)

    def end_run(self, run: Run) -> None:
        """Account the ops that ran; queue the next ones or finish."""
        device, done = run.device, run.valid
        self.cursor[device] += done
        self.active[device] = False
        self.sim.ran(run)
        if self.aborted:
            return
        self.pending -= done
        if self.pending == 0:
            self.finished.succeed(True)
        else:
            self.offer(device)

    def needs(self, device: int, now: float) -> bool:
        """Whether ops of this execution on ``device`` have not finished by now."""
        left = len(self.plan.device_ops[device]) - self.cursor[device]
        run = self.sim.workers[device].current
        if run is not None and run.execution is self:
            left -= bisect_right(run.ends, now, 0, run.valid)
        return left > 0

    def move(self) -> None:
        """Give up this attempt before any op ran, to be routed again (onto a newer plan)."""
        self.moved = True
        self.abort()

    def abort(self) -> None:
        """Give up this attempt (a device it needs failed): cut its runs, drop its queued work."""
        if self.aborted or self.finished.triggered:
            return
        self.aborted = True
        for device in self.plan.devices_used:
            worker = self.sim.workers[device]
            if worker.current is not None and worker.current.execution is self:
                worker.cut("cancel")
        self.finished.succeed(False)


class DeviceWorker:
    """One device: serves queued executions one run at a time, oldest request first."""

    def __init__(self, sim: "Simulator", index: int, name: str) -> None:
        self.sim = sim
        self.env = sim.env
        self.index = index
        self.name = name
        self.queue: list[tuple[int, int, Execution]] = []
        self.current: Run | None = None
        self.alive = True
        self.busy: list[tuple[float, float]] = []
        self._order = count()
        self._wake: simpy.Event | None = None
        self._cutting = False
        self.process = self.env.process(self._work())

    def push(self, execution: Execution) -> None:
        """Queue a ready execution; an older one than the running one cuts the run."""
        heappush(self.queue, (execution.seq, next(self._order), execution))
        run = self.current
        if run is None:
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()
        elif execution.seq < run.execution.seq:
            self.cut("preempt")

    def cut(self, why: str) -> None:
        """End the current run at its next op boundary."""
        if self.current is not None and not self._cutting:
            self._cutting = True
            self.process.interrupt(why)

    def fail(self) -> None:
        """The device stops now: queued work is dropped, the running op is lost."""
        self.alive = False
        self.queue.clear()
        self.cut("failed")

    def recover(self) -> None:
        self.alive = True
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _work(self):
        env = self.env
        while True:
            if not self.queue or not self.alive:
                self._wake = env.event()
                yield self._wake
                continue
            execution = heappop(self.queue)[2]
            if execution.aborted:
                continue
            run = execution.begin_run(self.index, env.now)
            self.current = run
            end = run.ends[-1]
            while True:
                try:
                    yield env.timeout(end - env.now)
                    break
                except simpy.Interrupt as interrupt:
                    end = self._shorten(run, interrupt.cause)
                    if end <= env.now:
                        break
            self.current = None
            self._cutting = False
            self.busy.append((run.start_s, env.now))
            execution.end_run(run)

    def _shorten(self, run: Run, cause: str) -> float:
        """Cut ``run``: at once when the device has failed, else at the end of the op running now."""
        now = self.env.now
        done = bisect_right(run.ends, now, 0, run.valid)
        if not self.alive or (done and run.ends[done - 1] == now) or done == run.valid:
            run.valid = done
            return now
        run.valid = done + 1
        return run.ends[done]
