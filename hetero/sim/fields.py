"""Reading a YAML file field by field, with the file and line of every value at hand.

The file is composed to YAML nodes (not constructed to Python objects), so each value keeps the
line it came from. A :class:`Field` is one value plus its dotted path (``events[1].factor``);
its accessors check the type and range and raise :class:`ScenarioError` with a one-line message
such as ``scenario.yaml:14: events[1].factor must be > 0``. Quantities may carry a unit
(``5 ms``, ``50 Mbit/s``, ``20/s``, ``4.5 W``, ``0.5 J``, ``300 nJ/bit``); a bare number is in
seconds, bytes per second, per second, watts, joules or joules per byte.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from hetero.errors import ScenarioError
from hetero.io import did_you_mean


TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0, "h": 3600.0}
BANDWIDTH_UNITS = {
    "B/s": 1.0, "kB/s": 1e3, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "KiB/s": 1024.0, "MiB/s": 1024.0**2,
    "GiB/s": 1024.0**3, "bit/s": 1 / 8, "kbit/s": 1e3 / 8, "Mbit/s": 1e6 / 8, "Gbit/s": 1e9 / 8,
}
RATE_UNITS = {"/s": 1.0, "/min": 1 / 60.0, "/h": 1 / 3600.0}
POWER_UNITS = {"W": 1.0, "mW": 1e-3, "kW": 1e3}
ENERGY_UNITS = {"J": 1.0, "mJ": 1e-3, "uJ": 1e-6, "µJ": 1e-6, "kJ": 1e3, "Wh": 3600.0, "mWh": 3.6}
LINK_ENERGY_UNITS = {  # joules per byte
    "J/byte": 1.0, "J/B": 1.0, "mJ/byte": 1e-3, "uJ/byte": 1e-6, "nJ/byte": 1e-9, "pJ/byte": 1e-12,
    "J/bit": 8.0, "mJ/bit": 8e-3, "uJ/bit": 8e-6, "µJ/bit": 8e-6, "nJ/bit": 8e-9, "pJ/bit": 8e-12,
}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def load_yaml(path: str | Path) -> "Field":
    """The top-level Field of a YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"{path}: cannot read the scenario ({err})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> "Field":
    """The top-level Field of YAML text; ``where`` names it in errors."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError(f"{where}:{line}: not valid YAML ({err.problem or err.context})") from None
    except yaml.YAMLError as err:
        raise ScenarioError(f"{where}: not valid YAML ({err})") from None
    if node is None:
        raise ScenarioError(f"{where}:1: the scenario is empty")
    return Field(node, where, "")


class Field:
    """One YAML value with its file, line and dotted path."""

    def __init__(self, node: yaml.Node, where: str, path: str) -> None:
        self.node = node
        self.where = where
        self.path = path

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1

    @property
    def name(self) -> str:
        return self.path or "the scenario"

    def fail(self, message: str) -> ScenarioError:
        """An error located at this field: ``file:line: path message``."""
        return ScenarioError(f"{self.where}:{self.line}: {self.name} {message}")

    def child(self, node: yaml.Node, key: str | int) -> "Field":
        if isinstance(key, int):
            return Field(node, self.where, f"{self.path}[{key}]")
        return Field(node, self.where, f"{self.path}.{key}" if self.path else key)

    # -- structure ---------------------------------------------------------------------------

    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def is_sequence(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    def mapping(self, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[str, "Field"]:
        """Fields of a mapping by key; unknown keys, repeated keys and missing required keys raise."""
        if not self.is_mapping():
            raise self.fail(f"must be a mapping with keys {', '.join(allowed)}")
        fields: dict[str, Field] = {}
        for key_node, value_node in self.node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            at = Field(key_node, self.where, self.path)
            if not isinstance(key, str):
                raise at.fail("has a key that is not a name")
            if key not in allowed:
                raise at.child(key_node, key).fail(f"is not a known field (allowed: {', '.join(allowed)})"
                                                   f"{did_you_mean(key, allowed)}")
            if key in fields:
                raise at.child(key_node, key).fail("is given twice")
            fields[key] = self.child(value_node, key)
        missing = [key for key in required if key not in fields]
        if missing:
            raise self.fail(f"needs '{missing[0]}' (required: {', '.join(required)})")
        return fields

    def lookup(self, key: str) -> "Field | None":
        """The field under ``key`` of a mapping, without checking the other keys (None when absent)."""
        if self.is_mapping():
            for key_node, value_node in self.node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                    return self.child(value_node, key)
        return None

    def choice(self, key: str, choices: Sequence[str]) -> str:
        """The text under ``key`` that picks which other keys a mapping may have (e.g. ``kind``)."""
        if not self.is_mapping():
            raise self.fail(f"must be a mapping with a '{key}' ({', '.join(choices)})")
        found = self.lookup(key)
        if found is None:
            raise self.fail(f"needs '{key}' (one of {', '.join(choices)})")
        return found.string(choices)

    def sequence(self, allow_empty: bool = False) -> list["Field"]:
        """Fields of a list."""
        if not self.is_sequence():
            raise self.fail("must be a list")
        items = [self.child(node, i) for i, node in enumerate(self.node.value)]
        if not items and not allow_empty:
            raise self.fail("must not be empty")
        return items

    # -- scalars -----------------------------------------------------------------------------

    def value(self) -> Any:
        """The scalar's Python value (str, int, float, bool or None)."""
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.fail("must be a single value, not a list or mapping")
        return _CONSTRUCTOR.construct_object(self.node)

    def string(self, choices: Sequence[str] | None = None) -> str:
        value = self.value()
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"must be a non-empty text, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(f"'{value}' is not one of {', '.join(choices)}{did_you_mean(value, choices)}")
        return value

    def boolean(self) -> bool:
        value = self.value()
        if not isinstance(value, bool):
            raise self.fail(f"must be true or false, got {value!r}")
        return value

    def integer(self, minimum: int | None = None) -> int:
        value = self.value()
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"must be a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(f"must be >= {minimum}, got {value}")
        return value

    def number(self, minimum: float | None = None, positive: bool = False, maximum: float | None = None,
               below: float | None = None) -> float:
        """A plain finite number within the given bounds (YAML 1.1 reads 1e9 as text: taken as a number)."""
        value = self.value()
        match = _QUANTITY.match(value) if isinstance(value, str) else None
        if match is not None and not match.group(2):
            value = float(match.group(1))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"must be a number, got {value!r}")
        return self._bounded(float(value), minimum, positive, maximum, below)

    def _bounded(self, value: float, minimum: float | None, positive: bool, maximum: float | None,
                 below: float | None) -> float:
        if not math.isfinite(value):
            raise self.fail(f"must be finite, got {value}")
        if positive and value <= 0:
            raise self.fail(f"must be > 0, got {value:g}")
        if minimum is not None and value < minimum:
            raise self.fail(f"must be >= {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.fail(f"must be <= {maximum:g}, got {value:g}")
        if below is not None and value >= below:
            raise self.fail(f"must be < {below:g}, got {value:g}")
        return value

    def quantity(self, units: dict[str, float], what: str, example: str, minimum: float | None = None,
                 positive: bool = False) -> float:
        """A number in base units, or a text 'NUMBER UNIT' with one of ``units``."""
        value = self.value()
        article = "an" if what[0] in "aeiou" else "a"
        if isinstance(value, bool):
            raise self.fail(f"must be {article} {what}, e.g. {example}")
        if isinstance(value, (int, float)):
            return self._bounded(float(value), minimum, positive, None, None)
        match = _QUANTITY.match(str(value)) if isinstance(value, str) else None
        if match is not None and not match.group(2):  # YAML 1.1 reads 2e-6 as text: a bare number, in base units
            return self._bounded(float(match.group(1)), minimum, positive, None, None)
        if match is None or match.group(2) not in units:
            raise self.fail(f"'{value}' is not {article} {what} (e.g. {example}; units: {', '.join(units)})")
        return self._bounded(float(match.group(1)) * units[match.group(2)], minimum, positive, None, None)

    def seconds(self, positive: bool = False) -> float:
        return self.quantity(TIME_UNITS, "duration", "'5 ms' or 0.005", minimum=0.0, positive=positive)

    def bandwidth(self) -> float:
        return self.quantity(BANDWIDTH_UNITS, "bandwidth", "'50 Mbit/s' or 6.25e6 bytes/s", positive=True)

    def watts(self) -> float:
        return self.quantity(POWER_UNITS, "power", "'4.5 W' or '400 mW'", minimum=0.0)

    def joules(self) -> float:
        return self.quantity(ENERGY_UNITS, "energy", "'0.5 J' or '20 mJ'", positive=True)

    def joules_per_byte(self) -> float:
        return self.quantity(LINK_ENERGY_UNITS, "link energy", "'300 nJ/bit' or '2.4e-6 J/byte'", minimum=0.0)

    def rate(self) -> float:
        return self.quantity(RATE_UNITS, "rate", "'20/s' or 20", positive=True)
