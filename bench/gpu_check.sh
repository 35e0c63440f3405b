#!/usr/bin/env bash
# CUDA backend check for a lent NVIDIA machine (H100/H200, no network):
#
#   bash bench/gpu_check.sh WHEELS_DIR          (results under $OUT, default ./gpu-results)
#
# (DEVICE=opencl:0 runs the benchmark part on an OpenCL device instead, for a dry run.)
#
# WHEELS_DIR holds wheels, for the machine's python3, of everything the CUDA tests import:
# cupy-cuda12x with its CUDA wheels (nvidia-cuda-nvrtc-cu12, nvidia-cublas-cu12, ...), fastrlock,
# numpy, networkx, onnx, protobuf, pytest, hypothesis and their dependencies. Nothing comes from
# the network: pip installs them with --no-index into a venv in /tmp (reused when present), and
# hetero runs from this checkout through PYTHONPATH. Steps, each logged under $OUT:
#   env.txt     nvidia-smi, python and package versions
#   pytest.log  tests/test_cuda.py (every kernel vs the numpy reference) and test_cuda_compile.py
#   bench.json  CUDA-event times: int8 GEMM via cuBLAS, dp4a and plain tiles (each checked bit for
#               bit), QLinearConv, and a float32 MobileNetV2 op by op
# The exit status is pytest's (0 when every CUDA test passed).
set -uo pipefail
WHEELS=${1:?usage: bash bench/gpu_check.sh WHEELS_DIR}
OUT=${OUT:-gpu-results}
VENV=${VENV:-/tmp/hetero-gpu-venv}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >"$OUT/pip.log" 2>&1 \
  || echo "pip install from $WHEELS failed; see $OUT/pip.log" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi; "$VENV/bin/python" -V; "$VENV/bin/pip" list 2>/dev/null; } >"$OUT/env.txt" 2>&1
"$VENV/bin/python" -m pytest tests/test_cuda.py tests/test_cuda_compile.py -q -rs --noconftest \
  -p no:cacheprovider --junitxml="$OUT/junit.xml" >"$OUT/pytest.log" 2>&1
status=$?
tail -3 "$OUT/pytest.log"
"$VENV/bin/python" - "$OUT/bench.json" "${DEVICE:-cuda:0}" >"$OUT/bench.log" 2>&1 <<'PY'
import json, statistics, sys
import numpy as np
import hetero.backends.cuda as cuda
from hetero.backends import open_device
from hetero.backends.reference import reference_op
from hetero.exec.executor import run_reference
from hetero.ir.graph import TensorSpec, make_op
from hetero.ir.source import load_graph

dev, rng = open_device(sys.argv[2]), np.random.default_rng(0)
results = {"device": dev.info.description}

def timed(op, values, want, repeat=20):
    inputs = [dev.upload(v) for v in values]
    exact = bool(np.array_equal(dev.download(dev.timed_run(op, inputs)[0][0]), want))
    return statistics.median(dev.timed_run(op, inputs)[1] for _ in range(repeat)), exact

def qgemm(m, k, n):
    w = {"sa": np.float32(0.02), "za": np.uint8(128), "b": rng.integers(-128, 128, (n, k)).astype(np.int8),
         "sb": rng.uniform(0.002, 0.02, n).astype(np.float32), "zb": np.zeros(n, np.int8),
         "sy": np.float32(0.3 * k ** 0.5), "zy": np.uint8(128)}
    names = ["a", "sa", "za", "b", "sb", "zb", "", "sy", "zy"]
    op = make_op("g", "QGemm", names, ["y"], {"transB": 1}, {"a": TensorSpec("a", (m, k), "uint8")}, w)
    return op, [rng.integers(0, 256, (m, k)).astype(np.uint8)]

for m, k, n in ((1024, 1024, 1024), (4096, 4096, 4096), (3136, 576, 64), (1, 1280, 1000)):
    op, values = qgemm(m, k, n)
    want = reference_op(op, values)[0]
    for path, setup in (("cublas", dict(cublas=True, int8_gemm="packed")), ("dp4a", dict(cublas=False, int8_gemm="packed")),
                        ("tiled", dict(cublas=False, int8_gemm="tiled"))):
        vars(dev).update(setup)
        cuda.CUBLAS_MIN_MACS = 0 if path == "cublas" else 1 << 22
        seconds, exact = timed(op, values, want)
        results[f"qgemm {m}x{k}x{n} {path}"] = {"ms": seconds * 1e3, "tops": 2 * m * k * n / seconds / 1e12, "exact": exact}
vars(dev).update(cublas=True, int8_gemm="packed")
w = {"sx": np.float32(0.02), "zx": np.uint8(128), "w": rng.integers(-128, 128, (128, 128, 3, 3)).astype(np.int8),
     "sw": np.float32(0.01), "zw": np.int8(0), "sy": np.float32(2.0), "zy": np.uint8(128)}
op = make_op("c", "QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy"], ["y"], {"pads": (1, 1, 1, 1)},
             {"x": TensorSpec("x", (1, 128, 56, 56), "uint8")}, w)
values = [rng.integers(0, 256, (1, 128, 56, 56)).astype(np.uint8)]
seconds, exact = timed(op, values, reference_op(op, values)[0])
results["qconv 1x128x56x56 3x3x128"] = {"ms": seconds * 1e3, "exact": exact}
graph = load_graph("builtin:mobilenetv2")
feeds = {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in graph.inputs}
values = {k: dev.upload(v) for k, v in feeds.items()}
total = 0.0
for op in graph.ops_in_order():
    outs, seconds = dev.timed_run(op, [values[t] for t in op.activation_inputs])
    values.update(zip(op.outputs, outs))
    total += seconds
want = run_reference(graph, feeds)["logits"]
got = dev.download(values["logits"])
results["mobilenetv2 fp32 op-by-op"] = {"ms": total * 1e3, "rel_l2": float(np.linalg.norm(got - want) / np.linalg.norm(want))}
json.dump(results, open(sys.argv[1], "w"), indent=1)
print(json.dumps(results, indent=1))
PY
echo "benchmarks: exit $? (see $OUT/bench.log)"
exit $status
