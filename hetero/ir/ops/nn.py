"""Neural-network ops: convolution, matrix products, pooling, normalisation, softmax."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register
from hetero.ir.ops.window_nd import conv_nd, window_nd


@dataclass(frozen=True)
class Window:
    """Resolved 2-D window geometry of a Conv or pool: explicit pads, output size."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    out_hw: tuple[int, int]


def _out_dim(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool) -> int:
    span = size + pb + pe - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + pb:  # last window would start in the end padding
        out -= 1
    return out


def window(attrs: Attrs, in_hw: Sequence[int], kernel: Sequence[int] | None = None) -> Window:
    """Resolve kernel, strides, dilations, auto_pad and ceil_mode into a :class:`Window`."""
    kernel = tuple(int(k) for k in (kernel if kernel is not None else attrs["kernel_shape"]))
    if len(kernel) != 2 or len(in_hw) != 2:
        raise UnsupportedOpError(f"only 2-D windows are supported, got kernel {list(kernel)}")
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    ceil = bool(attrs.get("ceil_mode", 0))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads_begin, pads_end = [], []
        for size, k, s, d in zip(in_hw, kernel, strides, dilations):
            out = -(-size // s)
            total = max(0, (out - 1) * s + d * (k - 1) + 1 - size)
            small, large = total // 2, total - total // 2
            pads_begin.append(small if auto_pad == "SAME_UPPER" else large)
            pads_end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = (pads_begin[0], pads_begin[1], pads_end[0], pads_end[1])
    elif auto_pad == "VALID":
        pads = (0, 0, 0, 0)
    else:
        pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    out_hw = tuple(
        _out_dim(in_hw[i], kernel[i], strides[i], dilations[i], pads[i], pads[i + 2], ceil)
        for i in range(2)
    )
    if min(out_hw) < 1:
        raise GraphError(f"window {list(kernel)} leaves no output on input {list(in_hw)}")
    return Window(kernel, strides, dilations, pads, out_hw)  # type: ignore[arg-type]


def patches(x: np.ndarray, win: Window, pad_value: float = 0.0) -> np.ndarray:
    """View of x (N, C, H, W) as windows (N, C, Ho, Wo, kh, kw), padded as the window says.

    Extra end padding is added where ceil_mode makes the last window run past the pads.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.strides, win.dilations
    ho, wo = win.out_hw
    need_h = (ho - 1) * sh + dh * (kh - 1) + 1
    need_w = (wo - 1) * sw + dw * (kw - 1) + 1
    top, left = win.pads[0], win.pads[1]
    bottom = max(need_h - h - top, win.pads[2], 0)
    right = max(need_w - w - left, win.pads[3], 0)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad_value)
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp,
        shape=(n, c, ho, wo, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False,
    )


# --- Conv ---------------------------------------------------------------------------------

def _conv_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, w = inputs[0], inputs[1]
    assert x is not None and w is not None
    if len(x.shape) not in (3, 4, 5):
        raise UnsupportedOpError(f"only 1-D, 2-D and 3-D Conv (3-D to 5-D input) are supported, got input {list(x.shape)}")
    group = int(attrs.get("group", 1))
    if x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise GraphError(
            f"Conv input channels {x.shape[1]} do not match weight {list(w.shape)} with group {group}"
        )
    if len(x.shape) != 4:
        return [((x.shape[0], w.shape[0], *window_nd(attrs, x.shape[2:], w.shape[2:]).out_shape), x.dtype)]
    win = window(attrs, x.shape[2:], w.shape[2:])
    return [((x.shape[0], w.shape[0], *win.out_hw), x.dtype)]


def _conv_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    w = inputs[1]
    assert w is not None
    out = int(np.prod(outputs[0]))
    macs = out * int(np.prod(w.shape[1:]))
    has_bias = len(inputs) > 2 and inputs[2] is not None
    return 2 * macs + (out if has_bias else 0)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: Attrs) -> np.ndarray:
    """Grouped 2-D convolution of x (N,C,H,W) with w (M, C/group, kh, kw) in x's dtype."""
    group = int(attrs.get("group", 1))
    win = window(attrs, x.shape[2:], w.shape[2:])
    cols = patches(x, win)  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo, kh, kw = cols.shape
    m = w.shape[0]
    if group == 1:
        y = np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3]))  # N, Ho, Wo, M
        y = y.transpose(0, 3, 1, 2)
    else:
        cg, mg = c // group, m // group
        cols_g = cols.reshape(n, group, cg, ho, wo, kh, kw)
        w_g = w.reshape(group, mg, cg, kh, kw)
        y = np.einsum("ngchwij,gmcij->ngmhw", cols_g, w_g, optimize=True).reshape(n, m, ho, wo)
    if b is not None:
        y = y + b.reshape(1, m, 1, 1)
    return np.ascontiguousarray(y, dtype=x.dtype)


def _conv_reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    b = inputs[2] if len(inputs) > 2 else None
    if inputs[0].ndim != 4:
        return [conv_nd(inputs[0], inputs[1], b, attrs)]
    return [conv2d(inputs[0], inputs[1], b, attrs)]


register("Conv", infer=_conv_infer, reference=_conv_reference, flops=_conv_flops, inputs=(2, 3))


# --- Gemm and MatMul ----------------------------------------------------------------------

def _gemm_dims(a: Shape, b: Shape, attrs: Attrs) -> tuple[int, int, int]:
    if len(a) != 2 or len(b) != 2:
        raise GraphError(f"Gemm needs 2-D inputs, got {list(a)} and {list(b)}")
    m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
    k2, n = (b[1], b[0]) if attrs.get("transB", 0) else b
    if k != k2:
        raise GraphError(f"Gemm inner dimensions differ: {k} and {k2}")
    return m, k, n


def _gemm_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    m, _, n = _gemm_dims(a.shape, b.shape, attrs)
    return [((m, n), a.dtype)]


def _gemm_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    m, k, n = _gemm_dims(a.shape, b.shape, attrs)
    has_c = len(inputs) > 2 and inputs[2] is not None
    return 2 * m * k * n + (m * n if has_c else 0)


def _gemm_reference(inputs: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = np.float32(attrs.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        y = y + np.float32(attrs.get("beta", 1.0)) * c
    return [np.ascontiguousarray(y, dtype=inputs[0].dtype)]


register("Gemm", infer=_gemm_infer, reference=_gemm_reference, flops=_gemm_flops, inputs=(2, 3))


def _matmul_shape(a: Shape, b: Shape) -> Shape:
    try:
        if len(a) >= 2 and len(b) >= 2 and a[-1] == b[-2]:
            batch = tuple(int(d) for d in np.broadcast_shapes(a[:-2], b[:-2]))
            return batch + (a[-2], b[-1])
        return _matmul_vector_shape(a, b)
    except ValueError:
        raise GraphError(f"MatMul shapes {list(a)} and {list(b)} do not match") from None


def _matmul_vector_shape(a: Shape, b: Shape) -> Shape:
    if len(a) == 1 and len(b) >= 2 and a[0] == b[-2]:
        return tuple(b[:-2]) + (b[-1],)
    if len(b) == 1 and len(a) >= 2 and a[-1] == b[0]:
        return tuple(a[:-1])
    if len(a) == 1 and len(b) == 1 and a[0] == b[0]:
        return ()
    raise ValueError


def _matmul_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    a, b = inputs[0], inputs[1]
    assert a is not None and b is not None
    return [(_matmul_shape(a.shape, b.shape), a.dtype)]


def _matmul_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    a = inputs[0]
    assert a is not None
    return 2 * int(np.prod(outputs[0])) * int(a.shape[-1])


register(
    "MatMul",
    infer=_matmul_infer,
    reference=lambda ins, attrs: [np.matmul(ins[0], ins[1]).astype(ins[0].dtype, copy=False)],
    flops=_matmul_flops,
    inputs=(2, 2),
)
