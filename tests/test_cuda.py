"""CUDA backend at run time: the OpenCL suite's kernel checks on a CudaDevice, plus the cuBLAS
and dp4a int8 paths, CUDA-event timing and whole graphs. Skipped without cupy and a GPU.

The kernel checks are the functions of test_opencl.py, collected here again with this module's
``dev`` fixture (int8 bit for bit against the numpy reference, float32 within 1e-4).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from hetero.backends.discovery import discover

_found, _absent = discover()
CUDA = [d for d in _found if d.kind == "cuda"]
WHY = next((a.reason for a in _absent if a.kind == "cuda"), "no CUDA device")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason=WHY)]

import hetero.backends.cuda as cuda_backend  # noqa: E402
from test_opencl import (  # noqa: E402,F401  (collected again with the CUDA dev fixture)
    build,
    check,
    qtensor,
    test_average_pool,
    test_binary,
    test_cast,
    test_conv,
    test_data_movement,
    test_every_registered_op_has_a_kernel,
    test_gemm,
    test_large_gap_and_conv,
    test_matmul,
    test_max_pool,
    test_qgemm,
    test_qlinear_add,
    test_qlinear_average_pool,
    test_qlinear_concat,
    test_qlinear_conv,
    test_qlinear_global_average_pool,
    test_qlinear_matmul,
    test_quantize_dequantize,
    test_reductions,
    test_unary,
    test_whole_graph,
    zero_point,
)


@pytest.fixture(scope="module")
def dev() -> Iterator[cuda_backend.CudaDevice]:
    device = cuda_backend.CudaDevice(CUDA[0])
    yield device
    device.close()


def _qgemm_case(m: int, k: int, n: int, seed: int, ad: str = "uint8", bd: str = "int8"):
    rng = np.random.default_rng(seed)
    weights = {"sa": np.float32(0.03), "za": zero_point(rng, ad), "b": qtensor(rng, (n, k), bd),
               "sb": rng.uniform(0.002, 0.05, n).astype(np.float32), "zb": zero_point(rng, bd, n),
               "c": rng.integers(-20000, 20000, n).astype(np.int32), "sy": np.float32(0.4 * np.sqrt(k)),
               "zy": zero_point(rng, "uint8")}
    return build("QGemm", {"a": qtensor(rng, (m, k), ad)}, weights, ["a", "sa", "za", "b", "sb", "zb", "c", "sy", "zy"],
                 transB=1)


@pytest.mark.parametrize("use_cublas", [True, False])
@pytest.mark.parametrize("dtypes", [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8")])
def test_int8_gemm_library_and_dp4a(dev, monkeypatch: pytest.MonkeyPatch, use_cublas: bool, dtypes) -> None:
    monkeypatch.setattr(cuda_backend, "CUBLAS_MIN_MACS", 0)
    monkeypatch.setattr(dev, "cublas", use_cublas)
    for m, k, n in ((64, 256, 128), (128, 1000, 64), (36, 77, 20)):
        check(dev, *_qgemm_case(m, k, n, seed=m + k + n, ad=dtypes[0], bd=dtypes[1]))


@pytest.mark.parametrize("use_cublas", [True, False])
def test_qconv_library_and_dp4a(dev, monkeypatch: pytest.MonkeyPatch, use_cublas: bool) -> None:
    monkeypatch.setattr(cuda_backend, "CUBLAS_MIN_MACS", 0)
    monkeypatch.setattr(dev, "cublas", use_cublas)
    rng = np.random.default_rng(11)
    weights = {"sx": np.float32(0.02), "zx": np.uint8(131), "w": qtensor(rng, (64, 32, 3, 3), "int8"),
               "sw": rng.uniform(0.002, 0.02, 64).astype(np.float32), "zw": np.zeros(64, np.int8),
               "sy": np.float32(0.5), "zy": np.uint8(7), "b": rng.integers(-3000, 3000, 64).astype(np.int32)}
    op, values = build("QLinearConv", {"x": qtensor(rng, (1, 32, 20, 20), "uint8")}, weights,
                       ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], pads=(1, 1, 1, 1))
    check(dev, op, values)


def test_timed_run_uses_cuda_events(dev) -> None:
    op, values = _qgemm_case(256, 512, 256, seed=3)
    outputs, seconds = dev.timed_run(op, [dev.upload(v) for v in values])
    assert 0 < seconds < 5
    assert dev.download(outputs[0]).shape == (256, 256)
