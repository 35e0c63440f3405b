"""Plan steps whose native jobs are bound when the plan is built (``native_jobs.Bound``): a run
patches in its buffers' addresses and posts the prepared words. The same bits as the kernels'
own entries and the reference, at one thread and two, batch 1 and 2, and the fallbacks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hetero.backends import open_device
from hetero.backends.cpu import helpers, native
from hetero.backends.cpu import kernels_dwv as dv
from hetero.exec.executor import run_reference
from hetero.ir.onnx_import import import_onnx
from hetero.ir.synth import OPSET, CnnBuilder
from hetero.quant.lowering import lower_qdq
from hetero.quant.qdq import quantize_model

pytestmark = pytest.mark.skipif(not native.ENABLED, reason="native helpers are off here (HETERO_CPU_NATIVE=0 or not Linux x86-64)")


def bound_cnn(batch: int) -> onnx.ModelProto:
    """Every bound kind: the input QuantizeLinear, a padded 3x3 conv, max pool, 1x1 convs read in
    place, depthwise 3x3 (stride 1 and 2), a residual QLinearAdd, a grouped conv, a classifier QGemm."""
    b = CnnBuilder(5)
    x = b.conv("x", 3, 24, 3)  # padded: pad_image, then the bound implicit GEMM
    x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    y = b.conv(x, 24, 48, 1)  # in place
    y = b.conv(y, 48, 48, 3, group=48)  # depthwise
    y = b.conv(y, 48, 24, 1, relu=False)
    x = b.node("Add", [x, y])
    x = b.conv(x, 24, 48, 3, group=3)  # grouped: every group's implicit GEMM in one job
    x = b.conv(x, 48, 40, 3, stride=2)  # padded, strided
    x = b.conv(x, 40, 40, 3, stride=2, group=40)  # depthwise stride 2
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    w = (b.rng.standard_normal((40, 10)) / np.sqrt(40)).astype(np.float32)
    logits = b.node("Gemm", [x, b.const(w), b.const(np.zeros(10, np.float32))])
    graph = helper.make_graph(b.nodes, "bound", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 20, 20])],
                              [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, 10])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module", params=[(1, "uint8"), (1, "int8"), (2, "uint8")], ids=["n1-u8", "n1-s8", "n2-u8"])
def quantized(request: pytest.FixtureRequest):
    batch, dtype = request.param
    graph = import_onnx(bound_cnn(batch))
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((batch, 3, 20, 20)).astype(np.float32)} for _ in range(4)]
    return batch, lower_qdq(import_onnx(quantize_model(graph, calibration, activation_dtype=dtype)))


def _runs(graph, threads: int, bind: bool, monkeypatch: pytest.MonkeyPatch, feeds: list[dict]) -> list[np.ndarray]:
    monkeypatch.setattr(native, "BIND", bind)
    device = open_device("cpu", threads=threads)
    try:
        plan = device.plan_for(graph)
        name = graph.outputs[0].name
        for _ in range(8):  # through the thread-count learning: later runs use the settled counts
            plan.run(feeds[0])
        return [plan.run(f)[name] for f in feeds]
    finally:
        device.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_bound_plans_give_the_unbound_and_reference_bits(quantized, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from hetero.backends.cpu import native_jobs

    batch, graph = quantized
    kinds: list[int] = []
    real_run = native_jobs.Bound.run

    def counted(self, x, out, x2=None):
        kinds.append(self.kind & ~1 if self.kind >= native_jobs.KIND_DW3_ROWS else self.kind)
        return real_run(self, x, out, x2)

    monkeypatch.setattr(native_jobs.Bound, "run", counted)
    rng = np.random.default_rng(threads)
    feeds = [{"x": rng.standard_normal((batch, 3, 20, 20)).astype(np.float32)} for _ in range(3)]
    bound = _runs(graph, threads, True, monkeypatch, feeds)
    used = set(kinds)
    unbound = _runs(graph, threads, False, monkeypatch, feeds)
    for got, plain, f in zip(bound, unbound, feeds):
        np.testing.assert_array_equal(got, plain)
        np.testing.assert_array_equal(got, run_reference(graph, f)[graph.outputs[0].name])
    expected = {native_jobs.KIND_CONV, native_jobs.KIND_MAX_POOL, native_jobs.KIND_QADD, native_jobs.KIND_QUANTIZE,
                native_jobs.KIND_GROUPED}
    if batch == 1:
        expected |= {native_jobs.KIND_DWV, native_jobs.KIND_GEMM}
    assert expected <= used, sorted(used)


@pytest.mark.parametrize("hw,c,stride", [(7, 16, 1), (14, 40, 2), (9, 24, 1), (5, 160, 2)])
def test_a_one_thread_bound_job_keeps_its_counter(hw: int, c: int, stride: int) -> None:
    """With one worker the job claims its items from a counter the compiled call allocates; the
    depthwise work loop allocates its own buffers, which must not land on that counter."""
    from hetero.backends.cpu import native_jobs

    rng = np.random.default_rng(hw * c)
    taps = rng.integers(-30, 30, (3, 3, c))
    packed = dv.pack(taps)
    c16 = -(-c // 16) * 16
    zrow = np.full(hw * c + 16, 9, np.uint8)
    bias = rng.integers(-500, 500, c16).astype(np.int32)
    mult = np.full(c16, 0.004, np.float32)
    ho = (hw + 2 - 3) // stride + 1
    x = rng.integers(0, 256, (hw, hw, c)).astype(np.uint8)
    args = (zrow, packed, 3, False, stride, stride, 1, 1, 1, 1, bias, mult, np.float32(5), np.float32(0), np.float32(255))
    want = np.empty((ho, ho, c), np.uint8)
    dv.dwv_part(x, *args, want, np.zeros(2, np.int64))
    job = native_jobs.bind_part(dv.dwv_part, (np.empty_like(x), *args, np.empty_like(want)), ho, 0, 23)
    assert job is not None
    previous = helpers.thread_count()
    helpers.set_thread_count(1)
    try:
        for _ in range(3):
            got = np.full_like(want, 77)
            assert job.run(x, got)
            np.testing.assert_array_equal(got, want)
    finally:
        helpers.set_thread_count(previous)


def test_a_busy_pool_falls_back_to_the_kernels_entries(quantized, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread holding the native pool: a two-worker bound job runs nothing and the step
    takes its kernel's own path (helpers' threads), with the same bits."""
    from hetero.backends.cpu import native_jobs

    batch, graph = quantized
    feeds = [{"x": np.random.default_rng(7).standard_normal((batch, 3, 20, 20)).astype(np.float32)}]
    want = _runs(graph, 2, False, monkeypatch, feeds)[0]
    pool = native_jobs.pool()
    assert pool is not None
    refused: list[bool] = []
    real_run = native_jobs.Bound.run

    def watched(self, x, out, x2=None):
        ran = real_run(self, x, out, x2)
        refused.append(not ran)
        return ran

    monkeypatch.setattr(native_jobs.Bound, "run", watched)
    assert pool.lock.acquire(blocking=False)
    try:
        got = _runs(graph, 2, True, monkeypatch, feeds)[0]
    finally:
        pool.lock.release()
    np.testing.assert_array_equal(got, want)
    assert any(refused)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_tails_run_bound_with_the_same_bits(dtype: str, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused float tails (table lookups, squeeze-and-excitation gates whose gate is an
    activation) run as bound jobs too."""
    from test_cpu_tails import tails_cnn

    from hetero.backends.cpu import native_jobs

    graph = import_onnx(tails_cnn())
    rng = np.random.default_rng(3)
    qdq = quantize_model(graph, [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(4)],
                         activation_dtype=dtype)
    graph = lower_qdq(import_onnx(qdq))
    kinds: list[int] = []
    real_run = native_jobs.Bound.run

    def counted(self, x, out, x2=None):
        kinds.append(self.kind & ~1 if self.kind >= native_jobs.KIND_DW3_ROWS else self.kind)
        return real_run(self, x, out, x2)

    monkeypatch.setattr(native_jobs.Bound, "run", counted)
    feeds = [{"x": rng.standard_normal((1, 3, 24, 24)).astype(np.float32)} for _ in range(2)]
    bound = _runs(graph, threads, True, monkeypatch, feeds)
    assert {native_jobs.KIND_LOOKUP, native_jobs.KIND_GATED} <= set(kinds), sorted(set(kinds))
    for got, plain, f in zip(bound, _runs(graph, threads, False, monkeypatch, feeds), feeds):
        np.testing.assert_array_equal(got, plain)
        np.testing.assert_array_equal(got, run_reference(graph, f)[graph.outputs[0].name])


def test_a_settled_plan_runs_its_fast_loop_with_the_same_bits(quantized) -> None:
    """Once every thread count is settled a run without hooks takes ``_run_fast``: the same
    outputs as a run with a timing hook (the general loop), the caller's thread count restored."""
    batch, graph = quantized
    device = open_device("cpu", threads=2)
    try:
        plan = device.plan_for(graph)
        feeds = {"x": np.random.default_rng(11).standard_normal((batch, 3, 20, 20)).astype(np.float32)}
        runs = 0
        while device.learning(graph) and runs < 200:
            plan.run(feeds)
            runs += 1
        assert not device.learning(graph)
        before = helpers.thread_count()
        fast = plan.run(feeds)
        assert plan._fast is not None and helpers.thread_count() == before
        spans: list = []
        general = plan.run(feeds, spans=spans)
        assert len(spans) == sum(1 for i in plan.instrs if i.step is not None)
        name = graph.outputs[0].name
        np.testing.assert_array_equal(fast[name], general[name])
        np.testing.assert_array_equal(fast[name], run_reference(graph, feeds)[name])
    finally:
        device.close()
