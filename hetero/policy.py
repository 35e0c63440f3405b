"""Rebalancing policies: which plan a request follows, and when to re-partition.

The simulator (hetero.sim) and the runtime drive the same :class:`Policy` objects through the
same calls, with simulated or wall-clock seconds:

    plans = policy.start(context, initial=None)   # plans to load before serving (first: initial)
    schedule = policy.route(request_id, now_s)    # the plan a new request follows
    policy.observe(node, device, seconds, now_s)  # each op's measured time
    policy.observe_transfer(src, dst, nbytes, seconds, now_s)  # each transfer's measured time
    policy.finished(request_id, latency_s, now_s) # latency None: the request failed or was lost
    new = policy.rebalance(now_s)                 # between requests: a new plan, or None
    new = policy.device_failed(device, now_s)     # a new plan, None (keep), or DeviceError
    new = policy.device_recovered(device, now_s)  # a new plan, or None
    new = policy.objective_changed(objective, energy_budget_J, now_s)  # optional: a new plan, or None

``start`` schedules the first plan unless given one (``initial``, e.g. from a plan file).
``route`` returns one of the plans the other calls returned; a returned plan's weights must be
moved to their devices before requests run on it (the driver does that and pays for it). Policies
re-plan with :func:`hetero.schedulers.schedule` on an :class:`ObservedCost`: the predicted compute
times scaled, per device, and transfer times, per (src, dst) route, by an exponentially weighted
ratio of observed to predicted seconds.

- ``static``: the initial plan forever; requests that need a failed device fail.
- ``failover``: a failed device's ops move to the devices left (re-planned); recovery re-plans.
- ``threshold``: failover, plus a re-plan when a device's or route's observed/predicted ratio
  drifts more than ``drift`` from what the current plan assumed (at most once per ``cooldown``).
- ``periodic``: failover, plus a re-plan every ``period`` seconds from the estimates.
- ``least-loaded``: data parallel; every device that can run the whole model holds a copy and
  each request goes to the device with the least outstanding (estimated) work.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Mapping, Protocol, Sequence

import networkx as nx

from hetero.cost.energy import EnergyModel
from hetero.cost.protocol import CostModel
from hetero.errors import DeviceError, InputError, ScheduleError
from hetero.io import did_you_mean
from hetero.schedule import Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PolicyContext:
    """What a policy plans with: the graph, the predicted costs, the scheduler and its objective."""

    graph: nx.DiGraph
    cost: CostModel
    algorithm: str = "auto"
    objective: str = "latency"
    memory_bytes: Mapping[str, int] = field(default_factory=dict)
    energy: EnergyModel | None = None  # device power and link energy: plans carry energy_J; objective energy
    energy_budget_J: float | None = None  # per request, under the latency objective

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.cost.devices)


class Policy(Protocol):
    """The calls a simulator or runtime makes; see the module docstring for their order."""

    name: str

    def start(self, context: PolicyContext, initial: Schedule | None = None) -> Sequence[Schedule]: ...

    def route(self, request_id: int, now_s: float) -> Schedule: ...

    def observe(self, node: str, device: str, seconds: float, now_s: float) -> None: ...

    def observe_transfer(self, src: str, dst: str, nbytes: int, seconds: float, now_s: float) -> None: ...

    def finished(self, request_id: int, latency_s: float | None, now_s: float) -> None: ...

    def rebalance(self, now_s: float) -> Schedule | None: ...

    def device_failed(self, device: str, now_s: float) -> Schedule | None: ...

    def device_recovered(self, device: str, now_s: float) -> Schedule | None: ...


class ObservedCost:
    """A cost model over some of the devices, compute scaled per device and transfers per route."""

    def __init__(self, base: CostModel, scale: Mapping[str, float], devices: Sequence[str],
                 route_scale: Mapping[tuple[str, str], float] | None = None) -> None:
        self.base = base
        self.scale = dict(scale)
        self.route_scale = dict(route_scale or {})
        self.devices = tuple(devices)
        self.host = base.host
        if getattr(base, "transfer_coefficients", None) is not None:
            self.transfer_coefficients = self._coefficients

    def compute(self, node: str, device: str) -> float:
        return self.base.compute(node, device) * self.scale.get(device, 1.0)

    def can_run(self, node: str, device: str) -> bool:
        return self.base.can_run(node, device)

    def transfer(self, nbytes: int, src: str, dst: str) -> float:
        return self.base.transfer(nbytes, src, dst) * self.route_scale.get((src, dst), 1.0)

    def _coefficients(self, src: str, dst: str) -> tuple[float, float]:
        latency_s, seconds_per_byte = self.base.transfer_coefficients(src, dst)  # type: ignore[attr-defined]
        factor = self.route_scale.get((src, dst), 1.0)
        return latency_s * factor, seconds_per_byte * factor

    def compute_table(self, nodes: Sequence[str], devices: Sequence[str]) -> list[list[float]]:
        return [[self.compute(node, device) for device in devices] for node in nodes]


class Estimates:
    """Per key (a device, or a (src, dst) route), EWMAs of observed and of predicted seconds.

    Both averages see the same samples, so their ratio weighs samples by duration. With
    ``stale_s``, a key not observed for that long returns to its prediction (ratio 1), so that a
    device that was avoided while slow is tried again.
    """

    def __init__(self, alpha: float, stale_s: float | None = None) -> None:
        self.alpha = alpha
        self.stale_s = stale_s
        self.observed_s: dict[Hashable, float] = {}
        self.predicted_s: dict[Hashable, float] = {}
        self.last_s: dict[Hashable, float] = {}

    def observe(self, key: Hashable, seconds: float, predicted_s: float, now_s: float) -> None:
        keep = 1.0 - self.alpha
        self.observed_s[key] = keep * self.observed_s.get(key, 0.0) + self.alpha * seconds
        self.predicted_s[key] = keep * self.predicted_s.get(key, 0.0) + self.alpha * predicted_s
        self.last_s[key] = now_s

    def ratio(self, key: Hashable, now_s: float) -> float:
        """Observed over predicted seconds (1 before any observation or once stale)."""
        predicted = self.predicted_s.get(key, 0.0)
        if predicted <= 0:
            return 1.0
        if self.stale_s is not None and now_s - self.last_s[key] > self.stale_s:
            return 1.0
        return self.observed_s[key] / predicted

    def ratios(self, keys: Iterable[Hashable] | None, now_s: float) -> dict[Hashable, float]:
        """Ratios of ``keys`` (None: every key observed so far)."""
        return {key: self.ratio(key, now_s) for key in (list(self.predicted_s) if keys is None else keys)}


def binding_memory(graph: nx.DiGraph, memory_bytes: Mapping[str, int]) -> dict[str, int]:
    """The capacities below all of the graph's weights and activations at once (others cannot bind,
    and leaving them out spares memory-tracking schedulers such as dp work that changes nothing)."""
    from hetero.problem import as_task_graph

    tasks = as_task_graph(graph)
    total = sum(int(data.get(key, 0)) for _, data in tasks.nodes(data=True)
                for key in ("weight_bytes", "output_bytes", "input_bytes"))
    return {device: capacity for device, capacity in memory_bytes.items() if capacity < total}


class StaticPolicy:
    """The initial plan, always (the baseline every other policy is compared with)."""

    name = "static"
    learns = False  # whether observations feed the estimates
    replans_on_failure = False
    moves_queued = True  # route() is one plan for every request: queued requests may follow a new plan

    def __init__(self, alpha: float = 0.2, stale_s: float | None = None) -> None:
        self.alpha = alpha
        self.stale_s = stale_s
        self.plan: Schedule | None = None

    def start(self, context: PolicyContext, initial: Schedule | None = None) -> Sequence[Schedule]:
        self.setup(context)
        self.plan = self.replan(0.0) if initial is None else initial
        return (self.plan,)

    def setup(self, context: PolicyContext) -> None:
        self.context = context
        self.alive = list(context.devices)
        self.compute = Estimates(self.alpha, self.stale_s)  # per device
        self.routes = Estimates(self.alpha, self.stale_s)  # per (src, dst)
        self.planned: dict[Hashable, float] = {}
        self.planned_at_s = 0.0
        self.memory_bytes = binding_memory(context.graph, context.memory_bytes)

    def ratios(self, now_s: float) -> tuple[dict[Hashable, float], dict[Hashable, float]]:
        """Observed/predicted per live device and per observed route, now."""
        return self.compute.ratios(self.alive, now_s), self.routes.ratios(None, now_s)

    def replan(self, now_s: float) -> Schedule:
        """A schedule for the devices alive now under the current estimates."""
        from hetero.schedulers import schedule

        compute, routes = self.ratios(now_s)
        cost = ObservedCost(self.context.cost, compute, self.alive, routes)  # type: ignore[arg-type]
        memory_bytes = {d: m for d, m in self.memory_bytes.items() if d in self.alive}
        context = self.context
        result = schedule(context.graph, cost, context.algorithm, context.objective, memory_bytes,
                          energy=context.energy, energy_budget_J=context.energy_budget_J)
        self.planned, self.planned_at_s = {**compute, **routes}, now_s
        return result

    def drifted(self, now_s: float, drift: float) -> list[str]:
        """Devices and routes whose ratio moved more than ``drift`` from what the plan assumed."""
        compute, routes = self.ratios(now_s)
        return [
            f"{key if isinstance(key, str) else ' -> '.join(key)} x{ratio:.3g}"
            for key, ratio in {**compute, **routes}.items()
            if abs(ratio / self.planned.get(key, 1.0) - 1.0) > drift
        ]

    def adopt(self, candidate: Schedule, now_s: float, why: str) -> Schedule | None:
        """The candidate when its placement differs from the current plan's, else None."""
        assert self.plan is not None
        if dict(candidate.placement) == dict(self.plan.placement):
            return None
        log.info("%s at %.6g s: %s; predicted makespan %.6g s -> %.6g s", self.name, now_s, why,
                 self.plan.makespan_s, candidate.makespan_s)
        self.plan = candidate
        return candidate

    def route(self, request_id: int, now_s: float) -> Schedule:
        assert self.plan is not None, "start() first"
        return self.plan

    def observe(self, node: str, device: str, seconds: float, now_s: float) -> None:
        if self.learns:
            predicted = self.context.cost.compute(node, device)
            if math.isfinite(predicted):
                self.compute.observe(device, seconds, predicted, now_s)

    def observe_transfer(self, src: str, dst: str, nbytes: int, seconds: float, now_s: float) -> None:
        if self.learns and src != dst:
            self.routes.observe((src, dst), seconds, self.context.cost.transfer(nbytes, src, dst), now_s)

    def finished(self, request_id: int, latency_s: float | None, now_s: float) -> None:
        return None

    def rebalance(self, now_s: float) -> Schedule | None:
        return None

    def device_failed(self, device: str, now_s: float) -> Schedule | None:
        if device in self.alive:
            self.alive.remove(device)
        if not self.replans_on_failure:
            return None
        if not self.alive:
            raise DeviceError(f"{self.name}: every device is down ({device} failed at {now_s:.6g} s); "
                              "no placement is possible until one recovers")
        assert self.plan is not None
        if device not in self.plan.placement.values():
            return None
        self.plan = self.replan(now_s)
        log.info("%s at %.6g s: %s failed; re-planned on %s", self.name, now_s, device, ", ".join(self.alive))
        return self.plan

    def objective_changed(self, objective: str, energy_budget_J: float | None, now_s: float) -> Schedule | None:
        """Plan for another objective from now on (e.g. energy once the battery runs low); static keeps its plan."""
        import dataclasses

        self.context = dataclasses.replace(self.context, objective=objective, energy_budget_J=energy_budget_J)
        if not self.replans_on_failure or self.plan is None:
            return None
        return self.adopt(self.replan(now_s), now_s, f"objective {objective}")

    def device_recovered(self, device: str, now_s: float) -> Schedule | None:
        if device not in self.alive:
            self.alive = [d for d in self.context.devices if d in self.alive or d == device]
        if not self.replans_on_failure:
            return None
        return self.adopt(self.replan(now_s), now_s, f"{device} recovered")


class FailoverPolicy(StaticPolicy):
    """Re-plan on the devices left when one fails, and again when it recovers."""

    name = "failover"
    learns = True
    replans_on_failure = True


class ThresholdPolicy(FailoverPolicy):
    """Failover, plus a re-plan when observed times drift beyond ``drift`` of what the plan assumed."""

    name = "threshold"

    def __init__(self, drift: float = 0.2, alpha: float = 0.2, cooldown_s: float = 1.0, stale_s: float | None = None) -> None:
        super().__init__(alpha, stale_s)
        self.drift = drift
        self.cooldown_s = cooldown_s

    def rebalance(self, now_s: float) -> Schedule | None:
        if now_s - self.planned_at_s < self.cooldown_s:
            return None
        drifted = self.drifted(now_s, self.drift)
        if not drifted:
            return None
        return self.adopt(self.replan(now_s), now_s, f"observed/predicted drifted ({', '.join(drifted)})")


class PeriodicPolicy(FailoverPolicy):
    """Failover, plus a re-plan every ``period_s`` seconds from the EWMA estimates."""

    name = "periodic"

    def __init__(self, period_s: float = 1.0, alpha: float = 0.2, stale_s: float | None = None) -> None:
        super().__init__(alpha, stale_s)
        self.period_s = period_s

    def rebalance(self, now_s: float) -> Schedule | None:
        if now_s - self.planned_at_s < self.period_s:
            return None
        return self.adopt(self.replan(now_s), now_s, "periodic re-plan")


class LeastLoadedPolicy(StaticPolicy):
    """Data parallel: whole requests to the device with the least outstanding estimated work."""

    name = "least-loaded"
    learns = True
    moves_queued = False  # route() picks per request

    def start(self, context: PolicyContext, initial: Schedule | None = None) -> Sequence[Schedule]:
        """One single-device plan per device that can run the whole model (``initial`` is not used)."""
        from hetero.schedulers import schedule

        if initial is not None:
            log.info("least-loaded: runs whole requests on single devices; the initial plan given is not used")
        self.setup(context)
        self.plans: dict[str, Schedule] = {}
        reasons = []
        for device in context.devices:
            cost = ObservedCost(context.cost, {}, [device])
            try:
                self.plans[device] = schedule(context.graph, cost, "single", "latency",
                                              {d: m for d, m in self.memory_bytes.items() if d == device},
                                              energy=context.energy)
            except ScheduleError as err:  # this device cannot run or hold the whole model
                reasons.append(f"{device}: {err}")
        if not self.plans:
            raise InputError(f"least-loaded: no device can run the whole model ({'; '.join(reasons)})")
        for reason in reasons:
            log.warning("least-loaded: leaving out %s", reason)
        self.outstanding_s = {d: 0.0 for d in self.plans}
        self.assigned_s = {d: 0.0 for d in self.plans}
        self.routed: dict[int, tuple[str, float]] = {}
        ordered = sorted(self.plans.values(), key=lambda s: s.makespan_s)
        self.plan = ordered[0]
        return tuple(ordered)

    def route(self, request_id: int, now_s: float) -> Schedule:
        """The device whose outstanding work plus this request's ends first; ties: least work so far."""
        self.finished(request_id, None, now_s)
        candidates = [d for d in self.plans if d in self.alive] or list(self.plans)
        service = {d: self.plans[d].makespan_s * self.compute.ratio(d, now_s) for d in candidates}
        best = min(candidates, key=lambda d: (self.outstanding_s[d] + service[d], self.assigned_s[d]))
        self.outstanding_s[best] += service[best]
        self.assigned_s[best] += service[best]
        self.routed[request_id] = (best, service[best])
        return self.plans[best]

    def finished(self, request_id: int, latency_s: float | None, now_s: float) -> None:
        routed = self.routed.pop(request_id, None)
        if routed is not None:
            device, service = routed
            self.outstanding_s[device] = max(0.0, self.outstanding_s[device] - service)

    def device_failed(self, device: str, now_s: float) -> Schedule | None:
        if device in self.alive:
            self.alive.remove(device)
        if not any(d in self.alive for d in self.plans):
            raise DeviceError(f"least-loaded: every device is down ({device} failed at {now_s:.6g} s)")
        return None

    def device_recovered(self, device: str, now_s: float) -> Schedule | None:
        super().device_recovered(device, now_s)
        return self.plans.get(device)


@dataclass(frozen=True)
class Parameter:
    default: float | None
    unit: str  # "s" (seconds), "fraction" (0..1], "number"
    help: str
    zero_ok: bool = False  # 0 is allowed too (a cooldown of 0: no wait)

    def problem(self, value: float) -> str | None:
        """Why ``value`` is not allowed (finite and > 0, or >= 0 where ``zero_ok``; a fraction <= 1), or None.

        The one check of policy parameters: make_policy (``hetero run --policy-param``) and
        scenario files both use it.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        if value < 0 or (value == 0 and not self.zero_ok):
            return f"must be {'>= 0' if self.zero_ok else '> 0'}, got {value:g}"
        if self.unit == "fraction" and value > 1:
            return f"must be <= 1 (a fraction), got {value:g}"
        return None

    def keyword(self, key: str) -> str:
        """The policy constructor's argument for parameter ``key``: seconds carry ``_s`` (period -> period_s)."""
        return f"{key}_s" if self.unit == "s" else key


@dataclass(frozen=True)
class PolicyInfo:
    factory: Callable[..., Policy]
    parameters: Mapping[str, Parameter]


_ALPHA = Parameter(0.2, "fraction", "weight of each new observation in the moving averages")
_STALE = Parameter(None, "s", "a device unobserved this long returns to its predicted speed")
POLICIES: dict[str, PolicyInfo] = {
    "static": PolicyInfo(StaticPolicy, {}),
    "failover": PolicyInfo(FailoverPolicy, {}),
    "threshold": PolicyInfo(ThresholdPolicy, {
        "drift": Parameter(0.2, "number", "re-plan when observed/predicted moves more than this fraction"),
        "alpha": _ALPHA, "cooldown": Parameter(1.0, "s", "least time between re-plans", zero_ok=True), "stale": _STALE}),
    "periodic": PolicyInfo(PeriodicPolicy, {
        "period": Parameter(1.0, "s", "time between re-plans"), "alpha": _ALPHA, "stale": _STALE}),
    "least-loaded": PolicyInfo(LeastLoadedPolicy, {"alpha": _ALPHA}),
}


def make_policy(name: str, params: Mapping[str, float] | None = None) -> Policy:
    """A policy by name with its parameters (see POLICIES); unknown names or parameters raise.

    ``params`` use the readable names of scenario files and --policy-param (period, cooldown, stale:
    seconds); the constructors take them as period_s, cooldown_s, stale_s.
    """
    info = POLICIES.get(name)
    if info is None:
        raise InputError(f"unknown policy '{name}' (choose from {', '.join(POLICIES)}){did_you_mean(name, tuple(POLICIES))}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(info.parameters))
    if unknown:
        allowed = ", ".join(info.parameters) or "none"
        raise InputError(f"policy {name}: unknown parameter '{unknown[0]}' (allowed: {allowed})"
                         f"{did_you_mean(unknown[0], tuple(info.parameters))}")
    for key, value in params.items():
        problem = info.parameters[key].problem(value)
        if problem is not None:
            unit = " (seconds)" if info.parameters[key].unit == "s" else ""
            raise InputError(f"policy {name}: parameter {key}{unit} {problem}")
    return info.factory(**{info.parameters[key].keyword(key): value for key, value in params.items()})
