"""What the simulator runs on: the task graph, nominal costs and physical links of a scenario.

:func:`build_world` loads the scenario's model, turns its devices into one cost table (catalog
spec devices by roofline, measured devices from their profile, through
:class:`~hetero.cost.model.ProfileCostModel`) and its links into both the cost model's links and
the simulated network's. A device with no link to the host gets the link its catalog entry or
profile gives. :func:`world_from_problem` wraps a scheduling problem file the same way (tests).
Power per device comes from the scenario's ``power:``, else the catalog entry, else the measured
profile; devices with none are named in ``World.energy_missing`` and draw nothing in the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import networkx as nx

from hetero.cost.energy import DevicePower, EnergyModel
from hetero.cost.protocol import HOST, CostModel, Link, TableCostModel
from hetero.errors import HeteroError, ScenarioError
from hetero.problem import Problem, as_task_graph
from hetero.sim.effects import DeviceEffects, effects_from_profile, host_link, pair_links
from hetero.sim.scenario import DeviceEntry, Scenario

log = logging.getLogger(__name__)
Z90 = 1.2815515655446004  # the standard normal's 90th percentile


@dataclass(frozen=True, eq=False)
class World:
    """A task graph, its nominal costs on the simulated devices, and the links between them.

    ``cost`` must agree with ``links`` (its transfer() is what one transfer alone takes).
    ``spread`` gives the lognormal sigma of an op's time on a device where a profile measured it;
    ``preloaded`` devices hold every weight from the start (see DeviceEntry.preload).
    """

    graph: nx.DiGraph
    cost: CostModel
    links: tuple[Link, ...]
    memory_bytes: Mapping[str, int] = field(default_factory=dict)
    spread: Mapping[tuple[str, str], float] = field(default_factory=dict)
    name: str = "world"
    preloaded: tuple[str, ...] = ()
    energy: EnergyModel | None = None
    effects: DeviceEffects | None = None  # wake-up and contention charged when a run begins (hetero.sim.effects)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.cost.devices)

    @property
    def energy_missing(self) -> tuple[str, ...]:
        """Devices without power figures (all of them when the world has no energy model)."""
        return self.devices if self.energy is None else tuple(self.energy.missing(self.devices))

    @property
    def host(self) -> str:
        return self.cost.host


def world_from_problem(problem: Problem, shared: Iterable[frozenset[str]] = ()) -> World:
    """A problem file's graph and cost model; links listed in ``shared`` contend."""
    shared_pairs = set(shared)
    links: list[Link] = []
    seen: set[frozenset[str]] = set()
    for link in problem.cost.links:
        pair = frozenset((link.src, link.dst))
        if pair in seen:
            continue
        seen.add(pair)
        links.append(Link(link.src, link.dst, link.latency_s, link.bandwidth_Bps, pair in shared_pairs))
    energy = problem.energy
    if energy is not None:
        links = [dataclasses.replace(link, energy_J_per_byte=energy.J_per_byte(link.src, link.dst)) for link in links]
        energy = EnergyModel(energy.power, links, problem.cost.host)
    return World(as_task_graph(problem.graph), problem.cost, tuple(links), dict(problem.memory_bytes), name=problem.name,
                 energy=energy)


def table_world(graph: nx.DiGraph, compute_s: Mapping[str, Mapping[str, float]], links: Iterable[Link],
                host: str, devices: Iterable[str] | None = None, name: str = "world",
                power: Mapping[str, DevicePower] | None = None) -> World:
    """A world from explicit seconds per node per device and links (tests, benchmarks)."""
    links = tuple(links)
    names = tuple(devices) if devices is not None else tuple(dict.fromkeys(d for row in compute_s.values() for d in row))
    cost = TableCostModel(names, compute_s, links, host=host)
    energy = EnergyModel(power, links, host) if power is not None else None
    return World(as_task_graph(graph), cost, links, name=name, energy=energy)


def build_world(scenario: Scenario, load: Callable[[str, str | None], Any] | None = None) -> World:
    """Load the scenario's model, devices and links (errors name the scenario file and line).
    ``load(model, precision) -> (graph, precision)`` loads the model (default:
    ``hetero.quant.precision.load_with_precision``; a sweep passes a cached one)."""
    if load is None:
        from hetero.quant.precision import load_with_precision as load

    where = scenario.where
    try:
        graph, precision = load(scenario.model, scenario.precision)
    except HeteroError as err:
        raise ScenarioError(f"{where}: model {scenario.model}: {err}") from None
    scenario = dataclasses.replace(scenario, precision=precision)  # the model's own when the file names none
    bases = _device_costs(scenario, graph)
    nodes = list(graph.nodes)
    compute: dict[str, dict[str, float]] = {node: {} for node in nodes}
    memory: dict[str, int] = {}
    spread: dict[tuple[str, str], float] = {}
    for entry in scenario.devices:
        base, underlying, capacity, stats = bases[entry.name]
        for node in nodes:
            seconds = base.compute(node, underlying)
            if math.isfinite(seconds):
                for name in entry.names:
                    compute[node][name] = seconds
            if stats is not None and scenario.noise.distribution == "profile":
                measured = stats.get(graph.op(node).signature())
                if measured is not None and measured.p10_s > 0:
                    for name in entry.names:
                        spread[(node, name)] = math.log(measured.p90_s / measured.p10_s) / (2 * Z90)
        if capacity is not None:
            memory.update({name: capacity for name in entry.names})
    links = list(scenario.links) + _default_links(scenario, bases)
    effects, handoff_links = _profile_effects(scenario, bases, links)
    links += handoff_links
    try:
        cost = TableCostModel(scenario.device_names, compute, links, host=scenario.host)
    except HeteroError as err:
        raise ScenarioError(f"{where}: links: {err}") from None
    preloaded = tuple(name for entry in scenario.devices if entry.preload for name in entry.names)
    power = {name: watts for entry in scenario.devices for name in entry.names
             for watts in [_entry_power(entry, bases[entry.name], precision)] if watts is not None}
    energy = EnergyModel(power, links, scenario.host)
    return World(as_task_graph(graph), cost, tuple(links), memory, spread, name=scenario.name, preloaded=preloaded,
                 energy=energy, effects=effects or None)


def _profile_effects(scenario: Scenario, bases: Mapping[str, tuple], links: list[Link]) -> tuple[DeviceEffects, list[Link]]:
    """What the devices' profiles measured beyond op times: wake-up and contention per simulated
    device, and a hand-off link between two single devices of one profile that the scenario links
    neither directly nor otherwise (their devices' hand-off cost on top of the via-host fit), as
    validate's simulator charges (hetero.sim.effects). Replicated entries (count > 1) get no
    contention: their copies are simulated as separate hardware."""
    effects = DeviceEffects()
    by_profile: dict[str, dict[str, str]] = {}
    for entry in scenario.devices:
        profile = bases[entry.name][0].profile
        if entry.spec is not None or profile is None or entry.device is None:
            continue
        names = {name: entry.device for name in entry.names}
        found = effects_from_profile(profile, names, tag=f"{entry.profile}:")
        if len(entry.names) > 1:
            found = DeviceEffects(found.wakeup)
        effects = effects.merged(found)
        if len(entry.names) == 1:
            by_profile.setdefault(str(entry.profile), {}).update(names)
    linked = {frozenset((l.src, l.dst)) for l in links if scenario.host not in (l.src, l.dst)}
    extra: list[Link] = []
    for path, names in by_profile.items():
        profile = next(bases[e.name][0].profile for e in scenario.devices if str(e.profile) == path and e.spec is None)
        extra += [l for l in pair_links(profile, names) if frozenset((l.src, l.dst)) not in linked]
    return effects, extra


def _entry_power(entry: DeviceEntry, base: tuple, precision: str) -> DevicePower | None:
    """The scenario's power figures, else the catalog entry's, else the measured profile's (None: none)."""
    if entry.power is not None:
        return entry.power
    if entry.spec is not None:
        from hetero.cost.catalog import load_catalog_energy

        energy = load_catalog_energy().get(entry.spec)
        return None if energy is None else energy.power(precision)
    return _profile_power(base[0].profile, entry.device)


def _profile_power(profile, device: str | None) -> DevicePower | None:
    """The profile's measured watts of the device (None where it says why it has none)."""
    figures = profile.power.get(device, {}) if profile is not None else {}
    if "idle_W" not in figures:
        if figures.get("unavailable"):
            log.info("no measured power for %s: %s", device, figures["unavailable"])
        return None
    return DevicePower(float(figures["idle_W"]), float(figures["busy_W"]), str(figures.get("source", "profile")))


def _device_costs(scenario: Scenario, graph: nx.DiGraph) -> dict[str, tuple]:
    """Per device entry: (cost model, its device name there, memory bytes, measured op stats)."""
    from hetero.cost.catalog import load_catalog
    from hetero.cost.model import ProfileCostModel
    from hetero.cost.profile import load_profile

    where = scenario.where
    catalog = load_catalog() if any(e.spec for e in scenario.devices) else {}
    bases: dict[str, tuple] = {}
    for entry in scenario.devices:
        try:
            if entry.spec is not None:
                if entry.spec not in catalog:
                    raise ScenarioError(f"{where}:{entry.line}: devices: spec '{entry.spec}' is not in the catalog "
                                        f"(known: {', '.join(catalog)})")
                spec = catalog[entry.spec]
                if scenario.precision not in spec.peak_ops_per_s:
                    raise ScenarioError(f"{where}:{entry.line}: devices: {entry.spec} gives no {scenario.precision} "
                                        f"throughput (it has {', '.join(spec.peak_ops_per_s)}); change precision")
                base = ProfileCostModel(graph, None, [entry.spec], scenario.precision, specs={entry.spec: spec})
                bases[entry.name] = (base, entry.spec, spec.memory_bytes, None)
                continue
            assert entry.profile is not None and entry.device is not None
            profile = load_profile(entry.profile)
            if entry.device not in profile.devices:
                raise ScenarioError(f"{where}:{entry.line}: devices: {entry.profile} has no device '{entry.device}' "
                                    f"(it has {', '.join(profile.devices)})")
            measured_in = profile.kernels.precisions if profile.kernels is not None else (profile.precision,)
            if scenario.precision not in measured_in:
                raise ScenarioError(f"{where}:{entry.line}: devices: {entry.profile} was measured in {', '.join(measured_in)}, "
                                    f"the scenario runs {scenario.precision}")
            base = ProfileCostModel(graph, profile, [entry.device], scenario.precision)
            capacity = profile.devices[entry.device].identity.get("memory_bytes")
            bases[entry.name] = (base, entry.device, int(capacity) if capacity else None, profile.devices[entry.device].ops)
        except ScenarioError:
            raise
        except HeteroError as err:
            raise ScenarioError(f"{where}:{entry.line}: devices: {entry.name}: {err}") from None
    return bases


def _default_links(scenario: Scenario, bases: Mapping[str, tuple]) -> list[Link]:
    """A link to the host for each device that has none, from its catalog entry or profile."""
    host = scenario.host
    linked = {frozenset((l.src, l.dst)) for l in scenario.links}
    defaults: list[Link] = []
    for entry in scenario.devices:
        for name in entry.names:
            if name == host or frozenset((name, host)) in linked:
                continue
            link = _entry_link(scenario, entry, bases[entry.name])
            log.info("%s: no link given between %s and the host %s; using %.3g s, %.3g B/s from its %s",
                     scenario.where, name, host, link[0], link[1], "catalog entry" if entry.spec else "profile")
            defaults.append(Link(name, host, link[0], link[1], False, energy_J_per_byte=link[2]))
    return defaults


def _entry_link(scenario: Scenario, entry: DeviceEntry, base: tuple) -> tuple[float, float, float]:
    """(latency_s, bandwidth_Bps, energy_J_per_byte) of a device's default link to the host."""
    model = base[0]
    if entry.spec is not None:
        from hetero.cost.catalog import load_catalog_energy

        spec = model.specs[entry.spec]
        energy = load_catalog_energy().get(entry.spec)
        return spec.link_latency_s, spec.link_bandwidth_Bps, 0.0 if energy is None else energy.link_J_per_byte
    profile = model.profile
    if profile.link(entry.device, HOST) is None and profile.link(HOST, entry.device) is None:
        raise ScenarioError(f"{scenario.where}:{entry.line}: devices: {entry.name} has no link to the host "
                            f"{scenario.host} and its profile measured none; add one under links")
    link = host_link(profile, str(entry.profile), entry.name, entry.device)  # as validate's simulator
    return link.latency_s, link.bandwidth_Bps, 0.0
