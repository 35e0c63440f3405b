"""builtin:seed-cnn-tiny, the distillation student: the seed CNN's layers at a quarter of its width."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import numpy_helper

from hetero.ir import models
from hetero.ir.source import load_graph, load_onnx


def test_seed_cnn_tiny_is_the_seed_cnn_at_a_quarter_width():
    seed, tiny = load_onnx("builtin:seed-cnn"), load_onnx("builtin:seed-cnn-tiny")
    assert [n.op_type for n in tiny.graph.node] == [n.op_type for n in seed.graph.node]
    widths = {t.name: numpy_helper.to_array(t).shape[0] for t in tiny.graph.initializer if t.name.endswith(".bias")}
    full = {t.name: numpy_helper.to_array(t).shape[0] for t in seed.graph.initializer if t.name.endswith(".bias")}
    assert widths == {"conv.bias": full["conv.bias"] // 4, "fc1.bias": full["fc1.bias"] // 4, "fc2.bias": 10}
    assert load_graph("builtin:seed-cnn-tiny").totals()["flops"] <= 0.5 * load_graph("builtin:seed-cnn").totals()["flops"]
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    out = ort.InferenceSession(tiny.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert out.shape == (1, 10) and np.all(np.isfinite(out)) and np.ptp(out) > 0
    again = models.seed_cnn_tiny(seed=0)
    assert again.SerializeToString() == tiny.SerializeToString()  # seeded
    assert models.seed_cnn_tiny(seed=1).SerializeToString() != tiny.SerializeToString()
