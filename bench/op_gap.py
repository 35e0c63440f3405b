"""Op by op at one thread: the cpu plan's steps against onnxruntime's own profile of the same QDQ model.

Run: ``.venv/bin/python bench/op_gap.py [--models mobilenet_v2,mnasnet-like,seed-cnn] [--repeat 30]
[--top 15] [--all]`` (a model is any name bench/kernels.py takes).

Both sides run one thread on the same QDQ model (bench/kernels.py's quantization) and input.
onnxruntime (one intra-op thread, its profiler on) reports each fused node's kernel time; the cpu
device's plan (threads=1) reports each step's time (``CpuPlan.run(observe=..., timed=True)``: the
step's run closure with its output allocation, wall clock). Medians over ``--repeat`` runs, taken
alternately (one onnxruntime run, one plan run) so load hits both alike. An ORT node is matched to
our op by name (ORT names a fused QDQ node ``<our op name>_token_<k>``), else to the next unmatched
op of the same type in order; what is left (ORT's layout Transposes) is listed as one side only
(the plan's own layout conversions are not ops and are not timed here). Prints the worst ops by
time lost (ours - ORT), the ratio ours/ORT, the op's output shape (NCHW) and, for convs,
kernel/stride/group. Both sides are wall clock: on a shared machine compare ratios taken in one
run, not absolute microseconds across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import load_text, model_spec  # noqa: E402  (bench/kernels.py)

from hetero.backends import open_device  # noqa: E402
from hetero.errors import HeteroError  # noqa: E402
from hetero.ir.onnx_import import import_onnx  # noqa: E402
from hetero.quant.lowering import lower_qdq  # noqa: E402
from hetero.quant.precision import quantized_onnx  # noqa: E402

TOKEN = re.compile(r"_token_\d+$")
#: threads on both sides (--threads; onnxruntime spins with more than one, as it does by default)
THREADS = [1]


def ort_profile(model_bytes: bytes, feeds: dict, repeat: int, between) -> dict[str, list]:
    """onnxruntime at one thread with its profiler on: per node name, (op type, output shape,
    microseconds per run). ``between()`` runs after each profiled run (the other side's turn)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS[0]
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if THREADS[0] > 1 else "0")
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "hetero-op-gap")
    sess = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, feeds)
    for _ in range(repeat):
        sess.run(None, feeds)
        between()
    path = sess.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        os.unlink(path)
    nodes: dict[str, list] = {}
    order: list[str] = []
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        if name not in nodes:
            shape = e["args"].get("output_type_shape") or [{}]
            nodes[name] = [e["args"]["op_name"], next(iter(shape[0].values()), []), []]
            order.append(name)
        nodes[name][2].append(float(e["dur"]))
    # the warm-up runs come first: keep each node's last ``repeat`` samples
    return {name: [nodes[name][0], nodes[name][1], nodes[name][2][-repeat:]] for name in order}


def describe(op) -> str:
    """Output shape (NCHW), and k/s/g for a conv."""
    spec = op.output_specs[0]
    text = "x".join(map(str, spec.shape))
    if op.type == "QLinearConv":
        w = op.weights[op.inputs[3]]
        stride = op.attrs.get("strides", (1, 1))[0]
        text += f" k{w.shape[2]} s{stride} g{op.attrs.get('group', 1)} cin{op.input_specs[0].shape[1]}"
    return text


def op_gap(model: str, repeat: int) -> list[tuple]:
    """Rows (label, type, shape, our us, ORT us) for one model."""
    qdq = quantized_onnx(model_spec(model))
    graph = lower_qdq(import_onnx(qdq, label=model))
    spec = graph.inputs[0]
    feeds = {spec.name: np.random.default_rng(1).random(spec.shape, dtype=np.float32)}
    plan = open_device("cpu", threads=THREADS[0]).plan_for(graph)
    ours: dict[str, list[float]] = defaultdict(list)

    def observe(op, outputs, times) -> None:
        ours[op.name].append(times[0])

    def our_run() -> None:
        plan.run(feeds, observe=observe, timed=True)

    for _ in range(5):
        our_run()
    ours.clear()
    theirs = ort_profile(qdq.SerializeToString(), feeds, repeat, our_run)
    ops = [instr.step.op for instr in plan.instrs if instr.step is not None]
    matched: dict[str, str] = {}
    by_name = {op.name: op for op in ops}
    for name in theirs:
        if TOKEN.sub("", name) in by_name and TOKEN.sub("", name) not in matched.values():
            matched[name] = TOKEN.sub("", name)
    left = [op for op in ops if op.name not in matched.values()]
    for name, (kind, _, _) in theirs.items():
        if name in matched:
            continue
        same = next((op for op in left if op.type == kind), None)
        if same is not None:
            matched[name] = same.name
            left.remove(same)
    rows = []
    for name, (kind, shape, samples) in theirs.items():
        ort_us = statistics.median(samples)  # ORT reports microseconds
        if name in matched:
            op = by_name[matched[name]]
            rows.append((op.name, op.type, describe(op), 1e6 * statistics.median(ours[op.name]), ort_us))
        else:
            rows.append((f"(ORT only) {name}", kind, "x".join(map(str, shape)), 0.0, ort_us))
    for op in left:
        rows.append((op.name, op.type, describe(op), 1e6 * statistics.median(ours[op.name]), 0.0))
    return rows


def print_table(model: str, rows: list[tuple], top: int, show_all: bool) -> None:
    ours_total = sum(r[3] for r in rows)
    ort_total = sum(r[4] for r in rows)
    print(f"\n{model}: one thread, median per op ({load_text()}); steps sum {ours_total:.0f} us, "
          f"ORT nodes sum {ort_total:.0f} us ({ort_total / max(ours_total, 1e-9):.2f}x ORT/ours)")
    shown = rows if show_all else sorted(rows, key=lambda r: r[4] - r[3])[:top]
    print(f"  {'op':<46} {'type':<16} {'shape':<34} {'ours us':>8} {'ORT us':>8} {'ours/ORT':>9} {'lost us':>8}")
    for name, kind, shape, us, ort_us in shown:
        ratio = f"{us / ort_us:8.2f}x" if ort_us > 0 and us > 0 else f"{'-':>9}"
        label = name if len(name) <= 46 else "..." + name[-43:]
        print(f"  {label:<46} {kind:<16} {shape:<34} {us:>8.1f} {ort_us:>8.1f} {ratio} {us - ort_us:>8.1f}")
    by_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for _, kind, _, us, ort_us in rows:
        by_type[kind][0] += us
        by_type[kind][1] += ort_us
    print("  by type: " + ", ".join(f"{k} {a:.0f}/{b:.0f}" for k, (a, b) in sorted(by_type.items(), key=lambda kv: -kv[1][0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,mnasnet-like,seed-cnn")
    parser.add_argument("--repeat", type=int, default=30, help="profiled runs per side (medians)")
    parser.add_argument("--top", type=int, default=15, help="rows: the ops losing the most time")
    parser.add_argument("--all", action="store_true", help="every op in ORT's order instead of the worst")
    parser.add_argument("--threads", type=int, default=1, help="threads on both sides (onnxruntime spinning above 1)")
    args = parser.parse_args()
    THREADS[0] = args.threads
    try:
        for model in args.models.split(","):
            print_table(model, op_gap(model, args.repeat), args.top, args.all)
    except HeteroError as err:
        sys.exit(f"bench/op_gap.py: error: {err}")


if __name__ == "__main__":
    main()
