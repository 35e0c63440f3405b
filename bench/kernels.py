"""int8 kernels and end-to-end int8 latency on every device, against onnxruntime in the same run.

Run: ``.venv/bin/python bench/kernels.py [--threads 2] [--repeat 20] [--models seed-cnn,resnet18]``

1. int8 GEMM 1024x1024x1024 (QGemm op: uint8 activations, int8 per-channel weights, requantized
   output) on each device, timed by the device's own clock; onnxruntime's MatMulInteger on the
   same matrices and numpy float32 matmul as peers. Prints GOPS (2*M*N*K/s) and ratios.
2. End-to-end int8 latency (host input to host output, median of --repeat runs after warm-up)
   of the seed CNN and resnet18 QDQ models on each device, and onnxruntime on the same QDQ model
   with the same thread count. Prints the ratio onnxruntime/hetero (above 1: hetero is faster).
Runs alternate between implementations so background load hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetero.backends import open_device
from hetero.backends.discovery import discover
from hetero.errors import HeteroError
from hetero.exec.executor import run_on_device
from hetero.ir.graph import TensorSpec, make_op
from hetero.quant.lowering import lower_qdq
from hetero.ir.onnx_import import import_onnx
from hetero.quant.precision import quantized_onnx

SIZE = 1024


def session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def gemm_bench(devices: list[str], threads: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    w = rng.integers(-127, 128, (SIZE, SIZE), dtype=np.int8)  # (N, K): Gemm with transB
    weights = {
        "sa": np.array(0.02, np.float32), "za": np.array(128, np.uint8), "w": w,
        "sw": rng.uniform(1e-3, 2e-3, SIZE).astype(np.float32), "zw": np.zeros(SIZE, np.int8),
        "bias": rng.integers(-1000, 1000, SIZE).astype(np.int32), "sy": np.array(0.5, np.float32), "zy": np.array(128, np.uint8),
    }
    spec = {"a": TensorSpec("a", (SIZE, SIZE), "uint8")}
    op = make_op("gemm", "QGemm", ["a", "sa", "za", "w", "sw", "zw", "bias", "sy", "zy"], ["y"], {"transB": 1}, spec, weights)
    ops = 2.0 * SIZE**3
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "za"], ["Y"])], "g",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [SIZE, SIZE])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [SIZE, SIZE])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "B"), numpy_helper.from_array(np.array(128, np.uint8), "za")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    ort_session = session(model.SerializeToString(), threads)
    af, bf = a.astype(np.float32), w.T.astype(np.float32)
    runners = {"onnxruntime MatMulInteger": lambda: (ort_session.run(None, {"A": a}), None)[1], "numpy fp32 matmul": lambda: (af @ bf, None)[1]}
    opened = {}
    for name in devices:
        device = open_device(name)
        buffer = device.upload(a)
        device.run(op, [buffer])
        opened[name] = (device, buffer)
    times: dict[str, list[float]] = {name: [] for name in list(runners) + devices}
    for _ in range(repeat):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        for name, (device, buffer) in opened.items():
            times[name].append(device.timed_run(op, [buffer])[1])
    ort_s = statistics.median(times["onnxruntime MatMulInteger"])
    print(f"\nint8 GEMM {SIZE}x{SIZE}x{SIZE} ({threads} threads, median of {repeat})")
    print(f"  {'implementation':<28} {'ms':>9} {'GOPS':>9} {'vs onnxruntime':>15}")
    for name, samples in times.items():
        seconds = statistics.median(samples)
        print(f"  {name:<28} {1e3 * seconds:>9.2f} {ops / seconds / 1e9:>9.1f} {ort_s / seconds:>14.2f}x")


def model_bench(model: str, devices: list[str], threads: int, repeat: int) -> None:
    qdq = quantized_onnx(f"builtin:{model}")
    graph = lower_qdq(import_onnx(qdq, label=model))
    spec = graph.inputs[0]
    x = np.random.default_rng(1).random(spec.shape, dtype=np.float32)
    ort_session = session(qdq.SerializeToString(), threads)
    reference = ort_session.run(None, {spec.name: x})[0]
    runners = {"onnxruntime": lambda: ort_session.run(None, {spec.name: x})[0]}
    for name in devices:
        device = open_device(name)
        runners[name] = lambda d=device: run_on_device(graph, d, {spec.name: x})[graph.outputs[0].name]
    for fn in runners.values():  # warm-up: compile kernels, pack weights, let the cpu device pick thread counts
        for _ in range(6):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    same: dict[str, float] = {}
    for _ in range(repeat):
        for name, fn in runners.items():
            start = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - start)
            same[name] = float(np.mean(out == reference))
    ort_ms = median_ms(times["onnxruntime"])
    print(f"\n{model} int8 end to end ({threads} threads, median of {repeat}, host input to host output)")
    print(f"  {'device':<14} {'ms':>9} {'p90 ms':>9} {'onnxruntime/this':>17} {'outputs = ORT':>14}")
    for name, samples in times.items():
        ms = median_ms(samples)
        print(f"  {name:<14} {ms:>9.2f} {1e3 * float(np.percentile(samples, 90)):>9.2f} {ort_ms / ms:>16.2f}x {same[name]:>13.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", default="seed-cnn,resnet18")
    parser.add_argument("--devices", help="default: every usable device but reference")
    args = parser.parse_args()
    usable, absent = discover()
    devices = args.devices.split(",") if args.devices else [d.name for d in usable if d.kind != "reference"]
    print(f"devices: {', '.join(devices)}")
    for entry in absent:
        print(f"  not benchmarked: {entry.kind}: {entry.reason}")
    try:
        for name in devices:  # every device named must be usable before anything is timed
            open_device(name).close()
        gemm_bench(devices, args.threads, max(5, args.repeat // 2))
        for model in args.models.split(","):
            model_bench(model, devices, args.threads, args.repeat)
    except HeteroError as err:
        sys.exit(f"bench/kernels.py: error: {err}")


if __name__ == "__main__":
    main()
