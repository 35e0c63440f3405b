"""Shared helpers for the import and op tests: tiny ONNX models, onnxruntime, comparisons.

Test modules import the plain functions below with ``from conftest import ...`` (pytest puts
this directory on sys.path because tests/ is not a package).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from hetero.exec.executor import run_reference
from hetero.backends.discovery import DeviceInfo, discover
from hetero.ir.graph import Graph
from hetero.ir.onnx_import import import_onnx

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
REL_L2 = 1e-4


def ir_version_for(opset: int) -> int:
    """An IR version onnxruntime accepts for a default-domain opset."""
    if opset <= 17:
        return 8
    if opset <= 19:
        return 9
    return 10


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    initializers: Mapping[str, np.ndarray] | None = None,
    opset: int = 17,
    name: str = "test",
    input_dims: Mapping[str, Sequence[int | str]] | None = None,
) -> onnx.ModelProto:
    """A model from nodes; graph inputs typed from example arrays, output element types inferred.

    Outputs are declared with an element type but no shape, so that the shapes compared
    below are the ones onnxruntime and hetero compute, not ones written into the test.
    """
    input_dims = input_dims or {}
    graph_inputs = [
        helper.make_tensor_value_info(
            n,
            helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
            list(input_dims.get(n, np.asarray(a).shape)),
        )
        for n, a in inputs.items()
    ]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version_for(opset))
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.output}
    assert all(types.get(o) for o in outputs), f"onnx could not type outputs {outputs} at opset {opset}"
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(o, types[o], None) for o in outputs)
    return model


def ort_run(model: onnx.ModelProto | str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs by name from a single-threaded CPU onnxruntime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no graph rewrites: fusions such as DequantizeLinear+MatMul change the arithmetic
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    session = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def rel_l2(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected|| / ||expected|| in float64 (absolute when expected is all zero)."""
    diff = float(np.linalg.norm((actual.astype(np.float64) - expected.astype(np.float64)).ravel()))
    norm = float(np.linalg.norm(expected.astype(np.float64).ravel()))
    return diff / norm if norm > 0 else diff


def assert_matches(actual: np.ndarray, expected: np.ndarray, exact: bool = False, what: str = "") -> None:
    """Same shape and dtype, and equal (exact) or within REL_L2 relative L2 error."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != onnxruntime {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != onnxruntime {expected.dtype}"
    if exact or not np.issubdtype(expected.dtype, np.floating):
        mismatch = np.flatnonzero(actual.ravel() != expected.ravel())
        assert mismatch.size == 0, (
            f"{what}: {mismatch.size} elements differ, first at {mismatch[0]}: "
            f"{actual.ravel()[mismatch[0]]} != {expected.ravel()[mismatch[0]]}"
        )
    else:
        assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
        err = rel_l2(actual, expected)
        assert err <= REL_L2, f"{what}: relative L2 error {err:.3g} > {REL_L2}"


def check_against_ort(
    model: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    exact: bool = False,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Import, run the reference executor and compare every output with onnxruntime.

    Also checks that the graph's declared output specs match the arrays it produced.
    Returns the imported graph so callers can inspect it.
    """
    graph = import_onnx(model, input_shapes=input_shapes)
    got = run_reference(graph, feeds)
    want = ort_run(model, feeds)
    assert set(got) == set(want), f"outputs {sorted(got)} != onnxruntime {sorted(want)}"
    for spec in graph.outputs:
        assert got[spec.name].shape == spec.shape, f"{spec.name}: ran as {got[spec.name].shape}, declared {spec.shape}"
        assert str(got[spec.name].dtype) == spec.dtype, f"{spec.name}: ran as {got[spec.name].dtype}, declared {spec.dtype}"
        assert_matches(got[spec.name], want[spec.name], exact=exact, what=spec.name)
    return graph


def op_types(graph: Graph) -> list[str]:
    """Op types of a graph in topological order."""
    return [op.type for op in graph.ops_in_order()]


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float32 arrays for every graph input."""
    rng = np.random.default_rng(seed)
    return {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def node(op_type: str, inputs: Iterable[str], outputs: Iterable[str], **attrs: object) -> onnx.NodeProto:
    """helper.make_node with a name derived from the op type and first output."""
    outputs = list(outputs)
    return helper.make_node(op_type, list(inputs), outputs, name=f"{op_type.lower()}_{outputs[0]}", **attrs)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "opencl: needs a usable OpenCL device (skipped, saying why, without one)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``opencl`` when no OpenCL device is usable, with each device's reason."""
    if item.get_closest_marker("opencl") is not None:
        devices, reason = usable_opencl()
        if not devices:
            pytest.skip(reason)


def usable_opencl() -> tuple[list[DeviceInfo], str]:
    """The usable OpenCL devices (discovery builds and runs a kernel on each, once per process)
    and, for a skip, why there are none: each failing device's reason and the fix."""
    devices, absent = discover(["opencl"])
    reasons = "; ".join(a.reason for a in absent) or "no OpenCL platform lists a device"
    return devices, f"no usable OpenCL device: {reasons}"


def resnet_roofline_world():
    """resnet18 on a CPU host, two equal GPUs and an NPU with made-up roofline costs (simulator tests)."""
    from hetero.ir.source import load_graph
    from hetero.cost.protocol import Link
    from hetero.sim.world import table_world

    graph = load_graph("builtin:resnet18")
    devices = (("cpu", 5e10, 2e10, 2e-6), ("gpu0", 1e12, 2e11, 2e-5), ("gpu1", 1e12, 2e11, 2e-5), ("npu", 4e12, 1e11, 5e-5))
    compute = {}
    for name, data in graph.nodes(data=True):
        op = data["op"]
        compute[name] = {d: launch + max(op.flops / flops, (op.bytes_read + op.bytes_written) / bandwidth)
                         for d, flops, bandwidth, launch in devices}
    links = [Link("cpu", d, 2e-5, 8e9) for d, *_ in devices[1:]] + [Link("gpu0", "gpu1", 1e-5, 2.5e10)]
    return table_world(graph, compute, links, host="cpu", devices=[d for d, *_ in devices])


def q_params(rng: np.random.Generator, dtype: np.dtype) -> tuple[np.float32, np.ndarray]:
    """A random activation scale and a zero point of ``dtype``, for the integer-op tests."""
    info = np.iinfo(dtype)
    return np.float32(rng.uniform(0.001, 0.2)), np.asarray(rng.integers(info.min, info.max), dtype)


@functools.lru_cache(maxsize=None)
def host_seed_profile() -> str:
    """The shipped seed-CNN int8 profile (profiles/seed-cnn.int8.json) where its cpu and opencl:0
    are this machine's; else (another CPU or OpenCL platform: machines change) a profile of the
    same model measured here once per test session (hetero profile, then --update-calibration:
    about 10 s), so tests that validate predictions against real runs get a profile of the
    hardware they run on. Without a usable OpenCL device: the shipped one (those tests skip)."""
    import tempfile

    from hetero.app.cli import main
    from hetero.cost.profile import check_device, load_profile
    from hetero.errors import ProfileError

    shipped = str(Path(__file__).resolve().parents[1] / "profiles" / "seed-cnn.int8.json")
    profile = load_profile(shipped)
    devices, _ = usable_opencl()
    found = {info.name: info for info in discover(["cpu"])[0] + devices}
    try:
        for name in profile.devices:
            if name not in found:
                raise ProfileError(f"no {name}")
            check_device(profile, shipped, name, found[name])
        return shipped
    except ProfileError:
        if "opencl:0" not in found:
            return shipped
    path = str(Path(tempfile.mkdtemp(prefix="hetero-host-profile-")) / "seed-cnn.int8.json")
    if main(["profile", "builtin:seed-cnn", "--precision", "int8", "--devices", "cpu,opencl:0", "-o", path]) != 0 or \
            main(["profile", "--update-calibration", path, "--devices", "cpu,opencl:0"]) != 0:
        raise RuntimeError("could not profile the seed CNN on this machine for the tests")
    return path
