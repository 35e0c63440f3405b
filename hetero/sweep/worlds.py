"""What a point's world costs to build, and what its devices cost to buy.

Worlds (model graph, cost table, links) are built by :func:`hetero.sim.world.build_world`;
:func:`world_key` says when two scenarios get equal worlds, :func:`load_model_once` lets the
worlds of different device mixes share one loaded (for int8: calibrated) model, and
:func:`catalog_prices` reads each catalog spec's ``price_usd``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from hetero.sim.scenario import Scenario

_models: "OrderedDict[tuple[str, str | None], Any]" = OrderedDict()
MODELS_KEPT = 2


def load_model_once(spec: str, precision: str | None = None) -> Any:
    """``load_with_precision`` for build_world, loading (and, for int8, calibrating) each model once
    per process, not once per world: its graphs are immutable (ops are frozen, the graph is
    validated once), so worlds of different device mixes may share one."""
    from hetero.quant.precision import load_with_precision

    key = (spec, precision)
    if key not in _models:
        _models[key] = load_with_precision(spec, precision)
        while len(_models) > MODELS_KEPT:
            _models.popitem(last=False)
    return _models[key]


def world_key(scenario: Scenario) -> str:
    """What build_world reads of a scenario: two scenarios with the same key get equal worlds."""
    return repr((scenario.model, scenario.precision, scenario.devices, scenario.links, scenario.host,
                 scenario.noise.distribution == "profile", scenario.name, scenario.where))


def catalog_prices() -> dict[str, float]:
    """``price_usd`` of each catalog spec that gives one ({"value": ..., "source": ...} or a number)."""
    from hetero.resources import data_dir

    prices: dict[str, float] = {}
    for path in sorted((data_dir("profiles") / "catalog").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # load_catalog names the broken file when a scenario uses the catalog
        price = data.get("price_usd") if isinstance(data, dict) else None
        price = price.get("value") if isinstance(price, dict) else price
        if isinstance(price, (int, float)) and not isinstance(price, bool) and price >= 0 and isinstance(data.get("name"), str):
            prices[data["name"]] = float(price)
    return prices


def devices_cost_usd(scenario: Scenario, prices: dict[str, float]) -> float | None:
    """The devices' total catalog price; None when a device has no price (e.g. a measured one)."""
    total = 0.0
    for entry in scenario.devices:
        if entry.spec is None or entry.spec not in prices:
            return None
        total += entry.count * prices[entry.spec]
    return total

