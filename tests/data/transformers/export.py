"""Export the small transformer ONNX files in this folder with PyTorch's two exporters.

hetero never imports torch; these files are committed so the tests need no framework.
To regenerate them (from the repository root), in a separate venv:

    python3 -m venv /tmp/tenv
    /tmp/tenv/bin/pip install torch==2.13.0 onnx onnxscript
    /tmp/tenv/bin/python tests/data/transformers/export.py

Each model is exported twice: TorchScript (``dynamo=False``, opset 17) as NAME_ts.onnx and
dynamo (``dynamo=True``, opset 18) as NAME_dynamo.onnx. Weights are seeded (torch.manual_seed)
and the dims tiny, so every file stays well under 500 KB.

Models:
- encoder: nn.TransformerEncoder (2 layers, d_model 32, 4 heads, feed-forward 64, GELU,
  batch_first) on float32 [1, 16, 32]; the case that first failed at import on Mod.
- gpt: a GPT-style causal decoder on int64 token ids [1, 16] (vocab 64, d_model 32, 2 blocks,
  4 heads, causal mask built in forward from torch.triu), logits [1, 16, 64].
- vit: a tiny ViT on float32 [1, 1, 28, 28] (patch 7, d_model 32, 2 blocks, 4 heads, class
  token, 10 classes).
- gpt_dynamic (TorchScript only): the gpt with a second int64 input ``attention_mask`` [1, 16]
  (1 = token, 0 = padding) and symbolic batch and sequence axes, so its positions come from a
  Shape subgraph that folds only once the input shapes are fixed.
- padded_lm (dynamo only): one causal attention layer as Hugging Face decoders write it
  (positions = cumsum(attention_mask) - 1, scaled_dot_product_attention under a bool padding
  and causal mask, SiLU), two int64 inputs [1, 16], output [1, 16]; its CumSum runs at run time.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
TS_OPSET = 17
DYNAMO_OPSET = 18


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh" if causal else "none"),
                                 nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
        if self.causal:
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
            att = att.masked_fill(mask, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int = 64, seq: int = 16, dim: int = 32, heads: int = 4, blocks: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(seq, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, causal=True) for _ in range(blocks)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], dtype=torch.long)
        x = self.tok(ids) + self.pos(positions)
        return self.head(self.ln(self.blocks(x)))


class PaddedGPT(GPT):
    """GPT that also takes an int64 attention_mask [1, seq] (1 = token, 0 = padding)."""

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        positions = torch.arange(ids.shape[1], dtype=torch.long)
        x = self.tok(ids) + self.pos(positions)
        keep = attention_mask.to(x.dtype).unsqueeze(-1)
        return self.head(self.ln(self.blocks(x * keep)))


class PaddedLM(nn.Module):
    """One causal attention layer in the style of Hugging Face decoders: positions from the
    cumulative sum of attention_mask, scaled_dot_product_attention under a padding-and-causal
    bool mask, SiLU, mean over features: output [1, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(64, 32), nn.Embedding(16, 32)
        self.ln, self.qkv = nn.LayerNorm(32), nn.Linear(32, 96)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        x = self.tok(ids) + self.pos(positions)
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).view(b, t, 3, 4, c // 4).permute(2, 0, 3, 1, 4)
        mask = attention_mask[:, None, None, :].to(torch.bool) & torch.ones(t, t, dtype=torch.bool).tril()
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return nn.functional.silu(y.transpose(1, 2).reshape(b, t, c)).mean(-1)


class ViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4, blocks: int = 2, patch: int = 7, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (28 // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, causal=False) for _ in range(blocks)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.ln(self.blocks(x))[:, 0])


def export_all() -> None:
    cases = {
        "encoder": (Encoder, torch.randn(1, 16, 32), "input"),
        "gpt": (GPT, torch.randint(0, 64, (1, 16), dtype=torch.long), "input_ids"),
        "vit": (ViT, torch.randn(1, 1, 28, 28), "input"),
    }
    for name, (cls, example, input_name) in cases.items():
        torch.manual_seed(0)
        model = cls().eval()
        # not under torch.no_grad(): there nn.TransformerEncoderLayer takes its fused fast path
        # (aten::_transformer_encoder_layer_fwd), which neither exporter knows
        torch.onnx.export(model, (example,), str(HERE / f"{name}_ts.onnx"), dynamo=False,
                          opset_version=TS_OPSET, input_names=[input_name], output_names=["output"])
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=DYNAMO_OPSET,
                                    input_names=[input_name], output_names=["output"])
        program.save(str(HERE / f"{name}_dynamo.onnx"), external_data=False)
        _print_sizes(name, ("ts", "dynamo"))
    # symbolic batch and sequence axes, two int64 inputs: the mask and the positions come from
    # Shape subgraphs that fold only once the input shapes are fixed
    torch.manual_seed(0)
    model = PaddedGPT().eval()
    ids = torch.randint(0, 64, (1, 16), dtype=torch.long)
    torch.onnx.export(model, (ids, torch.ones(1, 16, dtype=torch.long)), str(HERE / "gpt_dynamic_ts.onnx"),
                      dynamo=False, opset_version=TS_OPSET, input_names=["input_ids", "attention_mask"],
                      output_names=["output"], dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                                             "attention_mask": {0: "batch", 1: "seq"}})
    _print_sizes("gpt_dynamic", ("ts",))
    torch.manual_seed(0)
    model = PaddedLM().eval()
    program = torch.onnx.export(model, (ids, torch.ones(1, 16, dtype=torch.long)), dynamo=True, opset_version=DYNAMO_OPSET,
                                input_names=["input_ids", "attention_mask"], output_names=["output"])
    program.save(str(HERE / "padded_lm_dynamo.onnx"), external_data=False)
    _print_sizes("padded_lm", ("dynamo",))


def _print_sizes(name: str, suffixes: tuple[str, ...]) -> None:
    for suffix in suffixes:
        path = HERE / f"{name}_{suffix}.onnx"
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    export_all()
