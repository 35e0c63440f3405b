"""int8 on transformers hetero's int8 path was not developed on (tests/data/transformers/
export_unseen.py): a post-norm encoder (d_model 48, 6 heads, 3 layers), a pre-norm tanh-GELU
encoder (d_model 24, 2 heads), a keyword spotter (Conv2d front end + 2 encoder layers) and a
ViT (d_model 48, 6 heads, 3 blocks). onnxruntime's quantize_static models lowered by hetero equal
onnxruntime's own int8 run (>= 99.9% of elements identical, the rest within one step, same
argmax); hetero's quantizer tracks fp32; the lowered graph's float ops round as onnxruntime's;
their quantize_dynamic models run by hetero equal onnxruntime's run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantType

from hetero.ir.onnx_import import import_onnx
from hetero.quant.lowering import lower_qdq
from hetero.quant.qdq import quantize_model
from test_mlas_dynamic import needs_avx512
from test_quant_transformer import (EXPORTS, agreement, assert_equals_onnxruntime, cosine, dynamic, dynamic_agreement,
                                    export_feeds, ort_static, output_step, session)

UNSEEN = ["postnorm_d48", "prenorm_tanh_d24", "kws", "vit_d48"]


def unseen(name: str) -> Path:
    source = EXPORTS / f"{name}.onnx"
    if not source.is_file():
        pytest.skip(f"{source} is missing (tests/data/transformers/export_unseen.py makes it)")
    return source


@pytest.mark.slow
@pytest.mark.parametrize("name", UNSEEN)
def test_unseen_transformer_int8_equals_onnxruntime(tmp_path: Path, name: str) -> None:
    source = unseen(name)
    model = onnx.load(str(source))
    graph = import_onnx(model)
    feeds = export_feeds(graph, 3, 9)
    for activation, per_channel in ((QuantType.QUInt8, True), (QuantType.QInt8, False)):
        qdq = ort_static(source, tmp_path / "qdq.onnx", export_feeds(graph, 8, 0), activation, per_channel)
        lowered = lower_qdq(import_onnx(onnx.load(str(qdq))), int8_allowed=activation == QuantType.QUInt8)
        stats = agreement(lowered, session(qdq), feeds, output_step(lowered))
        assert_equals_onnxruntime(stats, f"{name}, onnxruntime quantize_static {activation.name}")
    qdq = quantize_model(graph, export_feeds(graph, 16, 0))
    int8, fp32 = session(qdq), session(model)
    cosines = [cosine(int8.run(None, f)[0], fp32.run(None, f)[0]) for f in feeds]
    assert min(cosines) >= 0.97, f"{name}: int8 vs fp32 cosine {cosines}"
    lowered = lower_qdq(import_onnx(qdq))
    assert_equals_onnxruntime(agreement(lowered, int8, feeds, output_step(lowered)), f"{name}, hetero's quantizer")


@needs_avx512
@pytest.mark.parametrize("name", [*UNSEEN, "padded_lm_dynamo"])
def test_unseen_transformer_quantized_dynamically_equals_onnxruntime(tmp_path: Path, name: str) -> None:
    """onnxruntime's quantize_dynamic model run by hetero's reference equals onnxruntime's run at
    its default optimisations (>= 99.9% of elements identical, the rest within 1e-6 x max |y|,
    same argmax); padded_lm_dynamo brings SiLU (QuickGelu in onnxruntime) and a ReduceMean."""
    model = onnx.load(str(unseen(name)))
    feeds = export_feeds(import_onnx(model), 3, 9)
    quantized = dynamic(model, tmp_path)
    identical, worst = dynamic_agreement(import_onnx(quantized), session(quantized), feeds)
    assert identical >= 0.999 and worst <= 1e-6, (name, identical, worst)
