"""Dotted paths into a scenario document: ``workload.rate``, ``devices[1].count``, ``devices[npu].count``.

A step is ``.key`` into a mapping, ``[N]`` into a list by position, or ``[name]`` into a list by
the ``name`` of its entries. The last key of a mapping may be new (a field the base leaves out).
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable

from hetero.sim.fields import Field

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[([^\]]+)\]")
_FIRST = re.compile(r"^[A-Za-z_][\w-]*")



def parse_path(path: str, at: Field) -> list[str | int]:
    """``devices[1].count`` as ['devices', 1, 'count']; a bracket that is not a number selects by name."""
    steps, rest = _steps(path)
    if not steps:
        raise at.fail(f"'{path}' is not a dotted path (e.g. workload.rate, devices[1].count, devices[npu].count)")
    if rest:
        raise at.fail(f"'{path}' is not a dotted path: cannot read '{rest}' (steps are .key, [index] or [name])")
    return steps


def _steps(path: str) -> tuple[list[str | int], str]:
    """The steps read, and what could not be read ('' when all of it)."""
    first = _FIRST.match(path)
    if first is None:
        return [], path
    steps: list[str | int] = [first.group(0)]
    position = first.end()
    while position < len(path):
        step = _STEP.match(path, position)
        if step is None:
            return steps, path[position:]
        key, index = step.groups()
        steps.append(key if key is not None else (int(index) if index.strip().isdigit() else index.strip()))
        position = step.end()
    return steps, ""


def set_path(document: Any, path: str, value: Any, fail: Callable[[str], Exception]) -> str:
    """Set ``path`` (checked by parse_path) in the document to ``value``; returns the path with list
    positions (devices[npu] -> devices[1]); what does not lead anywhere raises ``fail(message)``."""
    steps, rest = _steps(path)
    assert steps and not rest, f"{path} was not checked with parse_path"
    node = document
    canonical = ""
    for depth, step in enumerate(steps):
        last = depth == len(steps) - 1
        if not isinstance(node, (dict, list)) or isinstance(step, int) and not isinstance(node, list):
            wanted = "list" if isinstance(step, int) else "mapping or list"
            raise fail(f"{canonical or 'the scenario'} is not a {wanted} in the base scenario, so '{path}' does not lead anywhere")
        if isinstance(node, list):
            if isinstance(step, str):
                named = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == step]
                if not named:
                    names = [str(item.get("name")) for item in node if isinstance(item, dict) and "name" in item]
                    raise fail(f"{canonical} has no entry named '{step}' (names: {', '.join(names) or 'none'})")
                step = named[0]
            if not 0 <= step < len(node):
                raise fail(f"{canonical} has {len(node)} entries; [{step}] is out of range (the first is [0])")
            canonical += f"[{step}]"
        else:
            if step not in node and not last:
                raise fail(f"the base scenario has no '{(canonical + '.' if canonical else '') + step}'")
            canonical += f".{step}" if canonical else step
        if last:
            node[step] = copy.deepcopy(value)
        else:
            node = node[step]
    return canonical
