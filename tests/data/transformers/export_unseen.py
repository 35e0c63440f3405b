"""Export four more small transformers, unlike the ones hetero's int8 path was developed on, to
check it on models it has not seen (tests/test_unseen_transformers.py).

hetero never imports torch; run this in a venv with torch 2.13.0, onnx and onnxscript, from the
repository root:

    python tests/data/transformers/export_unseen.py

Models (weights seeded with torch.manual_seed(7), exported by TorchScript at opset 17 unless
said otherwise):
- postnorm_d48: nn.TransformerEncoder, post-norm (norm_first=False), d_model 48, 6 heads,
  feed-forward 96, exact GELU, 3 layers, on float32 [1, 20, 48].
- prenorm_tanh_d24: nn.TransformerEncoder, pre-norm, d_model 24, 2 heads, feed-forward 40,
  tanh GELU, 1 layer, a final LayerNorm, on [1, 12, 24]; dynamo, opset 18.
- kws: keyword spotting as a conv front end and a transformer: [1, 1, 40, 49] (40 mel bands,
  49 frames) -> Conv2d(1, 8, 3, stride 2) + ReLU -> frames [1, 24, 152] -> Linear to 32 -> 2
  pre-norm encoder layers (4 heads, feed-forward 64, exact GELU) -> mean over frames ->
  Linear to 12 keyword scores.
- vit_d48: a ViT on [1, 3, 32, 32] (patch 8, d_model 48, 6 heads, 3 pre-norm blocks, class
  token, 10 classes); dynamo, opset 18.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent


def encoder(dim: int, heads: int, ff: int, layers: int, norm_first: bool, activation: nn.Module | str,
            final_norm: bool = False) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=ff, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, num_layers=layers, norm=nn.LayerNorm(dim) if final_norm else None,
                                 enable_nested_tensor=False)


class KeywordSpotter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.embed = nn.Linear(8 * 19, 32)
        self.encoder = encoder(32, 4, 64, 2, True, "gelu")
        self.head = nn.Linear(32, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv(x))  # [1, 8, 19, 24]
        frames = f.permute(0, 3, 1, 2).flatten(2)  # [1, 24, 152]
        return self.head(self.encoder(self.embed(frames)).mean(dim=1))


class ViT(nn.Module):
    def __init__(self, dim: int = 48, heads: int = 6, depth: int = 3, patch: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (32 // patch) ** 2 + 1, dim) * 0.02)
        self.encoder = encoder(dim, heads, 2 * dim, depth, True, "gelu", final_norm=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])


def export(model: nn.Module, example: torch.Tensor, name: str, dynamo: bool) -> None:
    model.eval()  # not under torch.no_grad(): there the encoder layers take a fused path no exporter knows
    path = HERE / f"{name}.onnx"
    if dynamo:
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=18, input_names=["input"],
                                    output_names=["output"])
        program.save(str(path), external_data=False)
    else:
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"])
    print(f"{path.name}: {path.stat().st_size // 1024} KB")


def main() -> None:
    torch.manual_seed(7)
    export(encoder(48, 6, 96, 3, False, "gelu"), torch.randn(1, 20, 48), "postnorm_d48", dynamo=False)
    export(encoder(24, 2, 40, 1, True, nn.GELU(approximate="tanh"), final_norm=True), torch.randn(1, 12, 24),
           "prenorm_tanh_d24", dynamo=True)
    export(KeywordSpotter(), torch.randn(1, 1, 40, 49), "kws", dynamo=False)
    export(ViT(), torch.randn(1, 3, 32, 32), "vit_d48", dynamo=True)


if __name__ == "__main__":
    main()
