"""hetero: heterogeneous compute scheduling simulator and runtime for edge AI."""

from hetero.errors import (
    DeviceError,
    GraphError,
    HeteroError,
    InputError,
    ModelError,
    ProfileError,
    ScheduleError,
    UnsupportedOpError,
)
from hetero.ir.graph import Graph, Op, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "DeviceError",
    "Graph",
    "GraphError",
    "HeteroError",
    "InputError",
    "ModelError",
    "Op",
    "ProfileError",
    "ScheduleError",
    "TensorSpec",
    "UnsupportedOpError",
    "__version__",
]
