"""The simulator: requests through partitioned graphs on devices and links, driven by a Policy.

One request's life (:meth:`Simulator.serve`): the policy routes it to a plan; if the plan's
weights are still being moved to their devices it runs on the last plan used, or waits; it runs
as an :class:`~hetero.sim.execution.Execution` (true DAG semantics, several requests in flight);
when a device it needs fails, it is retried on the policy's new plan, or lost when there is none.
After each completed request the policy may rebalance; a new plan's weights travel over the links
(from a live device that holds them, else from the host) before requests use it. Once they are in
place, requests still queued on the old plan that have not started an op move to the new one
(``rerouted``), so a backlog built up on a slow device before the re-plan does not stay there;
policies whose ``route`` depends on the request (``moves_queued = False``, least-loaded) keep theirs.
"""

from __future__ import annotations

import logging
import math
import numbers
from bisect import bisect_left, bisect_right
from collections import defaultdict
from typing import Callable, Generator

import numpy as np
import simpy

from hetero.errors import HeteroError, InputError, SimulationError
from hetero.policy import Policy, PolicyContext, make_policy
from hetero.problem import topological_order
from hetero.schedule import Schedule
from hetero.sim.execution import DeviceWorker, Execution, Run
from hetero.sim.metrics import Recorder, SimResult
from hetero.sim.network import Network
from hetero.sim.plan import CompiledPlan, compile_plan
from hetero.sim.rates import device_speeds, link_factors
from hetero.sim.scenario import DynamicEvent, Scenario
from hetero.sim.workload import start_script, start_workload
from hetero.sim.world import World

log = logging.getLogger(__name__)


DEFAULT_MAX_EVENTS = 20_000_000  # op executions: about a minute of simulation, a few GB at most


def estimated_requests(scenario: Scenario, plan: Schedule) -> float:
    """How many requests the workload sends: rate x duration, the trace's arrivals before the
    duration, or for a closed loop at most clients x duration / (think + makespan) and at most
    duration / (the plan's busiest device time per request) plus the clients; capped by ``requests``."""
    workload, duration = scenario.workload, scenario.duration_s
    if workload.kind == "poisson":
        count = workload.rate_per_s * duration
    elif workload.kind == "trace":
        count = float(bisect_left(workload.arrivals_s, duration))
    else:
        busy: dict[str, float] = defaultdict(float)
        for slot in plan.slots:
            busy[slot.device] += slot.end_s - slot.start_s
        floor_s = max([*busy.values(), plan.period_s or 0.0, 0.0])
        cycle_s = workload.think_s + plan.makespan_s
        bounds = [workload.clients * (duration / cycle_s + 1) if cycle_s > 0 else math.inf,
                  duration / floor_s + workload.clients if floor_s > 0 else math.inf]
        count = min(bounds)
    return count if workload.requests is None else min(count, float(workload.requests))


def check_size(scenario: Scenario, ops: int, plan: Schedule, limit: int) -> None:
    """Refuse a workload estimated to need more than ``limit`` op executions (requests x ops),
    saying how to shrink it."""
    requests = estimated_requests(scenario, plan)
    total = requests * ops
    if total <= limit:
        return
    how = {"poisson": "lower workload.rate", "trace": "use a shorter arrival trace",
           "closed": "use fewer workload.clients or a longer workload.think"}[scenario.workload.kind]
    raise SimulationError(
        f"{scenario.where}: the workload is about {requests:.3g} requests x {ops} ops = {total:.3g} op executions, "
        f"more than the limit of {limit:.3g}; shorten duration, {how} or set workload.requests "
        f"(or raise the limit: hetero simulate --max-events N)"
    )


class Request:
    """One inference request: arrival order ``seq`` is its priority on every device."""

    __slots__ = ("id", "seq", "arrival_s", "attempts")

    def __init__(self, number: int, arrival_s: float) -> None:
        self.id = self.seq = number
        self.arrival_s = arrival_s
        self.attempts = 0


class Simulator:
    """Build with a scenario and its world, then :meth:`run` once.

    ``seed`` overrides the scenario's (a whole number >= 0); ``max_events`` is the most op
    executions the workload may be estimated to need (default :data:`DEFAULT_MAX_EVENTS`).
    """

    def __init__(self, scenario: Scenario, world: World, *, policy: Policy | None = None, seed: int | None = None,
                 trace: bool = False, progress: Callable[[float], None] | None = None, coalesce: bool = True,
                 initial: Schedule | None = None, max_events: int | None = None) -> None:
        self.scenario = scenario
        self.max_events = DEFAULT_MAX_EVENTS if max_events is None else max_events
        self.initial = initial
        self.coalesce = coalesce
        self.world = world
        self.seed = scenario.seed if seed is None else seed
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise SimulationError(f"seed must be a whole number >= 0, got {self.seed!r}")
        self.env = simpy.Environment()
        self.tracing = trace
        self.progress = progress
        self.device_names = world.devices
        self.host = world.host
        self.node_names = tuple(topological_order(world.graph))
        self.recorder = Recorder(self.device_names, trace)
        self.policy = policy if policy is not None else make_policy(scenario.policy.name, scenario.policy.params)
        try:
            self.network = Network(self.env, world.links, self.host, link_factors(scenario.events),
                                   self.recorder.transfer if trace else None, self.policy.observe_transfer)
            speeds = device_speeds(scenario.events, self.device_names)
        except InputError as err:
            raise SimulationError(f"{scenario.where}: events: {err}") from None
        self.speeds = [speeds[name] for name in self.device_names]
        self.workers = [DeviceWorker(self, d, name) for d, name in enumerate(self.device_names)]
        self.contention_debt_s: dict[int, float] = {}  # per device: slowdown owed to runs of its group (hetero.sim.effects)
        arrivals, noise = np.random.SeedSequence(self.seed).spawn(2)
        self.arrival_rng = np.random.default_rng(arrivals)
        self.noise_rng = np.random.default_rng(noise)
        self.plans: dict[int, CompiledPlan] = {}
        self.ready: dict[int, CompiledPlan] = {}  # plans whose weights are all on their (live) devices
        self.loading: dict[int, simpy.Event] = {}
        self.resident: set[tuple[int, int]] = set()  # (node, device) weights in place
        self.last_plan: CompiledPlan | None = None
        self.in_flight: dict[int, Execution] = {}
        self.admitted = 0
        self.latest: CompiledPlan | None = None  # the plan adopted last
        self._change: simpy.Event | None = None

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> SimResult:
        """Simulate until every admitted request has finished or failed; the result's record."""
        if self.recorder.plans:
            raise SimulationError("a Simulator runs once; make a new one for another run")
        scenario, world = self.scenario, self.world
        energy = world.energy if world.energy is not None and not world.energy_missing else None
        wants_energy = [scenario.objective == "energy" or scenario.energy_budget_J is not None]
        wants_energy += [e.objective == "energy" or e.energy_budget_J is not None for e in scenario.events if e.kind == "objective"]
        if energy is None and any(wants_energy):
            missing = ", ".join(world.energy_missing)
            raise SimulationError(f"{scenario.where}: the scheduler plans for energy but {missing} has no power figures; "
                                  "give devices[].power")
        context = PolicyContext(world.graph, world.cost, scenario.algorithm, scenario.objective, world.memory_bytes,
                                energy, scenario.energy_budget_J)
        initial = list(self.policy.start(context, self.initial))
        if not initial:
            raise SimulationError(f"policy {self.policy.name} returned no initial plan")
        check_size(scenario, len(self.node_names), initial[0], self.max_events)
        for name in world.preloaded:
            self._preload(self.device_names.index(name))
        for schedule in initial:
            plan = self.compile(schedule)
            self.resident.update((node, plan.device_of[node]) for node in range(len(self.node_names)))
            self.ready[id(plan)] = plan
        self.recorder.planned(0.0, "initial", initial[0])
        start_workload(self)
        start_script(self)
        log.info("simulating %s: %s on %s", scenario.name, self.policy.name, ", ".join(self.device_names))
        self.env.run()
        return self.recorder.result(self, initial[0].makespan_s)

    def new_request(self) -> Request | None:
        """The next request, or None once the scenario's request limit is reached."""
        limit = self.scenario.workload.requests
        if limit is not None and self.admitted >= limit:
            return None
        self.admitted += 1
        return Request(self.admitted - 1, self.env.now)

    def serve(self, request: Request) -> Generator[simpy.Event, object, bool]:
        """One request from arrival to its result on the host (retried when a device fails)."""
        env, recorder = self.env, self.recorder
        recorder.arrived(request)
        while True:
            plan, reason = yield from self._route(request)
            if plan is None:
                recorder.gave_up(request, "lost" if request.attempts else "failed", reason, env.now)
                self.policy.finished(request.id, None, env.now)
                return False
            if request.attempts:
                recorder.retried += 1
            request.attempts += 1
            execution = Execution(self, plan, request, self._noise(plan))
            self.in_flight[request.id] = execution
            self.last_plan = plan
            execution.start()
            completed = yield execution.finished
            del self.in_flight[request.id]
            if completed:
                break
            if execution.moved:  # queued on an old plan, moved to the new one: not a retry
                recorder.rerouted += 1
                request.attempts -= 1
        recorder.completed(request, env.now)
        self.policy.finished(request.id, env.now - request.arrival_s, env.now)
        new = self._ask(self.policy.rebalance, env.now)
        if new is not None:
            self.adopt(new, "rebalance")
        if self.progress is not None and len(recorder.done_s) % 64 == 0:
            self.progress(env.now)
        return True

    def next_change(self) -> simpy.Event:
        """An event that fires when a device recovers or a new plan's weights are in place."""
        if self._change is None or self._change.triggered:
            self._change = self.env.event()
        return self._change

    def _changed(self) -> None:
        if self._change is not None and not self._change.triggered:
            self._change.succeed()

    def _route(self, request: Request) -> Generator[simpy.Event, object, tuple[CompiledPlan | None, str]]:
        """The plan the request runs on, once its weights are in place; None when a device is down."""
        while True:
            self.catch_up()
            plan = self.compile(self.policy.route(request.id, self.env.now))
            down = [self.device_names[d] for d in plan.devices_used if not self.workers[d].alive]
            if down:
                return None, f"{down[0]} is down"
            if id(plan) in self.ready:
                return plan, ""
            fallback = self.last_plan
            if fallback is not None and id(fallback) in self.ready and all(self.workers[d].alive for d in fallback.devices_used):
                return fallback, ""
            yield self.load(plan)

    def ran(self, run: Run) -> None:
        """Account the ops a run really executed: policy observations, counters, trace."""
        self.report(run, run.valid)
        self.recorder.op_executions += run.valid
        if self.tracing and run.valid:
            self.recorder.run(run, self)

    def report(self, run: Run, upto: int) -> None:
        """Tell the policy the times of the run's ops up to ``upto`` not yet reported."""
        first = run.observed
        if upto <= first:
            return
        observe, names, device = self.policy.observe, self.node_names, self.device_names[run.device]
        nodes, ends = run.nodes, run.ends
        previous = ends[first - 1] if first else run.start_s
        for i in range(first, upto):
            end = ends[i]
            observe(names[nodes[i]], device, end - previous, end)
            previous = end
        run.observed = upto

    def catch_up(self) -> None:
        """Before the policy decides: report the ops that have ended inside runs still going.

        A run is one event, but a per-op simulation would have told the policy about each op as
        it ended; this keeps what the policy knows, and so what it decides, exactly the same.
        """
        now = self.env.now
        for worker in self.workers:
            run = worker.current
            if run is not None and run.observed < run.valid and run.ends[run.observed] <= now:
                self.report(run, bisect_right(run.ends, now, run.observed, run.valid))

    def _noise(self, plan: CompiledPlan) -> list[float] | None:
        noise = self.scenario.noise
        if noise.distribution == "none" or (noise.distribution == "lognormal" and noise.cv == 0):
            return None
        n = len(self.node_names)
        draws = 1 if noise.per == "request" else n
        if noise.distribution == "exponential":
            factors = self.noise_rng.exponential(1.0, draws)
        elif noise.distribution == "lognormal":
            sigma = float(np.sqrt(np.log1p(noise.cv**2)))
            factors = self.noise_rng.lognormal(-sigma * sigma / 2, sigma, draws)
        else:
            sigma_of = self.world.spread
            sigmas = np.array([sigma_of.get((name, self.device_names[plan.device_of[i]]), 0.0)
                               for i, name in enumerate(self.node_names)])
            factors = np.exp(sigmas * self.noise_rng.standard_normal(n))
        return [float(factors[0])] * n if draws == 1 else factors.tolist()

    # -- plans and weights --------------------------------------------------------------------

    def compile(self, schedule: Schedule) -> CompiledPlan:
        """The compiled form of a plan (cached per schedule object)."""
        plan = self.plans.get(id(schedule))
        if plan is None:
            unknown = [d for d in schedule.placement.values() if d not in self.device_names]
            if unknown:
                raise SimulationError(f"policy {self.policy.name} placed ops on '{unknown[0]}', which is not a "
                                      f"device of the scenario ({', '.join(self.device_names)})")
            plan = compile_plan(schedule, self.world.graph, self.node_names, self.device_names, self.host,
                                self.world.cost, self.coalesce)
            self.plans[id(schedule)] = plan
        return plan

    def adopt(self, schedule: Schedule, why: str) -> None:
        """A new plan from the policy: record it and start moving its weights."""
        plan = self.compile(schedule)
        self.recorder.planned(self.env.now, why, schedule)
        self.latest = plan
        if id(plan) not in self.ready:
            self.load(plan)
        else:
            self._move_queued(plan)

    def _move_queued(self, plan: CompiledPlan) -> None:
        """Requests queued on other plans that have not started an op: onto ``plan`` (see the module doc)."""
        if not getattr(self.policy, "moves_queued", False):
            return
        running = {id(w.current.execution) for w in self.workers if w.current is not None}
        for execution in list(self.in_flight.values()):
            if execution.plan is not plan and not any(execution.cursor) and id(execution) not in running:
                if all(self.workers[d].alive for d in plan.devices_used):
                    execution.move()

    def load(self, plan: CompiledPlan) -> simpy.Event:
        """An event that fires when the plan's weights are on its devices (moving them if needed)."""
        if id(plan) not in self.loading:
            done = self.env.event()
            self.loading[id(plan)] = done
            self.env.process(self._migrate(plan, done))
        return self.loading[id(plan)]

    def _migrate(self, plan: CompiledPlan, done: simpy.Event):
        moves: dict[tuple[str, str], int] = defaultdict(int)
        for node, device in enumerate(plan.device_of):
            if plan.weight_bytes[node] and (node, device) not in self.resident:
                moves[(self._weight_source(node, device), self.device_names[device])] += plan.weight_bytes[node]
        started = self.env.now
        arrivals = [self.network.transfer(nbytes, src, dst, "weights") for (src, dst), nbytes in moves.items() if src != dst]
        yield self.env.all_of(arrivals)
        for node, device in enumerate(plan.device_of):
            if self.workers[device].alive:
                self.resident.add((node, device))
        del self.loading[id(plan)]
        if all((node, device) in self.resident for node, device in enumerate(plan.device_of)):
            self.ready[id(plan)] = plan
        self.recorder.migrated(started, self.env.now, sum(moves.values()))
        if plan is self.latest and id(plan) in self.ready:
            self._move_queued(plan)
        done.succeed()
        self._changed()

    def _weight_source(self, node: int, device: int) -> str:
        """A live device that holds the node's weights, else the host (which has the model)."""
        for other, worker in enumerate(self.workers):
            if other != device and worker.alive and (node, other) in self.resident:
                return self.device_names[other]
        return self.host

    # -- scripted failures --------------------------------------------------------------------

    def fail_device(self, name: str) -> None:
        """The device stops: its work and weights are lost, the policy may re-plan, requests retry."""
        device = self.device_names.index(name)
        now = self.env.now
        self.workers[device].fail()
        self.resident = {(n, d) for n, d in self.resident if d != device}
        self.ready = {key: plan for key, plan in self.ready.items() if not plan.uses(device)}
        new = self._ask(self.policy.device_failed, name, now)
        if new is not None:
            self.adopt(new, f"{name} failed")
        for execution in list(self.in_flight.values()):
            if execution.needs(device, now):
                execution.abort()

    def _ask(self, call: Callable[..., Schedule | None], *args: object) -> Schedule | None:
        """A policy call that may find no plan: its error is recorded (once) and the run goes on."""
        self.catch_up()
        try:
            return call(*args)
        except HeteroError as err:
            message = f"{err}"
            if not any(e.endswith(message) for e in self.recorder.errors):
                log.warning("at %.6g s: %s", self.env.now, message)
                self.recorder.errors.append(f"at {self.env.now:.6g} s: {message}")
            return None

    def _preload(self, device: int) -> None:
        self.resident.update((node, device) for node in range(len(self.node_names)))

    def change_objective(self, event: DynamicEvent) -> None:
        """An objective event: the policy may re-plan for the new goal (policies without objective_changed keep theirs)."""
        call = getattr(self.policy, "objective_changed", None)
        if call is None or event.objective is None:
            return
        new = self._ask(call, event.objective, event.energy_budget_J, self.env.now)
        if new is not None:
            budget = f" within {event.energy_budget_J:g} J" if event.energy_budget_J is not None else ""
            self.adopt(new, f"objective {event.objective}{budget}")

    def recover_device(self, name: str) -> None:
        device = self.device_names.index(name)
        self.workers[device].recover()
        if name in self.world.preloaded:
            self._preload(device)
        new = self._ask(self.policy.device_recovered, name, self.env.now)
        if new is not None:
            self.adopt(new, f"{name} recovered")
        self._changed()
