"""A live model update in the simulator: the scenario event ``kind: update``.

At ``at`` the new version's weights leave the host for every device the plan in use places ops
on (each device gets the weight bytes of its ops), over the links the requests also use; requests
keep flowing on the old version meanwhile. Once the last device has them, the switch takes
``switch`` seconds more; requests admitted before the switch completes are counted as version 0.
The event's entry in the result gains the bytes moved per device, when they arrived, and the
switch time. (Memory for both versions at once is not modelled.)
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Generator

import simpy

if TYPE_CHECKING:
    from hetero.sim.engine import Simulator
    from hetero.sim.scenario import DynamicEvent


def live_update(sim: "Simulator", event: "DynamicEvent", entry: dict[str, Any]) -> Generator[simpy.Event, object, None]:
    """The update's process: wait for ``at``, move the weights, switch; fill in ``entry``."""
    env = sim.env
    if event.at_s > env.now:
        yield env.timeout(event.at_s - env.now)
    plan = sim.latest or sim.last_plan or next(iter(sim.ready.values()))
    per_device: dict[str, int] = defaultdict(int)
    for node, device in enumerate(plan.device_of):
        per_device[sim.device_names[device]] += int(plan.weight_bytes[node])
    started = env.now
    arrivals = [sim.network.transfer(nbytes, sim.host, name, "weights") for name, nbytes in per_device.items()
                if nbytes and name != sim.host]
    yield env.all_of(arrivals)
    sim.recorder.migrated(started, env.now, sum(per_device.values()))
    entry["loaded_bytes"] = dict(per_device)
    entry["loaded_s"] = env.now
    if event.switch_s > 0:
        yield env.timeout(event.switch_s)
    entry["switch_s"] = env.now
    entry["requests_before_switch"] = sim.admitted
