"""Energy in the simulator: a scenario's power and link-energy fields, and the joules of a run.

A device's power is ``power: {idle: 0.4 W, busy: 4.5 W}`` (:func:`device_power`); a link's energy
a quantity such as ``300 nJ/bit`` or a link class of the catalog's links.json such as ``wifi``
(:func:`link_energy`). :func:`energy_used` is RESULT.json's ``energy_J``: per device idle_W x the
run's end + (busy_W - idle_W) x its busy seconds, per link direction its bytes x J/byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from hetero.cost.energy import DevicePower
from hetero.io import did_you_mean
from hetero.sim.fields import LINK_ENERGY_UNITS, Field

if TYPE_CHECKING:
    from hetero.sim.engine import Simulator


def device_power(at: Field) -> DevicePower:
    """A device's ``power: {idle: 0.4 W, busy: 4.5 W}``."""
    fields = at.mapping(("idle", "busy"), required=("idle", "busy"))
    idle, busy = fields["idle"].watts(), fields["busy"].watts()
    if busy < idle:
        raise fields["busy"].fail(f"{busy:g} W is below idle {idle:g} W; busy power includes idle")
    return DevicePower(idle, busy, f"{at.where}:{at.line}")


def link_energy(at: Field, classes: dict[str, float]) -> float:
    """Joules per byte: a quantity (300 nJ/bit, 2e-6 J/byte) or a link class of the catalog (wifi, lte, ...)."""
    from hetero.cost.catalog import load_link_energy

    value = at.value()
    if isinstance(value, str) and value.strip() and not value.strip()[0].isdigit() and value.strip()[0] not in "+-.":
        if not classes:
            classes.update(load_link_energy())
        name = value.strip()
        if name not in classes:
            raise at.fail(f"'{name}' is not a link energy (a link class: {', '.join(classes)}; or a quantity such as "
                          f"'300 nJ/bit'; units: {', '.join(LINK_ENERGY_UNITS)}){did_you_mean(name, tuple(classes))}")
        return classes[name]
    return at.joules_per_byte()


def energy_used(sim: "Simulator", end_s: float, busy_s: Mapping[str, float]) -> dict[str, Any] | None:
    """Joules per device over [0, end_s] and per link direction; None when no device has power figures."""
    model = sim.world.energy
    if model is None or not model.power:
        return None
    devices = {name: model.power[name].energy_J(end_s, busy_s.get(name, 0.0)) for name in sim.device_names
               if name in model.power}
    per_byte = {frozenset((link.src, link.dst)): link.energy_J_per_byte for link in sim.world.links}
    links: dict[str, float] = {}
    for key, nbytes in sim.network.bytes_moved().items():
        src, dst = key.split(" -> ")
        links[key] = nbytes * per_byte.get(frozenset((src, dst)), 0.0)
    missing = [name for name in sim.device_names if name not in model.power]
    return {"total": sum(devices.values()) + sum(links.values()), "devices": devices, "links": links,
            "without_power": missing}
