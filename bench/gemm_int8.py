"""Benchmark hetero's exact int8 GEMM against onnxruntime's int8 MatMul and numpy float32.

Run: ``.venv/bin/python bench/gemm_int8.py [--threads 2] [--repeats 25] [--shapes 1024x1024x1024]``
(shapes are MxKxN). Prints median (and best) GOPS, 2*M*N*K per second, weight packing
excluded, plus the hetero/onnxruntime throughput ratio. Run it on an otherwise idle machine:
every library here uses spin-waiting thread pools, which compete badly with other loads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from hetero.backends.cpu import gemm as cpu_gemm

DEFAULT_SHAPES = ["1024x1024x1024", "3136x576x64"]


def block_times(
    fns: dict[str, Callable[[], object]], repeats: int, rounds: int = 3, settle_s: float = 0.3
) -> dict[str, list[float]]:
    """Wall times of each function: ``rounds`` passes over all, each a warm block of calls.

    Calls to one implementation run back to back, with a pause before each block, so that
    one library's spinning worker threads do not steal the cores from the next; the rounds
    spread background load over all implementations alike.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    per_block = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(settle_s)
            fn()  # warm-up
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def ort_matmul_integer(b: np.ndarray, a_zp: int, threads: int) -> Callable[[np.ndarray], object]:
    """An onnxruntime session computing MatMulInteger(a, b, a_zp) with b as an initializer."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = b.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zp"], ["Y"])],
        "qgemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])],
        initializer=[
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(np.array(a_zp, np.uint8), "a_zp"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return lambda a: sess.run(None, {"A": a})[0]


def bench_shape(m: int, k: int, n: int, threads: int, repeats: int) -> float:
    """Time every implementation on one shape; return the hetero/onnxruntime ratio."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a_zp = 128
    ops = 2.0 * m * n * k
    packed = cpu_gemm.pack_weights(b)
    ort_fn = ort_matmul_integer(b, a_zp, threads)
    got = cpu_gemm.qgemm(a, a_zp, packed, threads=threads)
    if not np.array_equal(got, ort_fn(a)):
        raise SystemExit(f"mismatch between hetero and onnxruntime at {m}x{k}x{n}")
    af, bf = a.astype(np.float32), b.astype(np.float32)
    fast: dict[str, Callable[[], object]] = {}
    if cpu_gemm.HAS_VNNI:
        fast["hetero vnni"] = lambda: cpu_gemm.qgemm(a, a_zp, packed, threads=threads)
    fast["onnxruntime int8"] = lambda: ort_fn(a)
    fast["numpy float32"] = lambda: af @ bf
    times = block_times(fast, repeats)
    def portable() -> object:
        return cpu_gemm.qgemm(a, a_zp, packed, threads=threads, use_vnni=False)

    times |= block_times({"hetero portable": portable}, max(3, repeats // 5), rounds=1)
    print(f"M={m} K={k} N={n} threads={threads}")
    gops = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        gops[name] = ops / med / 1e9
        best = ops / min(ts) / 1e9
        print(f"  {name:18s} {gops[name]:8.1f} GOPS (best {best:7.1f})  {med * 1e3:8.3f} ms median")
    mine = gops.get("hetero vnni", gops["hetero portable"])
    ratio = mine / gops["onnxruntime int8"]
    print(f"  hetero/onnxruntime = {ratio:.2f}x (medians)")
    return ratio


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and benchmark each shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="MxKxN")
    args = parser.parse_args(argv)
    print(f"VNNI available: {cpu_gemm.HAS_VNNI}")
    for shape in args.shapes:
        m, k, n = (int(x) for x in shape.lower().split("x"))
        bench_shape(m, k, n, args.threads, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
