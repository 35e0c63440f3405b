"""Sweep files: a base scenario and what varies, expanded to points that are full scenarios.

    base: gateway.yaml            # a scenario file, relative to the sweep file
    grid:                         # every combination (dotted paths into the scenario)
      workload.rate: [50/s, 100/s]
      devices[npu].count: [1, 2]  # devices[1] by position, devices[npu] by name
    random: {n: 20, seed: 0, params: {workload.rate: {min: 20/s, max: 400/s}}}
    seeds: [1, 2, 3]              # each point once per seed (default: the scenario's seed)
    batch: 8                      # simulations per Dask task (default: automatic)

A random parameter is ``{min, max}`` (whole numbers when both are, else uniform; ``log: true``
for log-uniform; a unit such as ``/s`` or ``ms`` on both ends is kept), or ``{choice: [...]}``.
With both ``grid`` and ``random`` every grid combination is run with each of the ``n`` draws.
Every point is parsed and checked like any scenario (and its world built once per distinct model
and device mix) before anything runs; an error names the sweep file's line and the point.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hetero.errors import HeteroError, ScenarioError
from hetero.sim.fields import Field, load_yaml
from hetero.sim.scenario import Scenario, load_scenario, parse_scenario
from hetero.sweep.paths import parse_path, set_path
from hetero.sweep.worlds import catalog_prices, devices_cost_usd, load_model_once, world_key

TOP_KEYS = ("name", "description", "base", "grid", "random", "seeds", "batch")
MAX_POINTS = 100_000
MAX_BATCH = 1000
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class SweepError(ScenarioError):
    """A sweep file is malformed, or one of its points is not a valid scenario."""


@dataclass(frozen=True)
class Axis:
    """One dotted path that varies: its values (grid) or its range (random), and its line."""

    path: str
    line: int
    values: tuple[Any, ...] = ()
    low: Any = None
    high: Any = None
    log: bool = False


@dataclass(frozen=True)
class Point:
    """One full scenario of the sweep: the swept values, its YAML text and its hash."""

    index: int
    values: tuple[tuple[str, Any], ...]
    text: str
    scenario_hash: str
    seeds: tuple[int, ...]
    cost_usd: float | None = None

    def describe(self) -> str:
        return ", ".join(f"{path}={format_value(value)}" for path, value in self.values) or "the base scenario"


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file and its points (all valid scenarios)."""

    where: str
    base: Path
    axes: tuple[str, ...]
    points: tuple[Point, ...]
    batch: int | None = None
    name: str = "sweep"

    @property
    def runs(self) -> int:
        return sum(len(p.seeds) for p in self.points)


def format_value(value: Any) -> str:
    """A swept value as written into the CSV: scalars as text, lists and mappings as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def scenario_hash(document: dict[str, Any]) -> str:
    """The point's identity: a hash of its full scenario without the seed (the seed is a column)."""
    canonical = json.dumps({k: v for k, v in document.items() if k != "seed"}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_sweep(path: str | Path, check_worlds: bool = True) -> Sweep:
    """Read a sweep file, expand and check every point (``check_worlds``: build each distinct world too)."""
    try:
        return _load_sweep(Path(path), check_worlds)
    except SweepError:
        raise
    except ScenarioError as err:  # a field of the sweep file, or of the base scenario
        raise SweepError(str(err)) from None


def _load_sweep(path: Path, check_worlds: bool) -> Sweep:
    top = load_yaml(path)
    fields = top.mapping(TOP_KEYS, required=("base",))
    if "grid" not in fields and "random" not in fields and "seeds" not in fields:
        raise top.fail("needs 'grid', 'random' or 'seeds': what the sweep varies")
    base_path = _base_path(fields["base"], path)
    load_scenario(base_path)  # an error in the base names the base file's own line
    document = yaml.safe_load(base_path.read_text(encoding="utf-8"))
    grid = _grid(fields["grid"]) if "grid" in fields else []
    draws, random_axes = _random(fields["random"]) if "random" in fields else ([{}], [])
    axes = grid + random_axes
    seen: dict[str, Axis] = {}
    for axis in axes:
        if axis.path in seen:
            raise SweepError(f"{top.where}:{axis.line}: {axis.path} is swept twice (also on line {seen[axis.path].line})")
        seen[axis.path] = axis
    seeds = _seeds(fields["seeds"]) if "seeds" in fields else None
    if seeds is not None and "seed" in seen:
        raise SweepError(f"{top.where}:{seen['seed'].line}: seed is swept and 'seeds' is given; keep one of them")
    combinations = list(itertools.product(*(axis.values for axis in grid)))
    total = len(combinations) * len(draws)
    if total > MAX_POINTS:
        raise top.fail(f"expands to {total} points, more than {MAX_POINTS}; split the sweep")
    prices = catalog_prices()
    points = []
    for combination, draw in itertools.product(combinations, draws):
        values = [(axis.path, value) for axis, value in zip(grid, combination)] + list(draw.items())
        points.append(_point(len(points), values, document, base_path, seen, top.where, seeds, prices))
    batch = fields["batch"].integer(minimum=1) if "batch" in fields else None
    if batch is not None and batch > MAX_BATCH:
        raise fields["batch"].fail(f"must be <= {MAX_BATCH}, got {batch}")
    if check_worlds:
        _check_worlds(points, base_path, seen, top.where)
    return Sweep(
        where=top.where,
        base=base_path,
        axes=tuple(axis.path for axis in axes),
        points=tuple(points),
        batch=batch,
        name=fields["name"].string() if "name" in fields else path.stem,
    )


def point_scenario(point: Point, base: Path) -> Scenario:
    """The point's Scenario, parsed as ``hetero simulate`` would parse its YAML beside the base file."""
    return parse_scenario(point.text, str(base), base.parent)


def _base_path(at: Field, sweep_file: Path) -> Path:
    text = at.string()
    candidate = Path(text) if Path(text).is_absolute() else sweep_file.parent / text
    if not candidate.is_file():
        raise at.fail(f"'{text}' is not a file (looked for {candidate}); give the base scenario relative to the sweep file")
    return candidate


def _grid(at: Field) -> list[Axis]:
    if not at.is_mapping():
        raise at.fail("must be a mapping from dotted paths (e.g. devices[1].count) to lists of values")
    axes = []
    for key_node, value_node in at.node.value:
        key = Field(key_node, at.where, "grid")
        path = key.string()
        parse_path(path, key)
        values = tuple(_plain(v) for v in Field(value_node, at.where, f"grid.{path}").sequence())
        texts = [format_value(v) for v in values]
        twice = next((t for i, t in enumerate(texts) if t in texts[:i]), None)
        if twice is not None:
            raise key.fail(f"{path} lists {twice} twice (two points would be the same scenario)")
        axes.append(Axis(path, key.line, values))
    if not axes:
        raise at.fail("must name at least one dotted path")
    return axes


def _random(at: Field) -> tuple[list[dict[str, Any]], list[Axis]]:
    fields = at.mapping(("n", "seed", "params"), required=("n", "params"))
    n = fields["n"].integer(minimum=1)
    if n > MAX_POINTS:
        raise fields["n"].fail(f"must be <= {MAX_POINTS}, got {n}")
    rng = np.random.default_rng(fields["seed"].integer(minimum=0) if "seed" in fields else 0)
    params = fields["params"]
    if not params.is_mapping() or not params.node.value:
        raise params.fail("must map dotted paths to ranges ({min: 1, max: 4}) or choices ({choice: [a, b]})")
    axes = []
    for key_node, value_node in params.node.value:
        key = Field(key_node, at.where, "random.params")
        path = key.string()
        parse_path(path, key)
        axes.append(_range(Field(value_node, at.where, f"random.params.{path}"), path, key.line))
    draws = [{axis.path: _draw(axis, rng) for axis in axes} for _ in range(n)]
    return draws, axes


def _range(at: Field, path: str, line: int) -> Axis:
    if at.is_mapping() and at.lookup("choice") is not None:
        choices = at.mapping(("choice",))["choice"].sequence()
        return Axis(path, line, tuple(_plain(c) for c in choices))
    fields = at.mapping(("min", "max", "log"), required=("min", "max"))
    low, high = _endpoint(fields["min"]), _endpoint(fields["max"])
    if low[1] != high[1]:
        raise at.fail(f"min and max need the same unit, got '{low[1]}' and '{high[1]}'")
    if not low[0] <= high[0]:
        raise fields["max"].fail(f"must be >= min, got {high[0]:g} < {low[0]:g}")
    log = fields["log"].boolean() if "log" in fields else False
    if log and low[0] <= 0:
        raise fields["min"].fail("must be > 0 for a log-uniform range")
    return Axis(path, line, (), low, high, log)


def _endpoint(at: Field) -> tuple[float | int, str]:
    """A range end: a number, or text 'NUMBER UNIT' (the unit is kept for the drawn values)."""
    value = at.value()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise at.fail(f"must be a number or 'NUMBER UNIT' (e.g. 20/s), got {value!r}")
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None:
            raise at.fail(f"'{value}' is not a number or 'NUMBER UNIT' (e.g. 20/s, 5 ms)")
        number = float(match.group(1))
        return (int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", match.group(1)) else number), match.group(2)
    if isinstance(value, float) and not math.isfinite(value):
        raise at.fail(f"must be finite, got {value}")
    return value, ""


def _draw(axis: Axis, rng: np.random.Generator) -> Any:
    if axis.values:
        return copy.deepcopy(axis.values[int(rng.integers(len(axis.values)))])
    (low, unit), (high, _) = axis.low, axis.high
    if isinstance(low, int) and isinstance(high, int) and not axis.log:
        number: float | int = int(rng.integers(low, high + 1))
    elif axis.log:
        number = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    else:
        number = float(rng.uniform(low, high))
    if not unit:
        return number
    return f"{number!r}{unit}" if unit.startswith("/") else f"{number!r} {unit}"


def _seeds(at: Field) -> tuple[int, ...]:
    seeds = tuple(f.integer(minimum=0) for f in at.sequence())
    if len(set(seeds)) != len(seeds):
        raise at.fail("lists a seed twice")
    return seeds


def _plain(at: Field) -> Any:
    """A YAML value (scalar, list or mapping) as plain Python."""
    return _CONSTRUCTOR.construct_object(at.node, deep=True)


# ----------------------------------------------------------------------------- points


def _point(index: int, values: list[tuple[str, Any]], base_document: Any, base: Path, axes: dict[str, Axis],
           where: str, seeds: tuple[int, ...] | None, prices: dict[str, float]) -> Point:
    document = copy.deepcopy(base_document)
    canonical: dict[str, str] = {}
    described = ", ".join(f"{p}={format_value(v)}" for p, v in values)
    for path, value in values:
        line = axes[path].line
        canonical[path] = set_path(document, path, value,
                                   lambda message, line=line: SweepError(f"{where}:{line}: point {index} ({described}): {message}"))
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    point = Point(index, tuple(values), text, scenario_hash(document), ())
    try:
        scenario = point_scenario(point, base)
    except ScenarioError as err:
        raise point_error(err, point, base, axes, canonical, where) from None
    cost = devices_cost_usd(scenario, prices)
    return Point(index, tuple(values), text, point.scenario_hash, seeds if seeds is not None else (scenario.seed,), cost)


def point_error(err: HeteroError, point: Point, base: Path, axes: dict[str, Axis], canonical: dict[str, str],
                where: str) -> SweepError:
    """A point's scenario error, located at the sweep line of the swept path it names."""
    message = re.sub(rf"^{re.escape(str(base))}(:\d+)?: ", "", str(err))
    values = dict(point.values)
    guesses = (  # the swept path the message names, else the one whose value it quotes, else its field
        [path for path, full in canonical.items() if full in message or path in message],
        [path for path in canonical if f"'{format_value(values[path])}'" in message],
        [path for path in canonical if re.search(rf"\b{re.escape(re.split(r'[.[]', path)[0])}\b", message)],
        [path for path, _ in point.values],
    )
    named = next((g for g in guesses if g), [])
    line = axes[named[0]].line if named else 1
    return SweepError(f"{where}:{line}: point {point.index} ({point.describe()}): {base.name}: {message}")


def _check_worlds(points: list[Point], base: Path, axes: dict[str, Axis], where: str) -> None:
    """Build the world (model, devices, links) once per distinct mix, as hetero simulate would."""
    from hetero.sim.world import build_world

    checked: set[str] = set()
    for point in points:
        scenario = point_scenario(point, base)
        key = world_key(scenario)
        if key in checked:
            continue
        try:
            build_world(scenario, load=load_model_once)
        except HeteroError as err:
            canonical = {path: path for path, _ in point.values}
            raise point_error(err, point, base, axes, canonical, where) from None
        checked.add(key)


