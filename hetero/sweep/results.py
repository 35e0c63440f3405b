"""RESULTS.csv: one row per (point, seed), appended as points finish, resumable after a crash.

Each row is one ``write`` of a whole line on a file opened for appending, then ``fsync``; so a
crash leaves at most a torn last line (no newline yet), which :func:`open_results` drops. The
key of a row is the point's scenario hash and its seed: a re-run computes only the keys that are
missing. Floats are written with ``repr`` (the shortest text that reads back to the same double),
so a row equals RESULT.json of ``hetero simulate`` bit for bit; NaN and absent values are empty.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from hetero.errors import OutputError
from hetero.sweep.spec import SweepError

log = logging.getLogger(__name__)

KEY_COLUMNS = ("point", "seed", "scenario_hash")
METRICS = ("latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_p99_s", "throughput_per_s",
           "completed", "failed", "lost", "rebalances")
ENERGY = "energy_per_request_J"


def columns_for(axes: Sequence[str], energy: bool) -> tuple[str, ...]:
    """The header: keys, swept paths, cost, metrics (+ energy once the simulator reports it), error."""
    return (*KEY_COLUMNS, *axes, "cost_usd", *METRICS, *((ENERGY,) if energy else ()), "error")


def cell(value: Any) -> str:
    """A value as CSV text: floats by repr, NaN and None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([cell(v).replace("\n", " ") for v in values])
    return buffer.getvalue()


@dataclass(frozen=True)
class Existing:
    """What an earlier run left in the file: the header and the keys of its rows."""

    columns: tuple[str, ...]
    keys: frozenset[tuple[str, int]]
    rows: int
    dropped_torn_line: bool


class ResultsFile:
    """An open RESULTS.csv; :meth:`append` writes one whole row and syncs it."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.existing = open_results(self.path, self.columns)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as err:
            raise OutputError(f"-o {self.path}: cannot open the results file for appending ({err.strerror})") from None
        if self.existing.rows < 0:  # a new file: the header first
            self._write(csv_line(self.columns))

    def append(self, row: Mapping[str, Any]) -> None:
        """One row (missing columns empty) as a single write, then fsync."""
        unknown = set(row) - set(self.columns)
        assert not unknown, f"row has columns not in the header: {sorted(unknown)}"
        self._write(csv_line(row.get(c) for c in self.columns))

    def _write(self, line: str) -> None:
        data = line.encode()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OutputError(f"-o {self.path}: only {written} of {len(data)} bytes of a row were written (disk full?)")
            os.fsync(self._fd)
        except OSError as err:
            raise OutputError(f"-o {self.path}: cannot append a row ({err.strerror})") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_results(path: Path, columns: Sequence[str]) -> Existing:
    """Check an existing file's header, drop a torn last line, collect the keys already there.

    ``rows`` is -1 when there is no file (or an empty one) yet.
    """
    if path.is_dir():
        raise OutputError(f"-o {path}: is a folder; give a .csv file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Existing(tuple(columns), frozenset(), -1, False)
    except OSError as err:
        raise OutputError(f"-o {path}: cannot read the earlier results ({err.strerror})") from None
    torn = bool(data) and not data.endswith(b"\n")
    if torn:
        keep = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - keep)
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            os.fsync(handle.fileno())
        data = data[:keep]
    if not data:
        return Existing(tuple(columns), frozenset(), -1, torn)
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as err:
        raise SweepError(f"{path}: not a results CSV ({err}); give another -o or delete the file") from None
    header = tuple(rows[0])
    if header != tuple(columns):
        raise SweepError(f"{path}:1: the results file has the columns {', '.join(header)}; this sweep writes "
                         f"{', '.join(columns)}; give another -o or delete the file")
    keys = set()
    index = {name: i for i, name in enumerate(header)}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SweepError(f"{path}:{line}: a row with {len(row)} fields, the header has {len(header)}; "
                             "fix or delete that line and run again")
        keys.add((row[index["scenario_hash"]], int(row[index["seed"]])))
    return Existing(header, frozenset(keys), len(rows) - 1, torn)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Every row of a results file as text by column (a torn last line left out)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SweepError(f"{path}: no such results file (hetero sweep SWEEP.yaml -o {path.name} writes one)") from None
    except OSError as err:
        raise SweepError(f"{path}: cannot read the results ({err.strerror})") from None
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline="")))
    if not rows:
        raise SweepError(f"{path}: has no result rows")
    return rows
