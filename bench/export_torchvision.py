"""Export torchvision models (random weights) to ONNX for bench/kernels.py: models nobody tuned
hetero for. Needs torch and torchvision, which hetero does not: run it from a separate venv, e.g.
``python -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 torchvision onnx`` then
``/tmp/tv/bin/python bench/export_torchvision.py -o /tmp/tvm googlenet mnasnet0_5 ...`` and
``.venv/bin/python bench/kernels.py --processes --models /tmp/tvm/googlenet.onnx,...``.

Weights are torchvision's random initialisation (``weights=None``, seeded): no download. The
torchvision wheel built for a different torch may fail to load its C++ ops (``torchvision::nms
does not exist``); none of these models uses them, so their fake-kernel registration is skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="torchvision.models names (googlenet, mnasnet0_5, densenet121, ...)")
    parser.add_argument("-o", "--output", default=".", help="folder for NAME.onnx")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.library.register_fake = lambda *a, **k: (lambda f: f)  # torchvision's C++ ops: not needed here
    import torchvision

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        torch.manual_seed(args.seed)
        extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
        model = getattr(torchvision.models, name)(weights=None, **extra).eval()
        size = 299 if name == "inception_v3" else 224
        path = out / f"{name}.onnx"
        torch.onnx.export(model, torch.randn(1, 3, size, size), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
