"""Native helper threads (hetero/backends/cpu/native.py, native_jobs.py): their protocol and results.

A conv and a QGemm at two threads must equal the numpy int8 reference on every run while the
native helpers take part (their item count grows); a helper asleep on its futex must be woken by
the next job (with the futex timeout set far beyond the test, only the wake-up can bring it);
a job's counter claims nothing for another job's tag; a pool stops and joins its threads; two
Python threads running plans at once (one holds the pool, the other falls back to the Python
helpers) both get exact results; with HETERO_CPU_NATIVE=0 nothing is posted natively.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hetero.backends.cpu import native, native_jobs
from hetero.backends.cpu.device import CpuDevice
from hetero.backends.discovery import DeviceInfo
from hetero.exec.executor import run_on_device, run_reference
from hetero.ir.graph import Graph, TensorSpec, make_op

INFO = DeviceInfo("cpu", "cpu", "test cpu", "numba", 2, 0)

pytestmark = [
    pytest.mark.skipif(not native.ENABLED, reason="native helpers run on Linux x86-64 only (HETERO_CPU_NATIVE unset)"),
    pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="one numba thread here: no helper ever runs"),
]


def conv_gemm_graph(seed: int = 0) -> tuple[Graph, np.ndarray]:
    """uint8 input 1x64x28x28 -> 3x3 QLinearConv (64 -> 96, implicit GEMM) -> Flatten -> QGemm (-> 160)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, 64, 28, 28)).astype(np.uint8)
    conv_w = {
        "sx": np.float32(0.02), "zx": np.uint8(120), "w": rng.integers(-127, 128, (96, 64, 3, 3)).astype(np.int8),
        "sw": rng.uniform(0.001, 0.004, 96).astype(np.float32), "zw": np.zeros(96, np.int8), "sy": np.float32(0.5),
        "zy": np.uint8(100), "b": rng.integers(-3000, 3000, 96).astype(np.int32),
    }
    conv = make_op("conv", "QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["c"],
                   {"kernel_shape": (3, 3), "strides": (1, 1), "pads": (1, 1, 1, 1), "group": 1, "dilations": (1, 1)},
                   {"x": TensorSpec("x", x.shape, "uint8")}, conv_w)
    flat = make_op("flat", "Flatten", ["c"], ["f"], {"axis": 1}, {"c": TensorSpec("c", (1, 96, 28, 28), "uint8")}, {})
    k = 96 * 28 * 28
    gemm_w = {
        "sa": np.float32(0.5), "za": np.uint8(100), "w": rng.integers(-127, 128, (160, k)).astype(np.int8),
        "sw": rng.uniform(1e-4, 3e-4, 160).astype(np.float32), "zw": np.zeros(160, np.int8),
        "bias": rng.integers(-1000, 1000, 160).astype(np.int32), "sy": np.float32(0.3), "zy": np.uint8(128),
    }
    gemm = make_op("gemm", "QGemm", ["f", "sa", "za", "w", "sw", "zw", "bias", "sy", "zy"], ["y"], {"transB": 1},
                   {"f": TensorSpec("f", (1, k), "uint8")}, gemm_w)
    graph = Graph.build([conv, flat, gemm], [TensorSpec("x", x.shape, "uint8")], ["y"], name="conv-gemm")
    return graph, x


def on_all_threads(device: CpuDevice, graph: Graph) -> None:
    """Settle every op of ``graph`` on the device's threads, as if its trials had chosen that (a
    noisy machine could otherwise settle the conv on one thread, and no job would be posted)."""
    for op in graph.ops_in_order():
        device._thread_trials[id(op)] = (op, {"chosen": 0, "warmed": True})


@pytest.fixture(scope="module")
def dev() -> CpuDevice:
    device = CpuDevice(INFO, threads=2)
    yield device
    device.close()


def test_two_threads_with_native_helpers_equal_the_reference(dev: CpuDevice) -> None:
    graph, x = conv_gemm_graph()
    want = run_reference(graph, {"x": x})["y"]
    assert np.unique(want).size > 8  # not saturated
    on_all_threads(dev, graph)
    run_on_device(graph, dev, {"x": x})
    pool = native_jobs.pool()
    before = pool.helped
    for _ in range(30):
        np.testing.assert_array_equal(run_on_device(graph, dev, {"x": x})["y"], want)
    assert pool.threads >= 1
    assert pool.helped > before, "the native helper claimed no item in 30 two-thread runs"


def test_a_sleeping_helper_is_woken_by_the_next_job(dev: CpuDevice) -> None:
    graph, x = conv_gemm_graph(1)
    want = run_reference(graph, {"x": x})["y"]
    on_all_threads(dev, graph)
    run_on_device(graph, dev, {"x": x})
    pool = native_jobs.pool()
    saved = int(pool.ctl[native.TS])
    pool.ctl[native.TS] = 3600  # a sleeping helper's futex wait now times out after an hour
    try:
        woken = 0
        for _ in range(10):
            deadline = time.monotonic() + 2.0
            while pool.ctl[native.SLEEPERS] < pool.threads and time.monotonic() < deadline:
                time.sleep(0.005)
            assert pool.ctl[native.SLEEPERS] == pool.threads, "helpers did not go to sleep after SPIN_US"
            before = pool.helped
            np.testing.assert_array_equal(run_on_device(graph, dev, {"x": x})["y"], want)
            woken += pool.helped > before
            if woken >= 2:
                break
        assert woken >= 2, "a job posted to sleeping helpers was never joined"
    finally:
        pool.ctl[native.TS] = saved
        pool.wake()


def test_a_counter_claims_nothing_for_another_job() -> None:
    counter = np.zeros(2, np.int64)
    counter[0] = 7 << 32  # job 7, nothing claimed yet
    addr = counter.ctypes.data
    assert native.claim(addr, 6, 10) == -1 and counter[0] == 7 << 32  # an older job's helper: untouched
    assert [native.claim(addr, 7, 3) for _ in range(4)] == [0, 1, 2, -1]
    assert counter[0] >> 32 == 7
    assert native.claim(addr, 6 | native.FROM_BACK, 10) == -1  # nor from the back


@settings(max_examples=40, deadline=None)
@given(nwork=st.one_of(st.integers(0, 300), st.just(65535), st.just(65536)), seed=st.integers(0, 2**32 - 1))
def test_claims_from_both_ends_take_every_item_once(nwork: int, seed: int) -> None:
    """The caller claims from the first item up, a native helper (FROM_BACK) from the last down;
    whatever their interleaving, each item is claimed exactly once (at 65536 items and above all
    claim from the front)."""
    counter = np.zeros(2, np.int64)
    counter[0] = 5 << 32
    addr = counter.ctypes.data
    rng = np.random.default_rng(seed)
    got: list[int] = []
    backs = 0
    for back in rng.random(nwork + 1) < 0.5:
        item = native.claim(addr, 5 | (native.FROM_BACK if back else 0), nwork)
        if item < 0:
            break
        got.append(item)
        if back and nwork < 65536:
            assert item == nwork - 1 - backs  # the back end, in order
            backs += 1
    assert sorted(got) == list(range(nwork))
    assert native.claim(addr, 5, nwork) == -1 and native.claim(addr, 5 | native.FROM_BACK, nwork) == -1


def test_a_pool_stops_and_joins_its_threads() -> None:
    pool = native.NativePool(native_jobs.helper_main)
    pool.ensure(2)
    assert pool.threads == 2
    time.sleep(0.01)
    pool.stop()
    assert not any(thread.is_alive() for thread in pool._threads)


def test_two_python_threads_at_once_both_exact() -> None:
    """One thread's jobs hold the native pool; the other's find it taken and use the Python helpers."""
    graph, x = conv_gemm_graph(2)
    want = run_reference(graph, {"x": x})["y"]
    devices = [CpuDevice(INFO, threads=2) for _ in range(2)]
    for device in devices:
        on_all_threads(device, graph)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(device: CpuDevice) -> None:
        try:
            start.wait()
            for _ in range(15):
                np.testing.assert_array_equal(run_on_device(graph, device, {"x": x})["y"], want)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for device in devices:
        device.close()
    assert not errors, errors


def test_native_helpers_off_by_environment() -> None:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; import test_cpu_native as t; "
            "from hetero.backends.cpu import native, native_jobs; "
            "graph, x = t.conv_gemm_graph(3); dev = t.CpuDevice(t.INFO, threads=2); "
            "got = t.run_on_device(graph, dev, {'x': x})['y']; "
            "print(native.ENABLED, native_jobs.pool() is None, np.array_equal(got, t.run_reference(graph, {'x': x})['y']))")
    env = dict(os.environ, HETERO_CPU_NATIVE="0")
    done = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "True"]
