"""int8 kernels and end-to-end int8 latency on every device, against onnxruntime in the same run.

Run: ``.venv/bin/python bench/kernels.py [--threads 2] [--repeat 20] [--devices cpu]
[--models seed-cnn,resnet18,...] [--convs resnet18,mobilenet_v2] [--cpu-time]``
(a model is a builtin name, a name under ../shared/models, an .onnx path, or one of the untuned
CNNs bench/untuned_cnns.py builds: shufflenet-like, inception-like, mnasnet-like, efficientnet-like, mobilenetv3-like; fp32 models
are quantized first, with hetero's calibration).

1. int8 GEMM 1024x1024x1024 (QGemm op: uint8 activations, int8 per-channel weights, requantized
   output) on each device, timed by the device's own clock; onnxruntime's MatMulInteger on the
   same matrices and numpy float32 matmul as peers. Prints GOPS (2*M*N*K/s) and ratios.
2. End-to-end int8 latency (host input to host output, median of --repeat runs after warm-up)
   of each model's QDQ form on each device, and onnxruntime on the same QDQ model with the same
   thread count, with its default spinning worker threads and with spinning off (as the cpu
   device's threads: spinning threads hold the second core into the next implementation's run).
   Prints the ratio onnxruntime/hetero (above 1: hetero is faster).
3. Where the cpu device's time goes on each model: its compiled plan's kernels, layout
   conversions and dispatch (the plan's Python per op), median of --repeat runs.
4. Op level: every distinct QLinearConv of the --convs models (from their QDQ lowering) as a
   one-op graph on the cpu device and as a one-node QLinearConv model in onnxruntime, both NCHW
   in and out: GOPS (2*MACs/s) and the ratio; and the cpu plan's step alone on an NHWC input
   (what the op costs inside a compiled plan, where no layout changes around it).
   ``--blocks``: each implementation runs alone in blocks of back-to-back runs, the blocks
   alternating (what ``hetero run --repeat`` measures; interleaving run by run, the default,
   makes every run start with the caches and thread state another implementation left).
5. ``--cpu-time``: instead of 1-4, each model on one thread, hetero's cpu device and onnxruntime
   (one intra-op thread) alternating, timed by the CPU time of the calling thread (where both
   run all their work at one thread): far less moved by other processes on a shared machine
   than wall-clock latency, which waits for the core. Prints medians and the ratio.
6. ``--processes``: end to end, each implementation in a process of its own (hetero's cpu
   device as ``hetero run --device cpu --repeat`` runs it; onnxruntime spinning, as it comes, and
   not spinning), the processes alternating for ``--rounds`` rounds; each warms up (the cpu
   device until its thread choices settle), then times ``--repeat`` back-to-back runs. Two
   thread pools in one process disturb each other: a spinning pool holds the second core for
   milliseconds after its run, into the next implementation's. Prints the medians over all
   rounds and the ratio onnxruntime/hetero, and checks the outputs are equal.
Runs alternate between implementations so background load hits all alike; the load average
is printed with each table (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetero.backends import open_device
from hetero.backends.cpu.plan import to_nhwc
from hetero.backends.discovery import discover
from hetero.errors import HeteroError
from hetero.exec.executor import run_on_device
from hetero.ir.graph import Graph, TensorSpec, make_op
from hetero.quant.lowering import lower_qdq
from hetero.ir.onnx_import import import_onnx
from hetero.quant.precision import quantized_onnx

import untuned_cnns

SIZE = 1024
SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def model_spec(name: str) -> str:
    """A MODEL argument for a bench name: an .onnx path, a shared test model, or a builtin."""
    if name.endswith(".onnx"):
        return name
    if name in untuned_cnns.BUILDERS:
        folder = Path(tempfile.gettempdir()) / "hetero-bench-untuned"
        folder.mkdir(exist_ok=True)
        return str(untuned_cnns.saved(name, folder))
    shared = SHARED_MODELS / f"{name}.onnx"
    return str(shared) if shared.exists() else f"builtin:{name}"


def load_text() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def session(model_bytes: bytes, threads: int, spinning: bool = True) -> ort.InferenceSession:
    """onnxruntime on the CPU; ``spinning=False``: its worker threads sleep between runs, as the
    cpu device's do (by default they spin and hold the other core right after each run)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def interleaved(runners: dict, repeat: int, reference: np.ndarray) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of each runner's ``repeat`` runs, taken in turn, and the share of outputs equal to ``reference``."""
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
    return times, same


def in_blocks(runners: dict, repeat: int, reference: np.ndarray, rounds: int = 5) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Like :func:`interleaved`, but each runner runs alone in blocks of back-to-back runs (as
    ``hetero run --repeat`` and an onnxruntime loop do: its caches and threads as its own last run
    left them), the blocks alternating between runners for ``rounds`` rounds so load hits all alike;
    3 untimed runs open each block."""
    for fn in runners.values():
        for _ in range(6):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    same: dict[str, float] = {}
    per_block = max(1, repeat // rounds)
    for _ in range(rounds):
        for name, fn in runners.items():
            for _ in range(3):
                fn()
            for _ in range(per_block):
                start = time.perf_counter()
                out = fn()
                times[name].append(time.perf_counter() - start)
            same[name] = float(np.mean(out == reference))
    return times, same


def model_bench(model: str, devices: list[str], threads: int, repeat: int, blocks: bool = False) -> tuple[str, float, float, float, float] | None:
    """Two interleaved phases: onnxruntime with its threads not spinning (as the cpu device's),
    then onnxruntime as it comes (spinning), each against every device."""
    qdq = quantized_onnx(model_spec(model))
    graph = lower_qdq(import_onnx(qdq, label=model))
    spec = graph.inputs[0]
    x = np.random.default_rng(1).random(spec.shape, dtype=np.float32)
    quiet_session = session(qdq.SerializeToString(), threads, spinning=False)
    reference = quiet_session.run(None, {spec.name: x})[0]
    ours = {}
    for name in devices:
        device = open_device(name, threads=threads) if name == "cpu" else open_device(name)
        ours[name] = lambda d=device: run_on_device(graph, d, {spec.name: x})[graph.outputs[0].name]
    order = "in alternating blocks of back-to-back runs" if blocks else "interleaved run by run"
    print(f"\n{model} int8 end to end ({threads} threads, median of {repeat}, host input to host output, {order})")
    print(f"  {'device':<26} {'ms':>9} {'p90 ms':>9} {'onnxruntime/this':>17} {'outputs = ORT':>14}")
    medians = {}
    for phase in ("ort, not spinning", "ort, spinning"):
        peer_session = quiet_session if phase == "ort, not spinning" else session(qdq.SerializeToString(), threads)

        def peer(peer_session: ort.InferenceSession = peer_session) -> np.ndarray:
            return peer_session.run(None, {spec.name: x})[0]

        times, same = (in_blocks if blocks else interleaved)({phase: peer, **ours}, repeat, reference)
        ort_ms = median_ms(times[phase])
        print(f"  ({load_text()})")
        for name, samples in times.items():
            ms = median_ms(samples)
            label = name if name == phase else f"{name} (vs {phase})"
            print(f"  {label:<26} {ms:>9.2f} {1e3 * float(np.percentile(samples, 90)):>9.2f} {ort_ms / ms:>16.2f}x {same[name]:>13.1%}")
            medians[label] = ms
    if "cpu" not in devices:
        return None
    cpu = open_device("cpu", threads=threads)
    plan = cpu.plan_for(graph)
    for _ in range(6):
        plan.run({spec.name: x})
    parts = plan.breakdown({spec.name: x}, repeat)
    ops = sum(1 for i in plan.instrs if i.step is not None)
    print(f"  cpu plan: {1e3 * parts['total']:.2f} ms = kernels {1e3 * parts['kernels']:.2f} + layout "
          f"{1e3 * parts['layout']:.2f} + dispatch {1e3 * parts['dispatch']:.2f} ms ({ops} ops, "
          f"{1e6 * parts['dispatch'] / max(ops, 1):.1f} us dispatch per op)")
    return (model, medians["ort, not spinning"], medians["cpu (vs ort, not spinning)"], medians["ort, spinning"],
            medians["cpu (vs ort, spinning)"])


def conv_bench(model: str, threads: int, repeat: int) -> None:
    """Every distinct QLinearConv of a model: the cpu device's one-op graph against onnxruntime's one node."""
    qdq = quantized_onnx(model_spec(model))
    graph = lower_qdq(import_onnx(qdq, label=model))
    cpu = open_device("cpu", threads=threads)
    seen: dict[str, object] = {}
    for op in graph.ops_in_order():
        if op.type == "QLinearConv":
            seen.setdefault(op.signature(), op)
    rng = np.random.default_rng(0)
    print(f"\n{model}: QLinearConv shapes ({threads} threads, median of {repeat}; one op, NCHW in and out; {load_text()})")
    print(f"  {'input -> output':<30} {'k':>3} {'s':>2} {'g':>4} {'hetero us':>10} {'GOPS':>7} {'ORT us':>9} {'GOPS':>7} {'ORT/this':>9} "
          f"{'step us':>9} {'GOPS':>7} {'ORT/step':>9}")
    for op in seen.values():
        spec = op.input_specs[0]
        one = Graph.build([op], [spec], [op.outputs[0]], name=op.name)
        x = rng.integers(0, 256, spec.shape).astype(spec.dtype) if spec.dtype == "uint8" else \
            rng.integers(-128, 128, spec.shape).astype(spec.dtype)
        node = helper.make_node("QLinearConv", [n if n else "" for n in op.inputs], [op.outputs[0]],
                                **{k: list(v) if isinstance(v, tuple) else v for k, v in op.attrs.items() if k not in ("qmin", "qmax")})
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in op.weights.items()]
        dtype = TensorProto.UINT8 if spec.dtype == "uint8" else TensorProto.INT8
        onnx_graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info(spec.name, dtype, list(spec.shape))],
                                       [helper.make_tensor_value_info(op.outputs[0], dtype, None)], inits)
        model_proto = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13)])
        model_proto.ir_version = 8
        ort_session = session(model_proto.SerializeToString(), threads)
        step = next(i.step for i in cpu.plan_for(one).instrs if i.step is not None)
        x_nhwc = to_nhwc(x)

        def step_alone(step=step, x_nhwc=x_nhwc) -> None:
            """The step with the thread count the device learned for it (as a plan runs it)."""
            chosen = cpu._threads_for(step.op)
            previous = numba.get_num_threads()
            numba.set_num_threads(previous if chosen is None else chosen)
            try:
                step.run([x_nhwc])
            finally:
                numba.set_num_threads(previous)

        runners = {"hetero": lambda: run_on_device(one, cpu, {spec.name: x}), "ort": lambda: ort_session.run(None, {spec.name: x}),
                   "step": step_alone}
        for fn in runners.values():
            for _ in range(5):
                fn()
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(repeat):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        ours, theirs, inner = (statistics.median(times[name]) for name in ("hetero", "ort", "step"))
        w = op.weights[op.inputs[3]]
        ops = 2.0 * np.prod(op.output_specs[0].shape) * np.prod(w.shape[1:])
        shapes = f"{'x'.join(map(str, spec.shape[1:]))} -> {'x'.join(map(str, op.output_specs[0].shape[1:]))}"
        print(f"  {shapes:<30} {w.shape[2]:>3} {op.attrs.get('strides', (1, 1))[0]:>2} {op.attrs.get('group', 1):>4} "
              f"{1e6 * ours:>10.1f} {ops / ours / 1e9:>7.1f} {1e6 * theirs:>9.1f} {ops / theirs / 1e9:>7.1f} {theirs / ours:>8.2f}x "
              f"{1e6 * inner:>9.1f} {ops / inner / 1e9:>7.1f} {theirs / inner:>8.2f}x")


def cpu_time_bench(models: list[str], repeat: int) -> None:
    """Per model: CPU time of the calling thread per inference, one thread, hetero cpu vs onnxruntime."""
    print(f"\nint8 end to end, one thread, CPU time of the calling thread per run (median of {repeat}; {load_text()})")
    print(f"  {'model':<18} {'ORT ms':>9} {'hetero cpu ms':>14} {'onnxruntime/this':>17} {'outputs = ORT':>14}")
    for model in models:
        qdq = quantized_onnx(model_spec(model))
        graph = lower_qdq(import_onnx(qdq, label=model))
        spec = graph.inputs[0]
        feeds = {spec.name: np.random.default_rng(1).random(spec.shape, dtype=np.float32)}
        peer = session(qdq.SerializeToString(), 1)
        cpu = open_device("cpu", threads=1)
        name = graph.outputs[0].name
        same = float(np.mean(run_on_device(graph, cpu, feeds)[name] == peer.run(None, feeds)[0]))
        for _ in range(10):
            run_on_device(graph, cpu, feeds)
            peer.run(None, feeds)
        ours, theirs = [], []
        for _ in range(repeat):
            start = time.thread_time()
            run_on_device(graph, cpu, feeds)
            middle = time.thread_time()
            peer.run(None, feeds)
            ours.append(middle - start)
            theirs.append(time.thread_time() - middle)
        ours_ms, theirs_ms = median_ms(ours), median_ms(theirs)
        print(f"  {model:<18} {theirs_ms:>9.3f} {ours_ms:>14.3f} {theirs_ms / ours_ms:>16.2f}x {same:>13.1%}")


IMPLEMENTATIONS = ("ort", "ort-nospin", "cpu")


def child(kind: str, model_file: str, input_file: str, threads: int, repeat: int) -> None:
    """One implementation alone in this process: warm up, time ``repeat`` runs, print JSON."""
    import hashlib
    import json

    import onnx

    x = np.load(input_file)
    if kind == "cpu":
        graph = lower_qdq(import_onnx(onnx.load(model_file), label=Path(model_file).stem))
        device = open_device("cpu", threads=threads)
        feeds = {graph.inputs[0].name: x}

        def run() -> np.ndarray:
            return run_on_device(graph, device, feeds)[graph.outputs[0].name]

        for _ in range(200):  # until every op's thread count is settled (CpuDevice.learning)
            run()
            if not device.learning(graph):
                break
    else:
        peer = session(Path(model_file).read_bytes(), threads, spinning=kind == "ort")
        name = peer.get_inputs()[0].name

        def run() -> np.ndarray:
            return peer.run(None, {name: x})[0]

    for _ in range(5):
        run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        samples.append(time.perf_counter() - start)
    print(json.dumps({"samples": samples, "output": hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest()}))


def process_bench(models: list[str], threads: int, repeat: int, rounds: int) -> None:
    """Each implementation in its own process, alternating (section 6 of the docstring)."""
    import json
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in models:
            qdq = quantized_onnx(model_spec(model))
            model_file, input_file = Path(folder) / f"{model}.onnx", Path(folder) / f"{model}.npy"
            model_file.write_bytes(qdq.SerializeToString())
            graph = lower_qdq(import_onnx(qdq, label=model))
            np.save(input_file, np.random.default_rng(1).random(graph.inputs[0].shape, dtype=np.float32))
            samples: dict[str, list[float]] = {kind: [] for kind in IMPLEMENTATIONS}
            outputs: dict[str, set[str]] = {kind: set() for kind in IMPLEMENTATIONS}
            for _ in range(rounds):
                for kind in IMPLEMENTATIONS:
                    done = subprocess.run([sys.executable, __file__, "--child", kind, "--model-file", str(model_file),
                                           "--input", str(input_file), "--threads", str(threads), "--repeat", str(repeat)],
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"bench/kernels.py: {kind} on {model} failed: {done.stderr.strip().splitlines()[-1:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    samples[kind].extend(result["samples"])
                    outputs[kind].add(result["output"])
            same = outputs["cpu"] == outputs["ort"] == outputs["ort-nospin"] and len(outputs["cpu"]) == 1
            ms = {kind: median_ms(values) for kind, values in samples.items()}
            rows.append((model, ms, same))
            print(f"  {model}: ort {ms['ort']:.3f} ms, ort not spinning {ms['ort-nospin']:.3f} ms, hetero cpu "
                  f"{ms['cpu']:.3f} ms ({load_text()})", flush=True)
    print(f"\nsummary: cpu device against onnxruntime, {threads} threads, each in its own process, {rounds} alternating "
          f"rounds of {repeat} runs ({load_text()})")
    print("  | model | ORT spinning ms | ORT not spinning ms | hetero cpu ms | vs spinning | vs not spinning | outputs equal |")
    print("  | --- | --- | --- | --- | --- | --- | --- |")
    for model, ms, same in rows:
        print(f"  | {model} | {ms['ort']:.2f} | {ms['ort-nospin']:.2f} | {ms['cpu']:.2f} | {ms['ort'] / ms['cpu']:.2f}x | "
              f"{ms['ort-nospin'] / ms['cpu']:.2f}x | {'yes' if same else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--models", default="seed-cnn,resnet18,mobilenet_v2,squeezenet1_1," + ",".join(untuned_cnns.BUILDERS))
    parser.add_argument("--convs", default="resnet18,mobilenet_v2", help="models whose conv shapes to time ('' for none)")
    parser.add_argument("--devices", help="default: every usable device but reference")
    parser.add_argument("--cpu-time", action="store_true", help="one thread, CPU time per run, cpu device vs onnxruntime only")
    parser.add_argument("--blocks", action="store_true", help="end to end: each implementation alone in alternating blocks of "
                        "back-to-back runs (as hetero run --repeat runs), not interleaved run by run")
    parser.add_argument("--processes", action="store_true", help="end to end: each implementation in its own process, "
                        "alternating (no two thread pools in one process)")
    parser.add_argument("--rounds", type=int, default=3, help="--processes: alternating rounds")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--model-file", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_file, args.input, args.threads, args.repeat)
        return
    if args.processes:
        try:
            process_bench(args.models.split(","), args.threads, args.repeat, args.rounds)
        except HeteroError as err:
            sys.exit(f"bench/kernels.py: error: {err}")
        return
    if args.cpu_time:
        try:
            cpu_time_bench(args.models.split(","), args.repeat)
        except HeteroError as err:
            sys.exit(f"bench/kernels.py: error: {err}")
        return
    usable, absent = discover()
    devices = args.devices.split(",") if args.devices else [d.name for d in usable if d.kind != "reference"]
    print(f"devices: {', '.join(devices)}")
    for entry in absent:
        print(f"  not benchmarked: {entry.kind}: {entry.reason}")
    try:
        for name in devices:  # every device named must be usable before anything is timed
            open_device(name).close()
        gemm_bench(devices, args.threads, max(5, args.repeat // 2))
        summary = []
        for model in args.models.split(","):
            row = model_bench(model, devices, args.threads, args.repeat, args.blocks)
            if row is not None:
                summary.append(row)
        for model in filter(None, args.convs.split(",")):
            conv_bench(model, args.threads, args.repeat)
        if summary:
            order = "alternating blocks" if args.blocks else "interleaved"
            print(f"\nsummary: cpu device against onnxruntime, {args.threads} threads, {order} ({load_text()})")
            print("  | model | ORT not spinning ms | hetero cpu ms | ratio | ORT spinning ms | hetero cpu ms | ratio |")
            print("  | --- | --- | --- | --- | --- | --- | --- |")
            for model, quiet_ms, cpu_quiet_ms, spin_ms, cpu_spin_ms in summary:
                print(f"  | {model} | {quiet_ms:.2f} | {cpu_quiet_ms:.2f} | {quiet_ms / cpu_quiet_ms:.2f}x | {spin_ms:.2f} | "
                      f"{cpu_spin_ms:.2f} | {spin_ms / cpu_spin_ms:.2f}x |")
    except HeteroError as err:
        sys.exit(f"bench/kernels.py: error: {err}")


if __name__ == "__main__":
    main()
