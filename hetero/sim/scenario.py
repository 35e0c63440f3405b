"""Scenario files: what to simulate, as plain frozen records parsed from YAML.

A scenario names the model, the devices (catalog ``spec:`` devices or measured ``profile:`` +
``device:`` entries, ``count:`` copies named gpu0, gpu1, ...), the links (latency, bandwidth,
shared or not), the host where requests arrive, the workload (closed loop, Poisson or a CSV
trace of arrival times), the initial scheduler and objective, timing noise, dynamic events,
the rebalancing policy, the duration and the seed. ``examples/scenarios/*.yaml`` are annotated
examples. Every field is checked here; an error names the file, line and field.

Energy: a device may override its power (``power: {idle: 0.4 W, busy: 4.5 W}``; catalog devices
have figures of their own), a link may cost energy per byte (``energy: 300 nJ/bit``, or a link
class of the catalog's links.json such as ``energy: wifi``), and the scheduler may minimise energy
(``objective: energy``) or bound it per request (``energy_budget: 0.5 J``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from hetero.cost.energy import DevicePower
from hetero.cost.protocol import HOST, Link
from hetero.io import did_you_mean
from hetero.errors import ScenarioError
from hetero.sim.energy import device_power, link_energy
from hetero.sim.fields import TIME_UNITS, Field, load_yaml, parse_yaml

TOP_KEYS = ("name", "description", "model", "precision", "host", "devices", "links", "workload", "scheduler",
            "noise", "events", "policy", "duration", "seed")
MAX_DEVICES = 1024
WORKLOAD_KEYS = {
    "closed": ("kind", "clients", "think", "requests"),
    "poisson": ("kind", "rate", "requests"),
    "trace": ("kind", "file", "column", "requests"),
}
EVENT_KEYS = {
    "slowdown": ("at", "kind", "device", "factor", "duration"),
    "load": ("at", "kind", "device", "utilisation", "duration"),
    "bandwidth": ("at", "kind", "link", "factor", "duration"),
    "fail": ("at", "kind", "device", "duration"),
    "recover": ("at", "kind", "device"),
    "update": ("at", "kind", "switch"),  # a live model update (hetero.sim.update)
    "objective": ("at", "kind", "objective", "energy_budget"),  # re-plan for another goal (say, the battery runs low)
}
NOISE_DISTRIBUTIONS = ("none", "lognormal", "exponential", "profile")


@dataclass(frozen=True)
class DeviceEntry:
    """One device line: ``count`` devices of a catalog spec or of a measured profile's device.

    ``preload``: the device holds every weight from the start and after a recovery (an edge
    server with the model in its own storage), so moving ops onto it moves no weights.
    """

    name: str
    count: int = 1
    spec: str | None = None
    profile: str | None = None
    device: str | None = None
    preload: bool = False
    power: DevicePower | None = None  # overrides the catalog's or the profile's figures
    line: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        """The simulated device names: the name itself, or name0, name1, ... when count > 1."""
        return (self.name,) if self.count == 1 else tuple(f"{self.name}{i}" for i in range(self.count))


@dataclass(frozen=True)
class Workload:
    """closed: ``clients`` loops with ``think_s``; poisson: ``rate_per_s``; trace: ``arrivals_s``."""

    kind: str
    clients: int = 1
    think_s: float = 0.0
    rate_per_s: float = 0.0
    arrivals_s: tuple[float, ...] = ()
    requests: int | None = None


@dataclass(frozen=True)
class Noise:
    """Multiplicative timing noise, per op or per request (one factor for all of a request's ops).

    lognormal: mean 1 and coefficient of variation ``cv``; exponential: Exp(1); profile: lognormal
    with median 1 and the measured (p90 - p10) spread of each op (none for spec devices).
    """

    distribution: str = "none"
    cv: float = 0.0
    per: str = "op"


@dataclass(frozen=True)
class DynamicEvent:
    """A scripted change at ``at_s``, for ``duration_s`` (None: to the end)."""

    kind: str
    at_s: float
    duration_s: float | None = None
    device: str | None = None
    link: tuple[str, str] | None = None
    factor: float = 1.0
    utilisation: float = 0.0
    line: int = 0
    switch_s: float = 0.0  # an update's switch time
    objective: str | None = None  # an objective event's new scheduler objective
    energy_budget_J: float | None = None  # and its energy budget per request (latency objective)

    @property
    def end_s(self) -> float:
        return float("inf") if self.duration_s is None else self.at_s + self.duration_s


@dataclass(frozen=True)
class PolicySpec:
    name: str = "static"
    params: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario; ``where`` is the file it came from (for messages and relative paths)."""

    model: str
    devices: tuple[DeviceEntry, ...]
    workload: Workload
    duration_s: float
    links: tuple[Link, ...] = ()
    host: str = HOST
    precision: str | None = None  # None: the model's own (int8 for a QDQ model), resolved by build_world
    algorithm: str = "auto"
    objective: str = "latency"
    energy_budget_J: float | None = None  # per request, under the latency objective
    noise: Noise = Noise()
    events: tuple[DynamicEvent, ...] = ()
    policy: PolicySpec = PolicySpec()
    seed: int = 0
    name: str = "scenario"
    description: str = ""
    where: str = "scenario"

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(name for entry in self.devices for name in entry.names)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    return _parse(load_yaml(path), Path(path))


def parse_scenario(text: str, where: str = "scenario.yaml", folder: str | Path = ".") -> Scenario:
    """A scenario from YAML text (relative paths resolve against ``folder``)."""
    return _parse(parse_yaml(text, where), Path(folder) / Path(where).name)


def resolve_path(at: Field, text: str, scenario_file: Path) -> Path:
    """A path relative to the scenario's folder, else to the working directory."""
    candidates = [Path(text)] if Path(text).is_absolute() else [scenario_file.parent / text, Path(text)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise at.fail(f"'{text}' is not a file (looked in {', '.join(str(c) for c in candidates)})")


def _parse(top: Field, path: Path) -> Scenario:
    from hetero.quant.precision import PRECISIONS
    from hetero.schedulers import OBJECTIVES, algorithm_names

    fields = top.mapping(TOP_KEYS, required=("model", "devices", "workload", "duration"))
    devices = tuple(_device(f, path) for f in fields["devices"].sequence())
    if sum(entry.count for entry in devices) > MAX_DEVICES:
        raise fields["devices"].fail(f"list {sum(e.count for e in devices)} devices; a scenario simulates at most {MAX_DEVICES}")
    names: dict[str, DeviceEntry] = {}
    for entry in devices:
        for name in (entry.name, *entry.names):
            other = names.get(name)
            if other is not None and other is not entry:
                raise ScenarioError(f"{top.where}:{entry.line}: device name '{name}' is used twice")
            names[name] = entry
    host = fields["host"].string() if "host" in fields else HOST
    if host not in names and host != HOST:
        listed = tuple(names)
        raise fields["host"].fail(f"'{host}' is not a device: name one of the devices ({', '.join(listed)}), or "
                                  f"leave host out for a separate host called '{HOST}'{did_you_mean(host, listed)}")
    if host in names and names[host].count != 1:
        raise fields["host"].fail(f"'{host}' names {names[host].count} devices; the host is one device or a name of its own")
    endpoints = {name: entry.names if name == entry.name else (name,) for name, entry in names.items()}
    endpoints.setdefault(host, (host,))
    links: list[Link] = []
    link_classes: dict[str, float] = {}
    for f in fields["links"].sequence(True) if "links" in fields else []:
        for link in _links(f, endpoints, link_classes):
            if any({link.src, link.dst} == {other.src, other.dst} for other in links):
                raise f.fail(f"joins {link.src} and {link.dst}, which an earlier link already joins")
            links.append(link)
    device_names = tuple(n for entry in devices for n in entry.names)
    scheduler = fields["scheduler"].mapping(("algorithm", "objective", "energy_budget")) if "scheduler" in fields else {}
    objective = scheduler["objective"].string(OBJECTIVES) if "objective" in scheduler else "latency"
    budget = None
    if "energy_budget" in scheduler:
        budget = scheduler["energy_budget"].joules()
        if objective != "latency":
            raise scheduler["energy_budget"].fail(f"bounds the latency objective's energy per request; with objective "
                                                  f"{objective} leave it out")
    algorithm = scheduler["algorithm"].string(algorithm_names()) if "algorithm" in scheduler else "auto"
    duration_s = fields["duration"].seconds(positive=True)
    events = tuple(_event(f, device_names, tuple(links), host, duration_s)
                   for f in (fields["events"].sequence(True) if "events" in fields else []))
    _check_energy_algorithm(scheduler, algorithm, objective, budget, events, top.where)
    _check_failures(events, top.where)
    return Scenario(
        model=fields["model"].string(),
        devices=devices,
        workload=_workload(fields["workload"], path),
        duration_s=duration_s,
        links=tuple(links),
        host=host,
        precision=fields["precision"].string(PRECISIONS) if "precision" in fields else None,
        algorithm=algorithm,
        objective=objective,
        energy_budget_J=budget,
        noise=_noise(fields["noise"]) if "noise" in fields else Noise(),
        events=tuple(sorted(events, key=lambda e: (e.at_s, e.line))),
        policy=_policy(fields["policy"]) if "policy" in fields else PolicySpec(),
        seed=fields["seed"].integer(minimum=0) if "seed" in fields else 0,
        name=fields["name"].string() if "name" in fields else path.stem,
        description=fields["description"].string() if "description" in fields else "",
        where=top.where,
    )


def _count(at: Field) -> int:
    count = at.integer(minimum=1)
    if count > MAX_DEVICES:
        raise at.fail(f"must be <= {MAX_DEVICES} (the most devices a scenario simulates), got {count}")
    return count


def _device(at: Field, path: Path) -> DeviceEntry:
    fields = at.mapping(("name", "spec", "profile", "device", "count", "preload", "power"), required=("name",))
    name = fields["name"].string()
    if not name.replace("-", "").replace("_", "").replace(":", "").isalnum():  # ':' as in opencl:0
        raise fields["name"].fail(f"'{name}' must be letters, digits, '-', '_' or ':'")
    if ("spec" in fields) == ("profile" in fields):
        raise at.fail("needs either 'spec' (a catalog device) or 'profile' and 'device' (a measured one)")
    if "profile" in fields and "device" not in fields:
        raise at.fail("needs 'device': which device of the profile")
    if "spec" in fields and "device" in fields:
        raise fields["device"].fail("is only for profile devices")
    return DeviceEntry(
        name=name,
        count=_count(fields["count"]) if "count" in fields else 1,
        spec=fields["spec"].string() if "spec" in fields else None,
        profile=str(resolve_path(fields["profile"], fields["profile"].string(), path)) if "profile" in fields else None,
        device=fields["device"].string() if "device" in fields else None,
        preload=fields["preload"].boolean() if "preload" in fields else False,
        power=device_power(fields["power"]) if "power" in fields else None,
        line=at.line,
    )


def _endpoint(at: Field, endpoints: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    name = at.string()
    if name not in endpoints:
        raise at.fail(f"'{name}' is not a device or the host (known: {', '.join(endpoints)})")
    return endpoints[name]


def _links(at: Field, endpoints: Mapping[str, tuple[str, ...]], classes: dict[str, float]) -> list[Link]:
    fields = at.mapping(("between", "latency", "bandwidth", "shared", "energy"), required=("between", "latency", "bandwidth"))
    ends = fields["between"].sequence()
    if len(ends) != 2:
        raise fields["between"].fail(f"must name two ends, got {len(ends)}")
    firsts, seconds = _endpoint(ends[0], endpoints), _endpoint(ends[1], endpoints)
    latency, bandwidth = fields["latency"].seconds(), fields["bandwidth"].bandwidth()
    shared = fields["shared"].boolean() if "shared" in fields else False
    energy = link_energy(fields["energy"], classes) if "energy" in fields else 0.0
    links = [Link(a, b, latency, bandwidth, shared, energy_J_per_byte=energy) for a in firsts for b in seconds if a != b]
    if not links:
        raise fields["between"].fail("joins a device to itself")
    return links


def _workload(at: Field, path: Path) -> Workload:
    kind = at.choice("kind", tuple(WORKLOAD_KEYS))
    fields = at.mapping(WORKLOAD_KEYS[kind], required={"closed": ("kind",), "poisson": ("kind", "rate"),
                                                        "trace": ("kind", "file")}[kind])
    requests = fields["requests"].integer(minimum=1) if "requests" in fields else None
    if kind == "closed":
        return Workload("closed", clients=fields["clients"].integer(minimum=1) if "clients" in fields else 1,
                        think_s=fields["think"].seconds() if "think" in fields else 0.0, requests=requests)
    if kind == "poisson":
        return Workload("poisson", rate_per_s=fields["rate"].rate(), requests=requests)
    csv_path = resolve_path(fields["file"], fields["file"].string(), path)
    column = fields["column"].string() if "column" in fields else None
    return Workload("trace", arrivals_s=read_arrivals(csv_path, column), requests=requests)


def read_arrivals(path: Path, column: str | None = None) -> tuple[float, ...]:
    """Arrival times in seconds from a CSV with a header row: ``column``, or the first column."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ScenarioError(f"{path}:1: the arrival trace is empty; it needs a header row and one time per row")
    header = [h.strip() for h in rows[0]]
    index = 0 if column is None else (header.index(column) if column in header else -1)
    if index < 0:
        raise ScenarioError(f"{path}:1: no column '{column}' (columns: {', '.join(header)})")
    times: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            value = float(row[index])
        except (ValueError, IndexError):
            raise ScenarioError(f"{path}:{line}: {header[index]} must be a time in seconds, got {row!r}") from None
        if not value >= 0 or (times and value < times[-1]):
            raise ScenarioError(f"{path}:{line}: arrival times must be >= 0 and non-decreasing, got {value}")
        times.append(value)
    if not times:
        raise ScenarioError(f"{path}:2: the arrival trace has no rows")
    return tuple(times)


def _noise(at: Field) -> Noise:
    if not at.is_mapping():
        distribution = at.string(NOISE_DISTRIBUTIONS)
        if distribution == "lognormal":
            raise at.fail("lognormal needs a cv: write {distribution: lognormal, cv: 0.05}")
        return Noise(distribution)
    fields = at.mapping(("distribution", "cv", "per"), required=("distribution",))
    distribution = fields["distribution"].string(NOISE_DISTRIBUTIONS)
    if distribution == "lognormal" and "cv" not in fields:
        raise at.fail("needs 'cv' for a lognormal distribution (e.g. cv: 0.05)")
    if distribution != "lognormal" and "cv" in fields:
        raise fields["cv"].fail("only applies to the lognormal distribution")
    cv = fields["cv"].number(minimum=0.0) if "cv" in fields else 0.0
    return Noise(distribution, cv, fields["per"].string(("op", "request")) if "per" in fields else "op")


def _event(at: Field, devices: tuple[str, ...], links: tuple[Link, ...], host: str, duration_s: float) -> DynamicEvent:
    kind = at.choice("kind", tuple(EVENT_KEYS))
    keys = EVENT_KEYS[kind]
    fields = at.mapping(keys, required=tuple(k for k in keys if k not in ("duration", "energy_budget")))
    device = link = None
    if "device" in fields:
        device = fields["device"].string()
        if device not in devices:
            raise fields["device"].fail(f"'{device}' is not a device (devices: {', '.join(devices)})")
    if "link" in fields:
        ends = tuple(f.string() for f in fields["link"].sequence())
        known = {(l.src, l.dst) for l in links} | {(l.dst, l.src) for l in links} | {(d, host) for d in devices} | {(host, d) for d in devices}
        if len(ends) != 2 or ends not in known:
            raise fields["link"].fail(f"{list(ends)} is not a link (give the two ends of a listed link, or a device and the host)")
        link = (ends[0], ends[1])
    factor = 1.0
    if "factor" in fields:
        factor = fields["factor"].number(positive=True)
        if kind == "slowdown" and factor < 1:
            raise fields["factor"].fail(f"must be >= 1 (2 means twice as slow), got {factor:g}")
    at_s = fields["at"].seconds()
    if at_s >= duration_s:
        raise fields["at"].fail(f"{at_s:g} s is not before the end of the scenario (duration {duration_s:g} s); move the "
                                "event earlier or lengthen duration")
    return DynamicEvent(
        kind=kind,
        at_s=at_s,
        duration_s=fields["duration"].seconds(positive=True) if "duration" in fields else None,
        device=device,
        link=link,
        factor=factor,
        utilisation=fields["utilisation"].number(minimum=0.0, below=1.0) if "utilisation" in fields else 0.0,
        line=at.line,
        switch_s=fields["switch"].seconds() if "switch" in fields else 0.0,
        objective=_event_objective(fields),
        energy_budget_J=fields["energy_budget"].joules() if "energy_budget" in fields else None,
    )


def _check_energy_algorithm(scheduler: Mapping[str, Field], algorithm: str, objective: str, budget: float | None,
                            events: tuple[DynamicEvent, ...], where: str) -> None:
    """Planning for energy (the scheduler's objective, or an objective event) needs an algorithm that can."""
    from hetero.schedulers import ENERGY_ALGORITHMS

    if algorithm in ENERGY_ALGORITHMS:
        return
    allowed = ", ".join(ENERGY_ALGORITHMS)
    if objective == "energy" or budget is not None:
        at = scheduler.get("algorithm")
        assert at is not None  # auto, the default, plans for energy
        raise at.fail(f"'{algorithm}' does not plan for energy (objective {objective}"
                      f"{', energy_budget' if budget is not None else ''}); use one of {allowed}")
    for event in events:
        if event.kind == "objective" and (event.objective == "energy" or event.energy_budget_J is not None):
            raise ScenarioError(f"{where}:{event.line}: events: the objective event plans for energy, which scheduler."
                                f"algorithm {algorithm} does not; use one of {allowed}")


def _event_objective(fields: Mapping[str, Field]) -> str | None:
    from hetero.schedulers import OBJECTIVES

    if "objective" not in fields:
        return None
    objective = fields["objective"].string(OBJECTIVES)
    if "energy_budget" in fields and objective != "latency":
        raise fields["energy_budget"].fail(f"bounds the latency objective's energy per request; with objective "
                                           f"{objective} leave it out")
    return objective


def _check_failures(events: tuple[DynamicEvent, ...], where: str) -> None:
    """fail and recover must alternate per device."""
    changes: list[tuple[float, int, bool, DynamicEvent]] = []
    for event in events:
        if event.kind == "fail":
            changes.append((event.at_s, 1, False, event))
            if event.duration_s is not None:
                changes.append((event.end_s, 0, True, event))
        elif event.kind == "recover":
            changes.append((event.at_s, 0, True, event))
    down: set[str] = set()
    for _, _, up, event in sorted(changes, key=lambda c: (c[0], c[1], c[3].line)):
        assert event.device is not None
        if up and event.device not in down and event.kind == "recover":
            raise ScenarioError(f"{where}:{event.line}: events: recover of {event.device}, which is not down then")
        if not up and event.device in down:
            raise ScenarioError(f"{where}:{event.line}: events: {event.device} fails while already down")
        (down.discard if up else down.add)(event.device)


def _policy(at: Field) -> PolicySpec:
    from hetero.policy import POLICIES

    if not at.is_mapping():
        name = at.string(tuple(POLICIES))
        return PolicySpec(name)
    name = at.choice("name", tuple(POLICIES))
    info = POLICIES[name]
    fields = at.mapping(("name", *info.parameters), required=("name",))
    params: dict[str, float] = {}
    for key, parameter in info.parameters.items():
        if key not in fields:
            continue
        f = fields[key]
        if parameter.unit == "s":
            value = f.quantity(TIME_UNITS, "duration", "'0.5 s' or 0.5")
        else:
            value = f.number()
        problem = parameter.problem(value)  # the same check as hetero run --policy-param
        if problem is not None:
            raise f.fail(problem)
        params[key] = value
    return PolicySpec(name, params)
