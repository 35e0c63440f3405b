"""The plan's small NHWC kernels as work loops shared with helper threads (kernels_shared), bit for bit.

Depthwise convs (on AVX-512 VNNI kernels_dwv where the weights fit int8, and with it off: 3x3 by
rows at stride 1, deinterleaved or pixel by pixel at stride 2, 5x5 from a padded copy, other sizes
read in place), QLinearAdd, MaxPool and QuantizeLinear run through
``kernels_shared.run_items`` in a plan; each one-op graph at 2 threads must equal the numpy int8
reference and a one-node onnxruntime model, for odd channel counts and uint8/int8 activations
and weights (concat copies and channel shuffles: tests/test_cpu_plan.py's untuned CNN). The work
loops, run by two threads at once on one counter, must give the OpenMP kernels' output with
every item done once. The helpers' bounded spin returns when the generation changes and gives
up after its polls, and their cheap thread-count getter and setter agree with numba's."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetero.backends.cpu import helpers
from hetero.backends.cpu import kernels_dwv as dv
from hetero.backends.cpu import kernels_nhwc as nk
from hetero.backends.cpu import kernels_shared as ks
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.discovery import DeviceInfo
from hetero.exec.executor import run_on_device, run_reference
from hetero.ir.graph import Graph, TensorSpec, make_op

INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)
ELEM = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, "float32": TensorProto.FLOAT}


@pytest.fixture(scope="module")
def dev() -> CpuDevice:
    device = CpuDevice(INFO, threads=2)
    yield device
    device.close()


def one_node(op_type: str, inputs: list[str], attrs: dict, weights: dict, x: np.ndarray,
             extra: dict[str, np.ndarray] | None = None) -> tuple[Graph, bytes]:
    """The one-op graph and the same node as a serialized onnx model (activations ``x`` and ``extra``)."""
    extra = extra or {}
    specs = {"x": TensorSpec("x", x.shape, str(x.dtype))}
    specs.update({name: TensorSpec(name, value.shape, str(value.dtype)) for name, value in extra.items()})
    op = make_op("node", op_type, inputs, ["y"], attrs, specs, weights)
    out_dtype = next(str(np.asarray(v).dtype) for k, v in weights.items() if k == "zy") if "zy" in weights else str(x.dtype)
    onnx_attrs = {key: list(value) if isinstance(value, tuple) else value for key, value in attrs.items()}
    node = helper.make_node(op_type, inputs, ["y"], **onnx_attrs)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info(n, ELEM[s.dtype], list(s.shape)) for n, s in specs.items()],
                              [helper.make_tensor_value_info("y", ELEM[out_dtype], None)],
                              [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return Graph.build([op], list(specs.values()), ["y"], name="one"), model.SerializeToString()


def check(dev: CpuDevice, graph: Graph, model: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    got = run_on_device(graph, dev, feeds)["y"]
    np.testing.assert_array_equal(got, run_reference(graph, feeds)["y"])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, session.run(None, feeds)[0])
    assert np.unique(got).size > 8  # not saturated: a wrong sum would show
    return got


DW_CASES = [
    # channels, (h, w), stride, kernel: the kernel the plan picks
    (37, (13, 13), 1, 3),  # 3x3 stride 1 by output rows, odd channels
    (7, (5, 9), 1, 3),  # few channels, non-square
    (24, (15, 15), 2, 3),  # 3x3 stride 2 from deinterleaved rows (C < 64), odd size
    (67, (14, 11), 2, 3),  # 3x3 stride 2 pixel by pixel (C >= 64), odd channels
    (29, (11, 12), 1, 5),  # 5x5 from the padded copy (kernels_dw), C rounded up to 32
    (21, (9, 10), 1, 7),  # 7x7 read in place, edge columns with their own weights
    (40, (14, 13), 2, 5),  # 5x5 stride 2
]
DTYPES = [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8")]


@pytest.mark.parametrize("case", DW_CASES, ids=[str(c) for c in DW_CASES])
@pytest.mark.parametrize("dtypes", DTYPES, ids=["-".join(d) for d in DTYPES])
@pytest.mark.parametrize("vnni", [True, False], ids=["kernels_dwv", "int16"])
def test_depthwise_equals_reference_and_onnxruntime(dev: CpuDevice, case: tuple, dtypes: tuple[str, str], vnni: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if vnni and not dv.HAS_VNNI:
        pytest.skip("this CPU lacks AVX-512 VNNI: kernels_dwv is not used here")
    monkeypatch.setattr(dv, "ENABLED", vnni)
    c, hw, stride, k = case
    x_dtype, w_dtype = dtypes
    rng = np.random.default_rng(c + stride)
    xi, wi = np.iinfo(x_dtype), np.iinfo(w_dtype)
    x = rng.integers(xi.min, xi.max + 1, (1, c, *hw)).astype(x_dtype)
    zw = np.zeros(c, w_dtype) if w_dtype == "int8" else rng.integers(100, 156, c).astype(w_dtype)
    weights = {
        "sx": np.float32(0.02), "zx": np.asarray(rng.integers(xi.min, xi.max + 1), x_dtype),
        "w": rng.integers(wi.min, wi.max + 1, (c, 1, k, k)).astype(w_dtype),
        "sw": rng.uniform(0.001, 0.01, c).astype(np.float32), "zw": zw, "sy": np.float32(0.04),
        "zy": np.asarray(rng.integers(xi.min // 2, xi.max // 2 + 1), x_dtype), "b": rng.integers(-3000, 3000, c).astype(np.int32),
    }
    attrs = {"kernel_shape": (k, k), "strides": (stride, stride), "pads": (k // 2,) * 4, "group": c, "dilations": (1, 1)}
    graph, model = one_node("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], attrs, weights, x)
    check(dev, graph, model, {"x": x})


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qadd_equals_reference_and_onnxruntime(dev: CpuDevice, dtype: str) -> None:
    """Three CHUNKs and a partial one (QLinearAdd is a com.microsoft op in onnxruntime)."""
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    shape = (1, 33, 41, 37)  # 50061 elements
    a, b = (rng.integers(info.min, info.max + 1, shape).astype(dtype) for _ in range(2))
    weights = {"sa": np.float32(0.03), "za": np.asarray(info.min + 90, dtype), "sb": np.float32(0.05),
               "zb": np.asarray(info.min + 130, dtype), "sy": np.float32(0.06), "zy": np.asarray(info.min + 120, dtype)}
    op = make_op("add", "QLinearAdd", ["x", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], {},
                 {"x": TensorSpec("x", shape, dtype), "b": TensorSpec("b", shape, dtype)}, weights)
    graph = Graph.build([op], [TensorSpec("x", shape, dtype), TensorSpec("b", shape, dtype)], ["y"], name="add")
    node = helper.make_node("QLinearAdd", ["x", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], domain="com.microsoft")
    onnx_graph = helper.make_graph([node], "add", [helper.make_tensor_value_info(n, ELEM[dtype], list(shape)) for n in ("x", "b")],
                                   [helper.make_tensor_value_info("y", ELEM[dtype], None)],
                                   [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    check(dev, graph, model.SerializeToString(), {"x": a, "b": b})


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("channels", [37, 3, 1])
def test_quantize_then_max_pool_equal_reference_and_onnxruntime(dev: CpuDevice, dtype: str, channels: int) -> None:
    """QuantizeLinear of an image of 255 pixels (blocks of 256 pixels: one partial; 37 channels
    through a tile, 3 interleaved in one loop, 1 directly), written channels-last, then MaxPool
    3x3 / 2 on it (the plan pools NHWC inputs only)."""
    rng = np.random.default_rng(9)
    info = np.iinfo(dtype)
    f = (rng.standard_normal((1, channels, 17, 15)) * 2).astype(np.float32)
    q_spec = TensorSpec("q", f.shape, dtype)
    weights = {"s": np.float32(0.02), "zq": np.asarray(info.min + 128 + 7, dtype)}
    attrs = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    quant = make_op("quant", "QuantizeLinear", ["x", "s", "zq"], ["q"], {}, {"x": TensorSpec("x", f.shape, "float32")}, weights)
    pool = make_op("pool", "MaxPool", ["q"], ["y"], attrs, {"q": q_spec}, {})
    graph = Graph.build([quant, pool], [TensorSpec("x", f.shape, "float32")], ["y"], name="pool")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zq"], ["q"]),
             helper.make_node("MaxPool", ["q"], ["y"], **{k: list(v) for k, v in attrs.items()})]
    onnx_graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(f.shape))],
                                   [helper.make_tensor_value_info("y", ELEM[dtype], None)],
                                   [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    check(dev, graph, model.SerializeToString(), {"x": f})


def test_two_threads_share_the_items_exactly_once() -> None:
    """Two threads run the stride-1 depthwise loop on one counter at once: each output row is
    computed once, by one of them, as the OpenMP kernel computes it."""
    rng = np.random.default_rng(2)
    h, c = 40, 19
    xp = rng.integers(0, 256, (h + 2, h + 2, c), dtype=np.uint8)
    taps = rng.integers(-120, 120, (9, h * c)).astype(np.int16)
    bias = rng.integers(-4000, 4000, h * c).astype(np.int32)
    mult = rng.uniform(1e-3, 1e-2, h * c).astype(np.float32)
    tail = (np.float32(7), np.float32(0), np.float32(255))
    want = np.empty((h, h, c), np.uint8)
    nk.depthwise3_nhwc(xp, taps, 1, 1, bias, mult, *tail, want)
    got = np.zeros_like(want)
    counter = np.zeros(2, np.int64)
    ran: list[int] = []
    start = threading.Barrier(2)

    def work() -> None:
        start.wait()
        ran.append(ks.dw3_rows_part(xp, taps, 1, 1, bias, mult, *tail, got, counter))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(got, want)
    assert sum(ran) == h and counter[1] == h


def test_helper_spin_sees_a_new_generation_and_gives_up_without_one() -> None:
    flag = np.zeros(1, np.int64)
    assert not helpers._spin_for_change(flag, 0, 1000)
    flag[0] = 3
    assert helpers._spin_for_change(flag, 0, 1)
    flag[0] = 0
    timer = threading.Timer(0.02, lambda: flag.__setitem__(0, 1))
    timer.start()
    assert helpers._spin_for_change(flag, 0, 10**12)  # returns once the other thread stores (not after 1e12 polls)
    timer.join()


def test_thread_count_follows_numba() -> None:
    """The cheap getter/setter the plan uses agree with numba's public ones, both ways."""
    import numba

    before = numba.get_num_threads()
    try:
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            helpers.set_thread_count(n)
            assert numba.get_num_threads() == n and helpers.thread_count() == n
            numba.set_num_threads(n)
            assert helpers.thread_count() == n
    finally:
        numba.set_num_threads(before)
