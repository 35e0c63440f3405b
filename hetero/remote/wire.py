"""Ops on the wire: an Op's fields as plain picklable data and back (its mappings are read-only proxies)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any

import numpy as np

from hetero.ir.graph import Op


def pack_op(op: Op) -> dict[str, Any]:
    """The op's fields, with its attributes and weights as plain dicts."""
    fields = {f.name: getattr(op, f.name) for f in dataclasses.fields(op)}
    fields["attrs"] = dict(op.attrs)
    fields["weights"] = dict(op.weights)
    return fields


def unpack_op(fields: dict[str, Any]) -> Op:
    """The Op ``pack_op`` packed, its mappings read-only again and its weights not writeable."""
    weights = {}
    for name, array in fields["weights"].items():
        array = np.asarray(array)
        array.flags.writeable = False
        weights[name] = array
    values = dict(fields, attrs=types.MappingProxyType(dict(fields["attrs"])), weights=types.MappingProxyType(weights))
    return Op(**values)
