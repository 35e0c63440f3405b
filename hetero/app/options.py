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


def input_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """--input-shape NAME=1x16[,NAME2=...]: the shape of each named model input (fixes its symbolic
    dimensions). Names and ranks are checked against the model when it is imported."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, dims = item.partition("=")
        if not sep or not name.strip() or not dims.strip():
            raise argparse.ArgumentTypeError(f"{item!r}: write NAME=DIMS, e.g. input_ids=1x16")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: dimensions are whole numbers joined by x, e.g. 1x16") from None
        if any(d <= 0 for d in shape):
            raise argparse.ArgumentTypeError(f"{item!r}: every dimension must be > 0")
        if name.strip() in shapes:
            raise argparse.ArgumentTypeError(f"input {name.strip()!r} is given twice")
        shapes[name.strip()] = shape
    return shapes


def add_input_shape_option(parser: argparse.ArgumentParser) -> None:
    """The --input-shape option of every command that loads a model."""
    parser.add_argument("--input-shape", type=input_shapes, default=None, metavar="NAME=DIMS[,NAME=DIMS]",
                        help="shape of a model input with symbolic dimensions, e.g. input_ids=1x16 "
                             "(default: the --input data's shape where given, else 1 for each symbolic dimension)")
