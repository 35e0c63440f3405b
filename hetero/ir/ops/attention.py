"""Attention (opset 23+): scaled dot-product attention with grouped KV heads, a KV cache
(past_key/past_value), boolean or additive masks, causal and sliding-window masking, softcap,
and the optional present_key/present_value/qk outputs; float64 inside, one rounding at the end."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hetero.errors import GraphError, UnsupportedOpError
from hetero.ir.ops import Attrs, Shape, Value, register


def _heads(q: Shape, k: Shape, v: Shape, attrs: Attrs) -> tuple[int, int, int, int, int, int, int]:
    """(batch, q heads, kv heads, q length, kv length, head size, value head size)."""
    if not len(q) == len(k) == len(v) or len(q) not in (3, 4):
        raise GraphError(f"Attention Q, K, V ranks {len(q)}, {len(k)}, {len(v)} must all be 3 or 4")
    if len(q) == 4:
        batch, hq, s, d = q
        hkv, length, dv = k[1], k[2], v[3]
    else:
        if "q_num_heads" not in attrs or "kv_num_heads" not in attrs:
            raise GraphError("Attention with 3-D inputs needs q_num_heads and kv_num_heads")
        hq, hkv = int(attrs["q_num_heads"]), int(attrs["kv_num_heads"])
        batch, s, d, length, dv = q[0], q[1], q[2] // hq, k[1], v[2] // hkv
    if hq % hkv:
        raise GraphError(f"Attention q heads {hq} are not a multiple of kv heads {hkv}")
    return batch, hq, hkv, s, length, d, dv


def _optional(inputs: Sequence[object], i: int) -> object | None:
    return inputs[i] if len(inputs) > i else None


def _check_attrs(attrs: Attrs) -> None:
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        raise UnsupportedOpError(f"Attention attribute qk_matmul_output_mode={mode} is not supported (0-3)")
    if "softmax_precision" in attrs and int(attrs["softmax_precision"]) not in (1, 10, 11):
        raise UnsupportedOpError(f"Attention attribute softmax_precision={attrs['softmax_precision']} is not supported")


def _attention_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    q, k, v = inputs[0], inputs[1], inputs[2]
    assert q is not None and k is not None and v is not None
    _check_attrs(attrs)
    batch, hq, hkv, s, length, d, dv = _heads(q.shape, k.shape, v.shape, attrs)
    past = _optional(inputs, 4)
    total = length + (past.shape[2] if past is not None else 0)  # type: ignore[union-attr]
    y = (batch, hq, s, dv) if len(q.shape) == 4 else (batch, s, hq * dv)
    return [(y, q.dtype), ((batch, hkv, total, d), q.dtype), ((batch, hkv, total, dv), q.dtype),
            ((batch, hq, s, total), q.dtype)]


def _to_heads(x: np.ndarray, heads: int) -> np.ndarray:
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(0, 2, 1, 3)


def _allowed(s: int, total: int, offset: np.ndarray, left: int, right: int, causal: bool) -> np.ndarray:
    """(batch or 1, 1, s, total) booleans: query i (at position i + offset) may see key j."""
    diff = (np.arange(s).reshape(1, 1, s, 1) + offset.reshape(-1, 1, 1, 1)) - np.arange(total).reshape(1, 1, 1, total)
    ok = np.ones(diff.shape, bool)
    if causal:
        ok &= diff >= 0
    if left >= 0:
        ok &= diff <= left
    if right >= 0:
        ok &= -diff <= right
    return ok


def _attention(ins: Sequence[np.ndarray | None], attrs: Attrs) -> list[np.ndarray]:
    q, k, v = ins[0], ins[1], ins[2]
    dtype = q.dtype
    batch, hq, hkv, s, length, d, dv = _heads(q.shape, k.shape, v.shape, attrs)
    mask, past_k, past_v, nonpad = (_optional(ins, i) for i in (3, 4, 5, 6))
    if (past_k is None) != (past_v is None):
        raise GraphError("Attention needs past_key and past_value together")
    Q, K, V = (x.astype(np.float64) for x in (q, k, v))
    if q.ndim == 3:
        Q, K, V = _to_heads(Q, hq), _to_heads(K, hkv), _to_heads(V, hkv)
    if past_k is not None:
        K = np.concatenate([past_k.astype(np.float64), K], axis=2)
        V = np.concatenate([past_v.astype(np.float64), V], axis=2)
    present_k, present_v = K, V
    total = K.shape[2]
    scale = float(attrs["scale"]) if "scale" in attrs else 1.0 / np.sqrt(Q.shape[3])
    bias = np.zeros((1, 1, s, total))
    if mask is not None:
        m = mask
        if m.shape[-1] < total:  # a mask shorter than the keys masks the rest
            pad = [(0, 0)] * (m.ndim - 1) + [(0, total - m.shape[-1])]
            m = np.pad(m, pad, constant_values=False if m.dtype == np.bool_ else -np.inf)
        bias = bias + (np.where(m, 0.0, -np.inf) if m.dtype == np.bool_ else m.astype(np.float64))
    if past_k is None and nonpad is not None:
        offset = nonpad.reshape(-1).astype(np.int64) - s
    else:
        offset = np.asarray([past_k.shape[2] if past_k is not None else 0])
    left, right = int(attrs.get("left_window_size", -1)), int(attrs.get("right_window_size", -1))
    causal = bool(attrs.get("is_causal", 0))
    if causal or left >= 0 or right >= 0:
        bias = bias + np.where(_allowed(s, total, offset, left, right, causal), 0.0, -np.inf)
    if nonpad is not None:
        keep = np.arange(total).reshape(1, -1) < nonpad.reshape(-1, 1)
        bias = bias + np.where(keep, 0.0, -np.inf).reshape(batch, 1, 1, total)
    reps = hq // hkv
    K, V = np.repeat(K, reps, axis=1), np.repeat(V, reps, axis=1)
    qk = (Q @ K.transpose(0, 1, 3, 2)) * scale
    softcap = float(attrs.get("softcap", 0.0))
    if softcap > 0:
        qk = softcap * np.tanh(qk / softcap)
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    scores = qk + bias
    qk_out = scores if mode == 2 else qk
    peak = np.max(scores, axis=-1, keepdims=True)
    dead = np.isneginf(np.max(np.broadcast_to(bias, scores.shape), axis=-1, keepdims=True))
    e = np.exp(scores - np.where(np.isneginf(peak), 0.0, peak))
    total_e = e.sum(axis=-1, keepdims=True)
    probs = np.where(dead, 0.0, e / np.where(total_e == 0, 1.0, total_e))
    if mode == 3:
        qk_out = probs
    y = probs @ V
    if q.ndim == 3:
        y = y.transpose(0, 2, 1, 3).reshape(batch, s, -1)
    qk_out = np.broadcast_to(qk_out, (batch, hq, s, total))
    return [y.astype(dtype), present_k.astype(dtype), present_v.astype(dtype), np.ascontiguousarray(qk_out).astype(dtype)]


def _attention_flops(inputs: Sequence[Value | None], outputs: Sequence[Shape], attrs: Attrs) -> int:
    q, v = inputs[0], inputs[2]
    assert q is not None and v is not None
    batch, hq, _, s, _, d, dv = _heads(q.shape, inputs[1].shape, v.shape, attrs)  # type: ignore[union-attr]
    total = outputs[1][2] if len(outputs) > 1 else inputs[1].shape[-2]  # type: ignore[union-attr]
    return 2 * batch * hq * s * total * (d + dv) + 5 * batch * hq * s * total


register("Attention", infer=_attention_infer, reference=_attention, flops=_attention_flops, inputs=(3, 7),
         optional_outputs=True)


# --- RotaryEmbedding (opset 23) ---------------------------------------------------------------

def _rotary_infer(inputs: Sequence[Value | None], attrs: Attrs) -> list[tuple[Shape, str]]:
    x, cos, sin = inputs[0], inputs[1], inputs[2]
    assert x is not None and cos is not None and sin is not None
    if len(x.shape) not in (3, 4):
        raise GraphError(f"RotaryEmbedding input must be 3-D or 4-D, got {list(x.shape)}")
    if len(x.shape) == 3 and int(attrs.get("num_heads", 0)) <= 0:
        raise GraphError("RotaryEmbedding with a 3-D input needs the num_heads attribute")
    if cos.shape != sin.shape:
        raise GraphError(f"RotaryEmbedding cos_cache {list(cos.shape)} and sin_cache {list(sin.shape)} differ")
    return [(x.shape, x.dtype)]


def rotary_embedding(
    x: np.ndarray, cos: np.ndarray, sin: np.ndarray, position_ids: np.ndarray | None, attrs: Attrs
) -> np.ndarray:
    """Rotate pairs of each head's first ``rotary_embedding_dim`` features by the cached angles:
    halves (x1, x2) of that slice, or even/odd features when ``interleaved``, become
    (cos x1 - sin x2, sin x1 + cos x2). Input (B, H, S, D) or (B, S, H*D)."""
    if x.ndim == 4:
        heads = np.transpose(x, (0, 2, 1, 3))  # B, S, H, D
    else:
        n = int(attrs["num_heads"])
        heads = x.reshape(x.shape[0], x.shape[1], n, x.shape[2] // n)
    dim = int(attrs.get("rotary_embedding_dim", 0)) or heads.shape[3]
    half = dim // 2
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]  # B, S, dim/2
    cos = cos[:, :, np.newaxis, :half]
    sin = sin[:, :, np.newaxis, :half]
    rotate = heads[..., :dim]
    if attrs.get("interleaved", 0):
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate[..., :half], rotate[..., half:]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if attrs.get("interleaved", 0):
        rotated = np.stack((real, imag), axis=-1).reshape(rotate.shape)
    else:
        rotated = np.concatenate((real, imag), axis=-1)
    out = np.concatenate((rotated, heads[..., dim:]), axis=-1).astype(x.dtype)
    return out.reshape(x.shape) if x.ndim == 3 else np.ascontiguousarray(np.transpose(out, (0, 2, 1, 3)))


register(
    "RotaryEmbedding",
    infer=_rotary_infer,
    reference=lambda ins, a: [rotary_embedding(ins[0], ins[1], ins[2], ins[3] if len(ins) > 3 else None, a)],
    flops=lambda i, o, a: 6 * int(np.prod(o[0])),
    inputs=(3, 4),
)
