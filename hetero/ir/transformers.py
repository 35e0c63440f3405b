"""Builtin transformer builders: ONNX graphs written node by node, with seeded random weights.

Both are fp32, opset 17, batch 1, written the way PyTorch's TorchScript exporter writes them:
attention as MatMul/Reshape/Transpose/Softmax, LayerNormalization, GELU in its Erf form
(0.5 * x * (1 + erf(x / sqrt 2))), residual Adds.

tiny_vit (``builtin:tiny-vit``)
    input ``input`` float32 [1, 1, 28, 28] -> output ``logits`` float32 [1, 10].
    Patch embedding Conv(1 -> 64, kernel 7, stride 7) -> [1, 64, 4, 4] -> Reshape [1, 64, 16]
    -> Transpose [1, 16, 64]; a class token is concatenated in front ([1, 17, 64]) and a learned
    positional embedding added; 2 pre-norm encoder blocks (4 heads of 16, MLP 64 -> 128 -> 64);
    a final LayerNormalization; the class token (Gather index 0 on axis 1, [1, 64]) goes through
    a Gemm head to 10 classes. The input is a digit image, so it can be trained on the digits.

tiny_lm (``builtin:tiny-lm``)
    input ``input_ids`` int64 [1, 32] (token ids < 256) -> output ``logits`` float32 [1, 32, 256].
    Token embedding Gather([256, 64]) plus a positional embedding gathered at
    Range(0, seq, 1) (a shape subgraph Shape -> Gather -> Range that folds at import); 2
    pre-norm causal decoder blocks (4 heads of 16, MLP 64 -> 256 -> 64) whose attention scores
    are masked with Where(Trilu(ones) == 0, -inf, scores); a final LayerNormalization; logits
    through the token embedding transposed (tied weights).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hetero.errors import InputError
from hetero.ir.models import Builtin

OPSET_VERSION = 17
IR_VERSION = 8
PRODUCER_NAME = "hetero"
LN_EPSILON = 1e-5

VIT_INPUT_NAME = "input"
LM_INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"


class _Builder:
    """Accumulates nodes and initializers of one graph, naming everything uniquely."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        n = self._counts.get(prefix, 0)
        self._counts[prefix] = n + 1
        return f"{prefix}_{n}"

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer and return its name."""
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], prefix: str, output: str | None = None, **attrs: object) -> str:
        """Add a single-output node and return the name of its output."""
        name = self.fresh(prefix)
        out = output or f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    def normal(self, name: str, shape: tuple[int, ...], std: float) -> str:
        return self.const(name, self.rng.normal(0.0, std, size=shape).astype(np.float32))

    def linear(self, x: str, prefix: str, d_in: int, d_out: int) -> str:
        """MatMul by a [d_in, d_out] weight plus a bias, as torch exports nn.Linear on rank-3 input."""
        bound = 1.0 / np.sqrt(d_in)
        w = self.rng.uniform(-bound, bound, size=(d_in, d_out)).astype(np.float32)
        b = self.rng.uniform(-bound, bound, size=d_out).astype(np.float32)
        y = self.node("MatMul", [x, self.const(f"{prefix}.weight", w)], f"{prefix}_matmul")
        return self.node("Add", [y, self.const(f"{prefix}.bias", b)], f"{prefix}_add")

    def layer_norm(self, x: str, prefix: str, dim: int) -> str:
        scale = (1.0 + 0.05 * self.rng.standard_normal(dim)).astype(np.float32)
        bias = (0.02 * self.rng.standard_normal(dim)).astype(np.float32)
        return self.node(
            "LayerNormalization",
            [x, self.const(f"{prefix}.weight", scale), self.const(f"{prefix}.bias", bias)],
            prefix, axis=-1, epsilon=LN_EPSILON,
        )

    def gelu(self, x: str, prefix: str) -> str:
        """Exact GELU in the Erf form PyTorch's TorchScript exporter writes."""
        if not any(i.name == "gelu.sqrt2" for i in self.initializers):
            self.const("gelu.sqrt2", np.array(np.sqrt(2.0), np.float32))
            self.const("gelu.one", np.array(1.0, np.float32))
            self.const("gelu.half", np.array(0.5, np.float32))
        y = self.node("Div", [x, "gelu.sqrt2"], f"{prefix}_div")
        y = self.node("Erf", [y], f"{prefix}_erf")
        y = self.node("Add", [y, "gelu.one"], f"{prefix}_add")
        y = self.node("Mul", [x, y], f"{prefix}_mul")
        return self.node("Mul", [y, "gelu.half"], f"{prefix}_mul")

    def attention(self, x: str, prefix: str, seq: int, dim: int, heads: int, mask: str | None) -> str:
        """Multi-head self-attention on [1, seq, dim]; ``mask`` a bool [seq, seq] tensor, True = hide."""
        head_dim = dim // heads
        split = self.const(f"{prefix}.split_shape", np.array([1, seq, heads, head_dim], np.int64))
        merge = self.const(f"{prefix}.merge_shape", np.array([1, seq, dim], np.int64))
        q = self.linear(x, f"{prefix}.q", dim, dim)
        k = self.linear(x, f"{prefix}.k", dim, dim)
        v = self.linear(x, f"{prefix}.v", dim, dim)
        q = self.node("Transpose", [self.node("Reshape", [q, split], f"{prefix}_q_reshape")], f"{prefix}_q_t", perm=[0, 2, 1, 3])
        k = self.node("Transpose", [self.node("Reshape", [k, split], f"{prefix}_k_reshape")], f"{prefix}_k_t", perm=[0, 2, 3, 1])
        v = self.node("Transpose", [self.node("Reshape", [v, split], f"{prefix}_v_reshape")], f"{prefix}_v_t", perm=[0, 2, 1, 3])
        scores = self.node("MatMul", [q, k], f"{prefix}_scores")  # [1, heads, seq, seq]
        scale = self.const(f"{prefix}.scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
        scores = self.node("Mul", [scores, scale], f"{prefix}_scale")
        if mask is not None:
            scores = self.node("Where", [mask, "mask.neg_inf", scores], f"{prefix}_mask")
        probs = self.node("Softmax", [scores], f"{prefix}_softmax", axis=-1)
        ctx = self.node("MatMul", [probs, v], f"{prefix}_context")  # [1, heads, seq, head_dim]
        ctx = self.node("Transpose", [ctx], f"{prefix}_ctx_t", perm=[0, 2, 1, 3])
        ctx = self.node("Reshape", [ctx, merge], f"{prefix}_ctx_reshape")
        return self.linear(ctx, f"{prefix}.out", dim, dim)

    def block(self, x: str, prefix: str, seq: int, dim: int, heads: int, hidden: int, mask: str | None) -> str:
        """Pre-norm encoder/decoder block: x + attn(LN(x)), then x + MLP(LN(x))."""
        h = self.attention(self.layer_norm(x, f"{prefix}.ln1", dim), f"{prefix}.attn", seq, dim, heads, mask)
        x = self.node("Add", [x, h], f"{prefix}_residual")
        h = self.linear(self.layer_norm(x, f"{prefix}.ln2", dim), f"{prefix}.fc1", dim, hidden)
        h = self.linear(self.gelu(h, f"{prefix}.gelu"), f"{prefix}.fc2", hidden, dim)
        return self.node("Add", [x, h], f"{prefix}_residual")

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET_VERSION)], producer_name=PRODUCER_NAME)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def _check_dims(dim: int, heads: int, **positive: int) -> None:
    for name, value in {"dim": dim, "heads": heads, **positive}.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if dim % heads:
        raise InputError(f"dim {dim} is not a multiple of heads {heads}; choose heads that divide dim")


def tiny_vit(
    seed: int = 0, image_size: int = 28, patch: int = 7, dim: int = 64, heads: int = 4,
    blocks: int = 2, num_classes: int = 10, channels: int = 1,
) -> onnx.ModelProto:
    """A small ViT on [1, channels, image_size, image_size]; see the module docstring for shapes."""
    _check_dims(dim, heads, image_size=image_size, patch=patch, blocks=blocks, num_classes=num_classes, channels=channels)
    if image_size % patch:
        raise InputError(f"image_size {image_size} is not a multiple of patch {patch}; choose a patch that divides it")
    g = _Builder(seed)
    patches = (image_size // patch) ** 2
    seq = patches + 1
    w = g.normal("patch.weight", (dim, channels, patch, patch), np.sqrt(1.0 / (channels * patch * patch)))
    b = g.const("patch.bias", np.zeros(dim, np.float32))
    x = g.node("Conv", [VIT_INPUT_NAME, w, b], "patch_embed", kernel_shape=[patch, patch], strides=[patch, patch])
    x = g.node("Reshape", [x, g.const("patch.flat_shape", np.array([1, dim, patches], np.int64))], "patch_flatten")
    x = g.node("Transpose", [x], "patch_t", perm=[0, 2, 1])  # [1, patches, dim]
    x = g.node("Concat", [g.normal("cls_token", (1, 1, dim), 0.02), x], "cls_concat", axis=1)
    x = g.node("Add", [x, g.normal("pos_embed", (1, seq, dim), 0.02)], "pos_add")
    for i in range(blocks):
        x = g.block(x, f"blocks.{i}", seq, dim, heads, 2 * dim, mask=None)
    x = g.layer_norm(x, "norm", dim)
    cls = g.node("Gather", [x, g.const("cls_index", np.array(0, np.int64))], "cls_take", axis=1)  # [1, dim]
    bound = 1.0 / np.sqrt(dim)
    head_w = g.const("head.weight", g.rng.uniform(-bound, bound, size=(num_classes, dim)).astype(np.float32))
    head_b = g.const("head.bias", g.rng.uniform(-bound, bound, size=num_classes).astype(np.float32))
    g.node("Gemm", [cls, head_w, head_b], "head", output=OUTPUT_NAME, transB=1)
    return g.model(
        "tiny_vit",
        [helper.make_tensor_value_info(VIT_INPUT_NAME, TensorProto.FLOAT, [1, channels, image_size, image_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, num_classes])],
    )


def tiny_lm(
    seed: int = 0, vocab: int = 256, seq: int = 32, dim: int = 64, heads: int = 4, blocks: int = 2,
) -> onnx.ModelProto:
    """A small causal decoder on int64 ids [1, seq]; see the module docstring for shapes."""
    _check_dims(dim, heads, vocab=vocab, seq=seq, blocks=blocks)
    g = _Builder(seed)
    tok = g.normal("tok_embed", (vocab, dim), 0.1)
    x = g.node("Gather", [tok, LM_INPUT_NAME], "tok_gather", axis=0)  # [1, seq, dim]
    # positions = Range(0, input_ids.shape[1], 1): a shape subgraph, folded at import
    shape = g.node("Shape", [LM_INPUT_NAME], "ids_shape")
    length = g.node("Gather", [shape, g.const("seq_axis", np.array(1, np.int64))], "seq_len", axis=0)
    positions = g.node("Range", [g.const("range.start", np.array(0, np.int64)), length,
                                 g.const("range.step", np.array(1, np.int64))], "positions")
    pos = g.node("Gather", [g.normal("pos_embed", (seq, dim), 0.1), positions], "pos_gather", axis=0)
    x = g.node("Add", [x, pos], "embed_add")
    # causal mask: True above the diagonal (future tokens), hidden with -inf before the Softmax
    lower = g.node("Trilu", [g.const("mask.ones", np.ones((seq, seq), np.float32))], "mask_tril", upper=0)
    mask = g.node("Equal", [lower, g.const("mask.zero", np.array(0.0, np.float32))], "mask_future")
    g.const("mask.neg_inf", np.array(-np.inf, np.float32))
    for i in range(blocks):
        x = g.block(x, f"blocks.{i}", seq, dim, heads, 4 * dim, mask=mask)
    x = g.layer_norm(x, "norm", dim)
    tok_t = g.node("Transpose", [tok], "tok_t", perm=[1, 0])  # tied output weights, folded at import
    g.node("MatMul", [x, tok_t], "lm_head", output=OUTPUT_NAME)
    return g.model(
        "tiny_lm",
        [helper.make_tensor_value_info(LM_INPUT_NAME, TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, seq, vocab])],
    )


BUILTINS: dict[str, Builtin] = {
    "tiny-vit": Builtin(tiny_vit, calibration="digits"),  # a digit image in, 10 classes out
    "tiny-lm": Builtin(tiny_lm),
}
"""Transformer builtin names mapped to their entries (default seed and sizes); hetero.ir.source
lists them with models.BUILTINS. They are kept apart because models.BUILTINS are all CNNs on one
float image named ``input`` (tests check that convention), and tiny-lm reads int64 ``input_ids``."""
