"""Option types the hetero subcommands share: whole numbers > 0, fractions, device lists.

A bad value is refused by the parser with the option's name (``argument --budget-s: must be > 0,
got -1``) before any work starts.
"""

from __future__ import annotations

import argparse
import math

from hetero.errors import InputError


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number > 0."""
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number > 0, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number >= 0."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def percent(text: str) -> float:
    """A number in (0, 100]."""
    value = _number(text, float)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return value


def device_list(text: str, option: str = "--devices") -> list[str]:
    """The names of a comma-separated device list; empty lists and repeats are refused."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise InputError(f"{option} {text!r} names no device; give a comma-separated list such as cpu,opencl:0 "
                         "(hetero devices lists them)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{option} {text}: lists {repeated[0]} twice; name each device once")
    return names
