"""The CPU-style int8 kernels of kernels/qcpu.cl (OpenCL CPU devices such as PoCL) at the edges
the small hypothesis cases of test_opencl.py do not reach: float32 partial sums over more than
one chunk at the largest magnitudes, output-channel and pixel remainders, wide and thin grouped
convolutions, large windows and strides; and the kernel_style option. Bit for bit against the
numpy reference on every usable OpenCL device (the CPU variants are forced where a device would
pick the GPU ones)."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest

from hetero.backends.discovery import DeviceInfo, discover
from hetero.backends.kernels.qcpu import CHUNK_PRODUCTS
from hetero.backends.opencl import OpenCLDevice
from hetero.backends.reference import reference_op
from hetero.errors import DeviceError
from hetero.ir.graph import Op, TensorSpec, make_op

OPENCL, _ABSENT = discover(["opencl"])
pytestmark = pytest.mark.skipif(not OPENCL, reason="no usable OpenCL device: " + "; ".join(a.reason for a in _ABSENT))


@pytest.fixture(scope="module", params=OPENCL or [None], ids=[d.name for d in OPENCL] or ["none"])
def cl_info(request: pytest.FixtureRequest) -> DeviceInfo:
    return request.param


@pytest.fixture(scope="module")
def device(cl_info: DeviceInfo) -> Iterator[OpenCLDevice]:
    opened = OpenCLDevice(cl_info, kernel_style="cpu")
    yield opened
    opened.close()


@pytest.fixture(params=["vnni", "float32"])
def dev(device: OpenCLDevice, request: pytest.FixtureRequest) -> Iterator[OpenCLDevice]:
    """The device on the VNNI kernels (where it has them) or on the float32 CPU kernels."""
    if request.param == "vnni" and not device.vnni_capable:
        pytest.skip(f"{device.name} has no AVX-512 VNNI kernels (not PoCL on a CPU with avx512_vnni)")
    device.vnni = request.param == "vnni"
    yield device
    device.vnni = device.vnni_capable


def run_exact(dev: OpenCLDevice, op: Op, x: np.ndarray) -> None:
    got = dev.download(dev.run(op, [dev.upload(x)])[0])
    want = reference_op(op, [x])[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = np.flatnonzero(got.ravel() != want.ravel())
    assert bad.size == 0, f"{op.name}: {bad.size} of {want.size} differ, first {got.ravel()[bad[0]]} != {want.ravel()[bad[0]]}"


def qconv(x: np.ndarray, w: np.ndarray, zx: int, zw: np.ndarray, sw: np.ndarray, bias: np.ndarray | None,
          scales: tuple[float, float] = (0.02, 0.5), **attrs: Any) -> Op:
    weights = {"sx": np.float32(scales[0]), "zx": np.asarray(zx, x.dtype), "w": w, "sw": sw, "zw": zw,
               "sy": np.float32(scales[1]), "zy": np.asarray(3, np.uint8)}
    names = ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"]
    if bias is not None:
        weights["b"] = bias
        names.append("b")
    return make_op("conv", "QLinearConv", names, ["y"], attrs, {"x": TensorSpec("x", x.shape, str(x.dtype))},
                   {k: np.asarray(v) for k, v in weights.items()})


@pytest.mark.parametrize("m", [17, 64])
def test_chunked_sums_at_the_largest_magnitudes(dev: OpenCLDevice, m: int) -> None:
    """|x - zx| = |w - zw| = 255 in every product and K = 40 x 3 x 3 = 360 > CHUNK_PRODUCTS: the
    int32 accumulator of several float32 chunks is exact. Multiplier 1 and a bias of minus the
    interior accumulator put every interior output in range, so an accumulator off by one shows.
    17 output channels (a block of 16 and a remainder of 1) or 64 (blocks of 32), 81 pixels
    (blocks of 8 or 6 and a remainder)."""
    c = 40
    k = c * 9
    assert k > CHUNK_PRODUCTS
    x = np.full((1, c, 9, 9), 255, np.uint8)
    sign = np.where(np.arange(m) % 2 == 0, -1, 1)
    w = np.where(sign < 0, -128, 127).astype(np.int8)[:, None, None, None] * np.ones((1, c, 3, 3), np.int8)
    zw = np.where(sign < 0, 127, -128).astype(np.int8)  # w - zw = 255 * sign
    interior = sign * k * 255 * 255
    offsets = np.arange(m) * 7 % 250
    bias = (-interior + offsets).astype(np.int32)
    op = qconv(x, w, 0, zw, np.ones(m, np.float32), bias, scales=(1.0, 1.0), pads=(1, 1, 1, 1))
    run_exact(dev, op, x)
    y = dev.download(dev.run(op, [dev.upload(x)])[0])
    assert np.array_equal(y[0, :, 1:-1, 1:-1], np.broadcast_to((3 + offsets)[:, None, None], (m, 7, 7)))


@pytest.mark.parametrize("case", [
    dict(c=64, m=33, hw=(13, 11), k=(3, 3), strides=(1, 1), group=1),  # 3 channel blocks, pixel tail
    dict(c=3, m=24, hw=(30, 30), k=(7, 7), strides=(2, 2), group=1),  # a stem: large window, stride 2
    dict(c=48, m=96, hw=(7, 9), k=(3, 3), strides=(1, 1), group=1),  # blocks of 32 channels, pixel tail
    dict(c=20, m=128, hw=(6, 6), k=(3, 3), strides=(2, 2), group=2),  # grouped, 64 a group (blocks of 32)
    dict(c=300, m=20, hw=(5, 5), k=(1, 1), strides=(1, 1), group=1),  # pointwise, K over one chunk
    dict(c=24, m=18, hw=(9, 9), k=(3, 3), strides=(2, 1), group=2),  # grouped, 9 channels a group (wide)
    dict(c=12, m=12, hw=(15, 15), k=(5, 5), strides=(2, 2), group=12),  # depthwise 5x5 (thin)
    dict(c=8, m=16, hw=(10, 7), k=(3, 3), strides=(1, 1), group=8),  # depthwise multiplier 2 (thin)
    dict(c=16, m=20, hw=(9, 9), k=(3, 2), strides=(1, 2), group=4, dilations=(2, 1)),  # grouped, 5 a group (thin)
    dict(c=6, m=6, hw=(11, 53), k=(3, 3), strides=(1, 3), group=6),  # depthwise, stride 3 along rows, row tail
    dict(c=5, m=9, hw=(12, 40), k=(2, 4), strides=(3, 3), group=1, dilations=(1, 2)),  # wide, stride 3
])
@pytest.mark.parametrize("x_dtype", ["uint8", "int8"])
def test_conv_shapes(dev: OpenCLDevice, case: dict[str, Any], x_dtype: str) -> None:
    rng = np.random.default_rng(sum(case["hw"]) + case["m"])
    c, m, group = case["c"], case["m"], case["group"]
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, (2, c, *case["hw"])).astype(x_dtype)
    w = rng.integers(-128, 128, (m, c // group, *case["k"]), dtype=np.int8)
    zw = rng.integers(-10, 10, m).astype(np.int8)
    sw = rng.uniform(0.0005, 0.004, m).astype(np.float32)
    pads = tuple(int(v) for v in rng.integers(0, 3, 4))
    op = qconv(x, w, 131 + info.min, zw, sw, rng.integers(-3000, 3000, m).astype(np.int32), group=group,
               strides=case["strides"], pads=pads, dilations=case.get("dilations", (1, 1)))
    run_exact(dev, op, x)


@pytest.mark.parametrize("weights_kind", ["int8 symmetric", "uint8 wide"])
@pytest.mark.parametrize("dims", [(13, 300, 19), (1, 512, 40), (64, 72, 16), (23, 270, 96)])
def test_qgemm_shapes(dev: OpenCLDevice, dims: tuple[int, int, int], weights_kind: str) -> None:
    """QGemm with transB and a full bias matrix: row and column remainders, K over one chunk; int8
    weights around 0 (signed bytes: the VNNI kernel) and uint8 weights whose w - zw leaves a
    signed byte (the float32 kernels)."""
    rows, k, n = dims
    rng = np.random.default_rng(rows + k + n)
    a = rng.integers(-128, 128, (rows, k), dtype=np.int8)
    if weights_kind == "int8 symmetric":
        b, zb = rng.integers(-127, 128, (n, k), dtype=np.int8), np.zeros(n, np.int8)
    else:
        b, zb = rng.integers(0, 256, (n, k), dtype=np.uint8), rng.integers(100, 150, n).astype(np.uint8)
    weights = {"sa": np.float32(0.02), "za": np.asarray(-3, np.int8), "b": b,
               "sb": rng.uniform(0.001, 0.003, n).astype(np.float32), "zb": zb,
               "c": rng.integers(-20000, 20000, (rows, n)).astype(np.int32), "sy": np.float32(0.7),
               "zy": np.asarray(-5, np.int8)}
    op = make_op("gemm", "QGemm", ["a", "sa", "za", "b", "sb", "zb", "c", "sy", "zy"], ["y"], {"transB": 1},
                 {"a": TensorSpec("a", a.shape, "int8")}, {key: np.asarray(v) for key, v in weights.items()})
    run_exact(dev, op, a)


def test_kernel_style_option(cl_info: DeviceInfo) -> None:
    import pyopencl as cl

    with pytest.raises(DeviceError, match="kernel_style must be"):
        OpenCLDevice(cl_info, kernel_style="fast")
    opened = OpenCLDevice(cl_info)
    try:
        assert opened.cpu_style == bool(opened.device.type & cl.device_type.CPU)
        assert not opened.vnni_capable or "Portable Computing Language" in opened.device.platform.name
    finally:
        opened.close()


def test_vnni_kernels_run_where_offered(device: OpenCLDevice) -> None:
    """A device that offers VNNI builds kernels/qvnni.cl and runs a convolution there."""
    if not device.vnni_capable:
        pytest.skip(f"{device.name} has no AVX-512 VNNI kernels")
    device.vnni = True
    assert device.vnni_ready()
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1, 16, 6, 6), dtype=np.uint8)
    w = rng.integers(-128, 128, (16, 16, 3, 3), dtype=np.int8)
    run_exact(device, qconv(x, w, 7, np.zeros(16, np.int8), np.full(16, 0.003, np.float32), None), x)
    assert ("qvnni", "qconv_vnni") in device._kernels
    device.vnni = device.vnni_capable


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("geometry", [((3, 3), (2, 2), (1, 1, 1, 1)), ((2, 3), (1, 1), (0, 1, 1, 0)),
                                      ((3, 2), (3, 3), (1, 0, 0, 1))])
def test_max_pool_rows(device: OpenCLDevice, dtype: str, geometry: tuple[tuple[int, ...], ...]) -> None:
    """MaxPool on rows of 16-output vectors (strides 1 and 2) and their edges, bit for bit."""
    kernel, strides, pads = geometry
    info = np.iinfo(dtype)
    x = np.random.default_rng(sum(kernel)).integers(info.min, info.max + 1, (2, 3, 37, 70)).astype(dtype)
    op = make_op("pool", "MaxPool", ["x"], ["y"], {"kernel_shape": kernel, "strides": strides, "pads": pads},
                 {"x": TensorSpec("x", x.shape, dtype)}, {})
    run_exact(device, op, x)
