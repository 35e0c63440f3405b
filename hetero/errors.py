"""The exception hierarchy: every error hetero raises on purpose is a HeteroError.

Each message names the file, node or device at fault and says what to do, in one line,
so the CLI can print it as is and exit non-zero.
"""

from __future__ import annotations


class HeteroError(Exception):
    """Root of every error hetero raises for bad input or an unusable environment."""


class ModelError(HeteroError):
    """A model file is missing, malformed, truncated or inconsistent."""


class UnsupportedOpError(ModelError):
    """A model uses an operator (or an operator form) hetero has no definition for."""


class GraphError(HeteroError):
    """A graph violates an invariant: a cycle, a tensor produced twice or never, a shape mismatch."""


class DeviceError(HeteroError):
    """A device is unknown, absent, or failed while running."""


class InputError(HeteroError, ValueError):
    """A user-supplied input (array file, option value) does not fit the model or command."""


class ProfileError(HeteroError):
    """A profile file is missing, truncated, hand-edited wrongly, from the future, or of another device."""


class ScheduleError(HeteroError):
    """No feasible schedule exists for the request, or a schedule breaks one of its invariants."""


class SimulationError(HeteroError):
    """A simulation cannot go on: a policy returned a plan for devices the scenario lacks, or the
    workload is too large to simulate."""


class ScenarioError(InputError):
    """A scenario file is missing, not YAML, or has a field of the wrong type, range or name."""


class OutputError(HeteroError):
    """An output path cannot be written: a folder, under a file, on a read-only or special file system."""


class UsageError(InputError):
    """The command line itself is wrong: an unknown option, a bad choice or value, a missing argument."""
