"""The implicit-GEMM convolution over flat pixel tiles (hetero.backends.cpu.gemm_fused.conv_tiles), bit for bit.

Tiles of MR consecutive output pixels cross output-row ends (rows of 1, 5, 7, 13, 14 pixels),
the last tile is partial, output channels end inside a 16/32/64-column panel, few-channel
images (1, 2, 3, 5 channels) read each tap row as a 4-byte multiple in place with the extra
bytes meeting zero weights, and unpadded inputs are read where they lie. Each one-op graph
must equal the numpy int8 reference and a one-node onnxruntime QLinearConv, for uint8 and
int8 activations and weights (int8 x uint8, which onnxruntime lacks, against the reference
only); fused Relu/Clip ranges (qmin/qmax) against the reference.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetero.backends.cpu import gemm as cpu_gemm
from hetero.backends.cpu import gemm_fused
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.discovery import DeviceInfo
from hetero.exec.executor import run_on_device, run_reference
from hetero.ir.graph import Graph, TensorSpec, make_op

INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)

pytestmark = pytest.mark.skipif(not cpu_gemm.HAS_VNNI, reason="the flat-tile convolution needs AVX-512 VNNI")


@pytest.fixture(scope="module")
def dev() -> CpuDevice:
    device = CpuDevice(INFO)
    yield device
    device.close()


def conv_case(seed: int, x_dtype: str, w_dtype: str, cin: int, cout: int, hw: tuple[int, int], k: int, stride: int,
              pad: int, clamp: tuple[int, int] | None = None, group: int = 1, zw_shift: int = 0) -> tuple[Graph, np.ndarray, bytes]:
    """A one-op QLinearConv graph (weight zero point 0 for int8, 128 for uint8: no row sums),
    its input, and the same node as a serialized onnx model."""
    rng = np.random.default_rng(seed)
    xinfo, winfo = np.iinfo(x_dtype), np.iinfo(w_dtype)
    x = rng.integers(xinfo.min, xinfo.max + 1, (1, cin, *hw)).astype(x_dtype)
    w = rng.integers(winfo.min, winfo.max + 1, (cout, cin // group, k, k)).astype(w_dtype)
    zw = np.full(cout, (0 if w_dtype == "int8" else 128) + zw_shift, w_dtype)
    weights = {
        "sx": np.float32(0.02), "zx": np.asarray(rng.integers(xinfo.min, xinfo.max + 1), x_dtype), "w": w,
        "sw": rng.uniform(0.001, 0.01, cout).astype(np.float32), "zw": zw, "sy": np.float32(0.05 * np.sqrt(cin * k * k / 27)),
        "zy": np.asarray(rng.integers(xinfo.min // 2, xinfo.max // 2 + 1), x_dtype),
        "b": rng.integers(-5000, 5000, cout).astype(np.int32),
    }
    attrs = {"kernel_shape": (k, k), "strides": (stride, stride), "pads": (pad,) * 4, "group": group, "dilations": (1, 1)}
    if clamp is not None:
        attrs["qmin"], attrs["qmax"] = clamp
    spec = TensorSpec("x", x.shape, x_dtype)
    inputs = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"]
    op = make_op("conv", "QLinearConv", inputs, ["y"], attrs, {"x": spec}, weights)
    onnx_attrs = {key: list(value) if isinstance(value, tuple) else value for key, value in attrs.items()
                  if key not in ("qmin", "qmax")}
    node = helper.make_node("QLinearConv", inputs, ["y"], **onnx_attrs)
    elem = TensorProto.UINT8 if x_dtype == "uint8" else TensorProto.INT8
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", elem, list(x.shape))],
                              [helper.make_tensor_value_info("y", elem, None)],
                              [numpy_helper.from_array(np.asarray(value), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return Graph.build([op], [spec], ["y"], name="conv"), x, model.SerializeToString()


CASES = [
    # cin, cout, (h, w), k, stride, pad: what it exercises
    (32, 48, (7, 7), 3, 1, 1),  # 7-pixel rows: tiles span rows, 49 = 8 tiles + 1 pixel; 48 channels (masked)
    (16, 20, (13, 13), 3, 1, 1),  # 13-pixel rows, 20 channels (32-column variant, masked)
    (8, 100, (14, 14), 3, 2, 1),  # stride 2 to 7x7, 100 channels: a full and a partial 64-column panel
    (4, 17, (5, 5), 3, 1, 1),  # 25 pixels, 17 channels
    (12, 64, (1, 1), 3, 1, 1),  # one pixel: one tile, five rows read from pixel 0 and not stored
    (8, 16, (9, 6), 3, 1, 0),  # unpadded, C % 4 == 0: read in place from the input, 4x7 rows
    (16, 40, (10, 10), 1, 2, 0),  # 1x1 / 2 in place
    (1, 32, (26, 26), 3, 1, 1),  # one channel (the seed CNN): each tap row read as 4 bytes
    (3, 24, (23, 23), 7, 2, 3),  # RGB stem 7x7 / 2: 21-byte tap rows read as 24
    (3, 64, (17, 17), 3, 2, 0),  # RGB 3x3 / 2 unpadded (squeezenet's stem): copied with slack
    (2, 8, (6, 9), 1, 1, 0),  # 1x1 on 2 channels (not a pointwise GEMM: C % 4 != 0)
    (5, 33, (11, 8), 5, 1, 2),  # 5 channels, 5x5: 25-byte tap rows read as 28, 33 channels
]
DTYPES = [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8")]


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("dtypes", DTYPES, ids=["-".join(d) for d in DTYPES])
def test_flat_tiles_equal_reference_and_onnxruntime(dev: CpuDevice, case: tuple, dtypes: tuple[str, str]) -> None:
    graph, x, model = conv_case(sum(case[:2]) + len(dtypes[0]) + len(dtypes[1]), *dtypes, *case)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    if dtypes != ("int8", "uint8"):  # onnxruntime has no int8 x uint8 QLinearConv
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    assert np.unique(got).size > 8  # not saturated to a constant: the test can see a wrong sum


@pytest.mark.parametrize("x_dtype, clamp", [("uint8", (100, 255)), ("int8", (-20, 90))])
def test_flat_tiles_fused_clamp(dev: CpuDevice, x_dtype: str, clamp: tuple[int, int]) -> None:
    graph, x, _ = conv_case(7, x_dtype, "int8", 24, 40, (7, 9), 3, 1, 1, clamp=clamp)
    got = run_on_device(graph, dev, {"x": x})["y"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    assert got.min() == clamp[0] and got.max() == clamp[1]


GROUPED = [
    # cin, cout, (h, w), k, stride, pad, group: what it exercises
    (32, 32, (9, 9), 3, 1, 1, 8),  # ResNeXt/RegNet-like: 4 channels a group
    (24, 60, (7, 11), 1, 1, 0, 3),  # ShuffleNet v1's grouped 1x1, 20 outputs a group, in place
    (40, 16, (12, 12), 3, 2, 1, 8),  # 2 outputs a group, stride 2
    (12, 96, (6, 6), 3, 1, 0, 2),  # 48 outputs a group, unpadded
    (64, 64, (5, 5), 3, 1, 1, 32),  # 2 channels a group
    (64, 64, (7, 7), 3, 1, 1, 4),  # RegNet-like: 16 channels a group
    (48, 96, (9, 9), 3, 2, 1, 3),  # 16 in, 32 out a group, stride 2
    (60, 60, (6, 8), 5, 1, 2, 4),  # 15 a group (K rows rounded up to 4), 5x5
]


@pytest.mark.parametrize("case", GROUPED, ids=[str(c) for c in GROUPED])
@pytest.mark.parametrize("dtypes", DTYPES[:3], ids=["-".join(d) for d in DTYPES[:3]])
@pytest.mark.parametrize("dense", ["1", "0", "auto"])
def test_grouped_convs_equal_reference_and_onnxruntime(dev: CpuDevice, case: tuple, dtypes: tuple[str, str], dense: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A grouped conv runs as one dense conv over block-diagonal weights ("1") or as every
    group's implicit GEMM in one job over per-group images ("0"; auto: whichever
    steps_conv._dense_pays estimates less work): all bit for bit."""
    from hetero.backends.cpu import steps_conv
    from hetero.cost.kernel_estimate import classify_ops

    monkeypatch.setattr(steps_conv, "GROUPED_DENSE", dense)
    *shape, group = case
    graph, x, model = conv_case(case[0] + case[1] + group + len(dtypes[0]), *dtypes, *shape, group=group)
    device = CpuDevice(INFO)
    try:
        got = run_on_device(graph, device, {"x": x})["y"]
        kernel = classify_ops(device, graph)["conv"]
    finally:
        device.close()
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    assert np.unique(got).size > 8
    if dense == "1":
        assert "dense_groups" in kernel, kernel
    elif dense == "0":
        assert "_grouped_tiles" in kernel, kernel
    else:
        assert ("_grouped_tiles" in kernel) != ("dense_groups" in kernel), kernel


def test_grouped_conv_with_weight_zero_points_keeps_the_grouped_path(dev: CpuDevice) -> None:
    """Nonzero int8 weight zero points need row sums, which the implicit GEMM has not: the
    group-by-group GEMM runs, still exact."""
    from hetero.cost.kernel_estimate import classify_ops

    graph, x, model = conv_case(5, "uint8", "int8", 32, 32, (8, 8), 3, 1, 1, group=8, zw_shift=3)
    got = run_on_device(graph, dev, {"x": x})["y"]
    assert "_implicit_conv" not in classify_ops(dev, graph)["conv"]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


def test_the_plan_uses_flat_tiles(dev: CpuDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 7-pixel-row convolution (im2row before flat tiles) runs conv_tiles once, over 49 pixels
    (bound as a native job when the plan is built, or through run_conv_tiles)."""
    calls: list[int] = []
    real, real_bind = gemm_fused.run_conv_tiles, gemm_fused.bind_conv_tiles

    def spy(img, table, pixels, *rest, **kw):  # type: ignore[no-untyped-def]
        calls.append(pixels)
        return real(img, table, pixels, *rest, **kw)

    def spy_bind(table, pixels, *rest, **kw):  # type: ignore[no-untyped-def]
        job = real_bind(table, pixels, *rest, **kw)
        if job is not None:
            job_run = job.run

            def run(*args, **kwargs):  # type: ignore[no-untyped-def]
                ran = job_run(*args, **kwargs)
                if ran:
                    calls.append(pixels)
                return ran

            return type("Spied", (), {"run": staticmethod(run)})()
        return job

    monkeypatch.setattr(gemm_fused, "run_conv_tiles", spy)
    monkeypatch.setattr(gemm_fused, "bind_conv_tiles", spy_bind)
    graph, x, _ = conv_case(3, "uint8", "int8", 32, 48, (7, 7), 3, 1, 1)
    device = CpuDevice(INFO)
    try:
        got = run_on_device(graph, device, {"x": x})["y"]
    finally:
        device.close()
    assert calls == [49]
    np.testing.assert_array_equal(got, run_reference(graph, {"x": x})["y"])


def test_pixel_table() -> None:
    table = gemm_fused.pixel_table(2, 5, 1000, 8)
    assert table.shape == (12,)  # 10 pixels padded to two tiles of MR = 6
    assert table[:10].tolist() == [0, 8, 16, 24, 32, 1000, 1008, 1016, 1024, 1032]
    assert table[10:].tolist() == [0, 0]



def _direct_conv_args(seed: int) -> tuple[tuple, int, int, np.ndarray]:
    """run_conv_tiles' arguments for a 3x3 64 -> 80 conv over an unpadded 20x20 NHWC image (uint8
    activations, int8 weights with zero point 0: no row sums), the column panels per work item
    and the number of work items run_conv_tiles makes with 2 threads, and the output array."""
    rng = np.random.default_rng(seed)
    c, m, hw, k = 64, 80, 20, 3
    ho = hw - k + 1
    img = rng.integers(0, 256, hw * hw * c, dtype=np.uint8)
    w = rng.integers(-128, 128, (k * k * c, m)).astype(np.int8)
    packed = cpu_gemm.pack_weights(np.ascontiguousarray(w))
    npan = packed.data.shape[0]
    width = npan * cpu_gemm.NR
    comp = gemm_fused.pad_panels(rng.integers(-9000, 9000, m).astype(np.int32), width)
    mult = gemm_fused.pad_panels(rng.uniform(1e-4, 1e-3, m).astype(np.float32), width)
    zeros = np.zeros(width, np.int32)
    table = gemm_fused.pixel_table(ho, ho, hw * c, c)
    out = np.zeros((ho * ho, m), np.uint8)
    args = (img, table, ho * ho, k * c // 4, k, hw * c, False, packed.data, m, np.zeros(cpu_gemm.MR, np.int32), zeros,
            comp, zeros, mult, (np.int32(3), np.int32(0), np.int32(255)), out)
    blocks = -(-(-(-ho * ho // cpu_gemm.MR)) // cpu_gemm.MB)
    ng = -(-npan // min(npan, -(-32 // blocks)))
    return args, ng, blocks * -(-npan // ng), out


def _one_thread(args: tuple) -> np.ndarray:
    import numba

    numba.set_num_threads(1)
    try:
        gemm_fused.run_conv_tiles(*args)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return args[-1].copy()


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_helper_threads_give_the_one_thread_result() -> None:
    """With 2 threads the work loop is shared with helper threads (whichever wake in time):
    every run equals the 1-thread run bit for bit."""
    import numba

    args, _, _, out = _direct_conv_args(3)
    want = _one_thread(args)
    numba.set_num_threads(2)
    try:
        for _ in range(30):
            out[:] = 0
            gemm_fused.run_conv_tiles(*args)
            assert np.array_equal(out, want)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_the_calling_thread_never_waits_for_a_busy_helper() -> None:
    """A pool whose only helper is stuck in another job: share() still finishes every item on the
    calling thread (bit-exact), and the helper, once free, finds nothing left to run."""
    import threading

    from hetero.backends.cpu import helpers

    args, ng, items, out = _direct_conv_args(4)
    pool = helpers.HelperPool()
    release, busy = threading.Event(), threading.Event()

    def stuck() -> None:
        busy.set()
        release.wait(10)

    pool.offer(stuck, 1)
    assert busy.wait(10)
    counter = np.zeros(2, np.int64)
    part_args = (*args[:14], *args[14], out.view(np.uint8), counter, cpu_gemm.MB, ng)
    helpers.share(gemm_fused.conv_tiles_part, part_args, 2, items, counter, pool)
    assert counter[1] == items and counter[0] >= items
    done = out.copy()
    release.set()
    assert np.array_equal(done, _one_thread(_direct_conv_args(4)[0]))
    assert pool._job is None  # withdrawn: the freed helper goes back to sleep
