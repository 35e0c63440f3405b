"""Exactness of the int8 GEMM (VNNI kernel and portable fallback) against numpy int32."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetero.backends.cpu import gemm as cpu_gemm
from hetero.errors import DeviceError, InputError

DTYPES = [np.int8, np.uint8]
PATHS = [pytest.param(True, id="vnni"), pytest.param(False, id="portable")]


def reference(a: np.ndarray, a_zp: int, b: np.ndarray, b_zp: int | np.ndarray) -> np.ndarray:
    """The numpy int32 result qgemm must reproduce bit for bit."""
    return (a.astype(np.int32) - a_zp) @ (b.astype(np.int32) - b_zp)


def fill(rng: np.random.Generator, shape: tuple[int, int], dtype: type, mode: str) -> np.ndarray:
    """Random values of a dtype: uniform, only the extremes (and 0), or all min / all max."""
    info = np.iinfo(dtype)
    if mode == "uniform":
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)
    if mode == "extremes":
        return rng.choice(np.array([info.min, info.max, 0], dtype), shape)
    return np.full(shape, info.min if mode == "min" else info.max, dtype)


def available(vnni: bool) -> None:
    """Skip VNNI cases on hosts without the instruction."""
    if vnni and not cpu_gemm.HAS_VNNI:
        pytest.skip("CPU lacks AVX-512 VNNI")


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, int, np.ndarray, int | np.ndarray]:
    """A random (a, a_zp, b, b_zp) spanning tile edges, dtypes, extremes and zero points."""
    m = draw(st.integers(1, 50))
    k = draw(st.integers(1, 70))
    n = draw(st.integers(1, 140))
    adt, bdt = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    modes = st.sampled_from(["uniform", "uniform", "extremes", "min", "max"])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = fill(rng, (m, k), adt, draw(modes))
    b = fill(rng, (k, n), bdt, draw(modes))
    zp = st.sampled_from([0, -128, 127, 128, 255, -1]) | st.integers(-300, 300)
    a_zp = draw(zp)
    if draw(st.booleans()):
        b_zp: int | np.ndarray = draw(zp)
    else:
        zp_dtype = draw(st.sampled_from([np.int32, np.int64, np.int16]))
        b_zp = rng.integers(-300, 301, n).astype(zp_dtype)
    return a, a_zp, b, b_zp


@pytest.mark.parametrize("vnni", PATHS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_matches_numpy(vnni: bool, problem: tuple) -> None:
    """Random shapes, dtypes, values and zero points: bit-exact against numpy int32."""
    available(vnni)
    a, a_zp, b, b_zp = problem
    got = cpu_gemm.qgemm(a, a_zp, cpu_gemm.pack_weights(b), b_zp, use_vnni=vnni)
    assert got.dtype == np.int32 and got.shape == (a.shape[0], b.shape[1])
    assert np.array_equal(got, reference(a, a_zp, b, b_zp))


@pytest.mark.parametrize("vnni", PATHS)
@pytest.mark.parametrize("adt", DTYPES)
@pytest.mark.parametrize("bdt", DTYPES)
def test_saturation_edges(vnni: bool, adt: type, bdt: type) -> None:
    """Every pairing of dtype extremes, with zero points at the opposite extremes."""
    available(vnni)
    ai, bi = np.iinfo(adt), np.iinfo(bdt)
    a = np.array([[ai.min, ai.max, 0, ai.min, ai.max]] * 7, adt)
    b = np.tile(np.array([[bi.min], [bi.max], [0], [bi.max], [bi.min]], bdt), (1, 19))
    packed = cpu_gemm.pack_weights(b)
    for a_zp in (ai.min, ai.max, 0):
        for b_zp in (bi.min, bi.max, 0, np.full(19, bi.max), np.arange(19) * 13 - 100):
            got = cpu_gemm.qgemm(a, a_zp, packed, b_zp, use_vnni=vnni)
            assert np.array_equal(got, reference(a, a_zp, b, b_zp))


@pytest.mark.parametrize("vnni", PATHS)
def test_larger_blocked_shape_and_int32_wraparound(vnni: bool) -> None:
    """Several row blocks and column panels, and zero points big enough to overflow int32."""
    available(vnni)
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (101, 1027)).astype(np.int8)
    b = rng.integers(0, 256, (1027, 133)).astype(np.uint8)
    packed = cpu_gemm.pack_weights(b)
    assert np.array_equal(cpu_gemm.qgemm(a, -5, packed, 3, use_vnni=vnni), reference(a, -5, b, 3))
    big = 1 << 22  # products reach 2**44: numpy wraps modulo 2**32 and so must qgemm
    got = cpu_gemm.qgemm(a, big, packed, -big, use_vnni=vnni)
    assert np.array_equal(got, reference(a, big, b, -big))


def test_paths_agree_and_threads_restored() -> None:
    """Both kernels, any thread count and any memory order give the same result."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (64, 96)).astype(np.uint8)
    packed = cpu_gemm.pack_weights(rng.integers(-128, 128, (96, 80)).astype(np.int8))
    before = numba.get_num_threads()
    one = cpu_gemm.qgemm(a, 7, packed, 1, threads=1, use_vnni=False)
    assert numba.get_num_threads() == before
    assert np.array_equal(one, cpu_gemm.qgemm(a, 7, packed, 1, threads=before))
    assert numba.get_num_threads() == before
    assert np.array_equal(one, cpu_gemm.qgemm(np.asfortranarray(a), 7, packed, 1))


def test_packed_layout() -> None:
    """data[p, g, 64*v + 4*c + t] holds b_s[4*g + t, NR*p + 16*v + c]; sums are of b."""
    rng = np.random.default_rng(5)
    b = rng.integers(0, 256, (10, 70)).astype(np.uint8)
    packed = cpu_gemm.pack_weights(b)
    assert (packed.k, packed.n, packed.dtype, packed.k_groups) == (10, 70, np.dtype(np.uint8), 3)
    assert np.array_equal(packed.colsum, b.sum(axis=0, dtype=np.int64))
    b_s = (b.astype(np.int32) - 128).astype(np.int8)
    for kk, j in [(0, 0), (9, 69), (5, 17), (3, 64), (8, 40)]:
        p, g, t, v, c = j // cpu_gemm.NR, kk // 4, kk % 4, (j % cpu_gemm.NR) // 16, j % 16
        assert packed.data[p, g, 64 * v + 4 * c + t] == b_s[kk, j]
    assert not packed.data[0, 2, 4 * 0 + 2 :: 4].any()  # k = 10, 11 are padding


def test_rejects_bad_inputs() -> None:
    """Wrong dtypes, shapes, zero points and thread counts raise InputError."""
    packed = cpu_gemm.pack_weights(np.zeros((8, 4), np.int8))
    with pytest.raises(InputError):
        cpu_gemm.pack_weights(np.zeros((8, 4), np.int16))
    with pytest.raises(InputError):
        cpu_gemm.qgemm(np.zeros((2, 8), np.float32), 0, packed)
    with pytest.raises(InputError):
        cpu_gemm.qgemm(np.zeros((2, 9), np.uint8), 0, packed)
    with pytest.raises(InputError):
        cpu_gemm.qgemm(np.zeros((2, 8), np.uint8), 0, packed, np.zeros(5, np.int32))
    with pytest.raises(InputError):
        cpu_gemm.qgemm(np.zeros((2, 8), np.uint8), 0.5, packed)
    with pytest.raises(InputError):
        cpu_gemm.qgemm(np.zeros((2, 8), np.uint8), 0, packed, threads=0)
    if not cpu_gemm.HAS_VNNI:
        with pytest.raises(DeviceError):
            cpu_gemm.qgemm(np.zeros((2, 8), np.uint8), 0, packed, use_vnni=True)


def test_vnni_detection_matches_cpuinfo() -> None:
    """HAS_VNNI follows the CPU flags when numba targets the host."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = set(cpuinfo.read_text().split())
    if numba.config.CPU_NAME in (None, "host") and not numba.config.CPU_FEATURES:
        assert cpu_gemm.HAS_VNNI == ("avx512_vnni" in flags and "avx512f" in flags)


@pytest.mark.slow
def test_kernel_uses_vpdpbusd() -> None:
    """The compiled VNNI driver really contains the instruction (an uncached build)."""
    available(True)
    assert "vpdpbusd" in cpu_gemm.kernel_asm()
