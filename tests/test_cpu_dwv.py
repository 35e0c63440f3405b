"""The VNNI depthwise micro-kernel (kernels_dwv), bit for bit, and inside its buffers.

Property: for any image size, channel count (below, at and past multiples of 16), kernel size
it compiles (3, 5, 7), stride, dilation, asymmetric padding, uint8 or int8 activations and zero
points, ``dwv_part`` equals an int64 numpy reference followed by the same float32
requantization, and writes nothing past its output (guard bytes around it stay as they were:
the kernel stores sixteen bytes at a time, a last block masked). Two threads sharing one counter give the same
output. Plan-level exactness against onnxruntime is tests/test_cpu_shared.py's depthwise cases,
which run this kernel where the weights fit int8 and, with it switched off, the int16 kernels.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetero.backends.cpu import kernels_dwv as dv

pytestmark = pytest.mark.skipif(not dv.HAS_VNNI, reason="this CPU lacks AVX-512 VNNI: kernels_dwv is not used here")
F = np.float32
GUARD = 64


def reference(x, taps, bias, mult, zx, zy, lo, hi, stride, dil, pads):
    """int64 sums of (x - zx) * taps over the zero-point-padded image, + bias, wrapped to int32,
    then round-half-even(float32(acc) * mult) + zy clamped: kernels_int8's rules. ``stride`` and
    ``dil`` are one int for both axes or (vertical, horizontal)."""
    h, w, c = x.shape
    kh, kw, _ = taps.shape
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    dh, dw = (dil, dil) if np.isscalar(dil) else dil
    pt, pl, pb, pr = pads
    xp = np.full((h + pt + pb, w + pl + pr, c), zx, np.int64)
    xp[pt:pt + h, pl:pl + w] = x
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((ho, wo, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            acc += (xp[i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw] - zx) * taps[i, j]
    acc = (acc + bias).astype(np.int32)
    return np.clip(np.rint(acc.astype(F) * mult) + F(zy), lo, hi)


def prepared(x, taps, bias, mult, zx):
    """dwv_part's operands: packed weights, the folded bias and multipliers padded to 16 lanes, the zero-point row."""
    h, w, c = x.shape
    flip = x.dtype == np.int8
    c16 = -(-c // 16) * 16
    b = np.zeros(c16, np.int32)
    b[:c] = (bias.astype(np.int64) - (zx + (128 if flip else 0)) * taps.sum(axis=(0, 1), dtype=np.int64)).astype(np.int32)
    m = np.zeros(c16, F)
    m[:c] = mult
    return dv.pack(taps), b, m, np.full(w * c + 16, zx, x.dtype), flip


case = st.tuples(
    st.integers(1, 11), st.one_of(st.integers(1, 11), st.integers(12, 45)), st.sampled_from([1, 3, 15, 16, 17, 31, 40]),
    st.sampled_from([3, 5, 7]), st.tuples(st.integers(1, 2), st.integers(1, 3)), st.tuples(st.integers(1, 2), st.integers(1, 2)),
    st.tuples(*[st.integers(0, 3)] * 4), st.sampled_from(["uint8", "int8"]), st.integers(0, 2**31 - 1))


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_dwv_equals_the_reference_and_stays_inside_its_output(params) -> None:
    h, w, c, k, (sh, sw), (dh, dw), pads, dtype, seed = params
    pt, pl, pb, pr = pads
    if h + pt + pb < dh * (k - 1) + 1 or w + pl + pr < dw * (k - 1) + 1:
        return  # no output pixel
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (h, w, c)).astype(dtype)
    zx = int(rng.integers(info.min, info.max + 1))
    taps = rng.integers(-128, 128, (k, k, c)).astype(np.int32)
    bias = rng.integers(-20000, 20000, c).astype(np.int32)
    mult = rng.uniform(2e-5, 2e-3, c).astype(F)
    zy, lo, hi = F(rng.integers(info.min // 2, info.max // 2 + 1)), F(info.min), F(info.max)
    expect = reference(x, taps, bias, mult, zx, zy, lo, hi, (sh, sw), (dh, dw), pads).astype(dtype)
    wv, b, m, zrow, flip = prepared(x, taps, bias, mult, zx)
    room = np.full(expect.size + 2 * GUARD, 0x5A, np.uint8)
    out = room[GUARD:GUARD + expect.size].view(dtype).reshape(expect.shape)
    ran = dv.dwv_part(x, zrow, wv, k, flip, sh, sw, dh, dw, pt, pl, b, m, zy, lo, hi, out, np.zeros(2, np.int64))
    assert ran == expect.shape[0]
    np.testing.assert_array_equal(out, expect)
    assert (room[:GUARD] == 0x5A).all() and (room[GUARD + expect.size:] == 0x5A).all()


def test_two_threads_on_one_counter_give_the_same_output() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (40, 23, 33)).astype(np.uint8)
    taps = rng.integers(-128, 128, (3, 3, 33)).astype(np.int32)
    bias, mult = rng.integers(-5000, 5000, 33).astype(np.int32), rng.uniform(1e-4, 1e-3, 33).astype(F)
    wv, b, m, zrow, flip = prepared(x, taps, bias, mult, 7)
    expect = reference(x, taps, bias, mult, 7, F(3), F(0), F(255), 1, 1, (1, 1, 1, 1)).astype(np.uint8)
    out = np.zeros_like(expect)
    counter = np.zeros(2, np.int64)
    ran = []
    args = (x, zrow, wv, 3, flip, 1, 1, 1, 1, 1, 1, b, m, F(3), F(0), F(255), out, counter)
    threads = [threading.Thread(target=lambda: ran.append(dv.dwv_part(*args))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ran) == expect.shape[0]
    np.testing.assert_array_equal(out, expect)


def test_weights_past_int8_are_not_taken() -> None:
    assert dv.fits(np.array([-128, 0, 127]))
    assert not dv.fits(np.array([-129, 0]))
    assert not dv.fits(np.array([0, 128]))
