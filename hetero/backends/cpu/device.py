"""The CPU device: numba kernels on host memory, with an exact int8 GEMM (AVX-512 VNNI).

Every registered op type has a kernel in float32 and, where ONNX defines one, in int8 and
uint8; ``conditions`` declares the forms a kernel does not handle so that ``supports`` is
truthful. Data-movement ops (Reshape, Transpose, Concat, Slice, ...) are numpy views and
copies of host arrays, which is what a CPU does for them. ``threads`` caps numba's worker
threads during each op (BLAS runs single-threaded inside them); ``throttle`` >= 1 slows the
device down for real by sleeping (throttle - 1) times each op's measured time after it.
Opening the first CpuDevice runs one start-up step, ``start_threads_passive`` (OpenMP workers
sleep between kernels instead of spinning); importing this module changes nothing.
``plan_for(graph)`` compiles a whole graph once (``plan.CpuPlan``: channels-last int8, weights
packed, fused epilogues), which ``run_on_device`` uses; ``run(op, ...)`` runs the same plan step
per op on NCHW arrays, converting layouts at the op's boundary (the profiler, conformance);
``run_native`` (the runtime's ``timed_run_native``) keeps each output in the layout its step
wrote (``plan.CpuBuffer``), so a partition converts only at its boundaries, as the plan does.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import ExitStack
from typing import Any, Callable, Mapping, Sequence

import numba
import numpy as np

from hetero.backends.base import Buffer, DeviceInfo, HostDevice, Kernel, Predicate
from hetero.backends.cpu import helpers, native_jobs
from hetero.backends.cpu.kernels_float import FLOAT_KERNELS, reference
from hetero.backends.cpu.kernels_qtransformer import QTRANSFORMER_KERNELS
from hetero.backends.cpu.kernels_quant import QUANT_KERNELS
from hetero.backends.cpu.kernels_transformer import TRANSFORMER_CONDITIONS, TRANSFORMER_KERNELS
from hetero.backends.cpu.plan import CpuBuffer, CpuPlan, own_step, run_step_nchw
from hetero.backends.cpu.steps import NCHW, Step
from hetero.errors import DeviceError
from hetero.ir.graph import Graph, Op, TensorSpec

import scipy.linalg.cython_blas  # noqa: F401  - the BLAS numba's np.dot calls: loaded now, so it is capped too

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    ThreadpoolController = None

log = logging.getLogger(__name__)


_openmp_checked = False
_blas_limit = None  # the process-wide one-thread BLAS limit, held while the process lives


def limit_blas_to_one_thread() -> None:
    """Start-up step of the cpu device: BLAS runs on one thread in the whole process.

    The cpu device runs its BLAS calls (Conv, Gemm, MatMul) single-threaded and parallelises across
    numba's threads instead. A limit per op would be process-wide all the same (threadpoolctl
    changes the library's setting, not a thread's), so an op on another device running at that
    moment, e.g. a reference MatMul in a partitioned run, would flip between 1 and N BLAS threads
    and its float32 results between two roundings; one limit for the process keeps every run of
    the same placement bit-identical."""
    global _blas_limit
    if _blas_limit is None and ThreadpoolController is not None:
        _blas_limit = ThreadpoolController().limit(limits=1, user_api="blas")


def start_threads_passive() -> None:
    """Start-up step of the cpu device, run when the first CpuDevice is created: make numba's
    OpenMP workers sleep rather than spin between kernels, unless the user set OMP_WAIT_POLICY.

    Spinning workers cost each parallel kernel milliseconds on virtual machines (pause-loop
    exits; ~8 ms per kernel on a 2-core VM) and starve BLAS. libgomp reads OMP_WAIT_POLICY once,
    when numba starts its threading layer at the first parallel kernel, so this must run before
    that; a process that ran numba's parallel kernels earlier (e.g. the cpu GEMM called directly)
    keeps its spinning workers, which is logged.
    """
    global _openmp_checked
    if _openmp_checked:
        return
    _openmp_checked = True
    try:
        numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the setting still takes effect
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return
    if "OMP_WAIT_POLICY" not in os.environ:
        log.info("numba's threads started before the first cpu device was opened; OpenMP workers spin")


INT8 = ("int8", "uint8")


# --- data movement ------------------------------------------------------------------------


def _reshaped(device: HostDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    """Flatten, Reshape, Squeeze, Unsqueeze: a view with the inferred shape."""
    return [np.ascontiguousarray(inputs[0]).reshape(op.output_specs[0].shape)]


def _identity(device: HostDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    return [inputs[0]]


def _numpy(device: HostDevice, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
    """Transpose, Concat, Split, Slice, Gather, Cast: numpy copies on the host."""
    return reference(op, inputs)


MOVEMENT_KERNELS: dict[str, Kernel] = {
    **{name: _reshaped for name in ("Flatten", "Reshape", "Squeeze", "Unsqueeze")},
    **{name: _numpy for name in ("Transpose", "Concat", "Split", "Slice", "Gather", "Cast")},
    "Identity": _identity,
}


# --- conditions ---------------------------------------------------------------------------


def _spec(op: Op, index: int) -> TensorSpec | None:
    return op.input_specs[index] if index < len(op.input_specs) else None


def _dtype_is(index: int, *dtypes: str) -> Predicate:
    return lambda op: (spec := _spec(op, index)) is not None and spec.dtype in dtypes


def _constant(op: Op, index: int) -> bool:
    return index < len(op.inputs) and op.inputs[index] in op.weights


def _size(op: Op, index: int) -> int:
    """Elements of an optional input (1 when absent: a default per-tensor parameter)."""
    spec = _spec(op, index)
    return 1 if spec is None else math.prod(spec.shape)


def _rank(op: Op, index: int) -> int:
    spec = _spec(op, index)
    return -1 if spec is None else len(spec.shape)


def _all(*predicates: Predicate) -> Predicate:
    return lambda op: all(p(op) for p in predicates)


def _per_tensor(*indices: int) -> Predicate:
    """Optional inputs at these positions are absent or hold one value."""
    return lambda op: all(_size(op, i) == 1 for i in indices)


def _absent_or_constant(op: Op, index: int) -> bool:
    return index >= len(op.inputs) or not op.inputs[index] or op.inputs[index] in op.weights


def _qconv_ok(op: Op) -> bool:
    w, bias = _spec(op, 3), _spec(op, 8)
    if w is None or w.dtype not in INT8 or not _constant(op, 3):
        return False
    m = w.shape[0]
    bias_ok = bias is None or (_constant(op, 8) and bias.dtype == "int32")
    return bias_ok and _size(op, 4) in (1, m) and _size(op, 5) in (1, m)


def _qmatmul_ok(gemm: bool) -> Predicate:
    sy, zy = (7, 8) if gemm else (6, 7)

    def ok(op: Op) -> bool:
        a, b = _spec(op, 0), _spec(op, 3)
        if a is None or b is None or b.dtype not in INT8 or len(a.shape) < 2 or len(b.shape) < 2:
            return False
        if gemm and (len(b.shape) != 2 or _spec(op, sy) is None):
            return False
        c = _spec(op, 6) if gemm else None
        n = op.output_specs[0].shape[-1]
        return (c is None or c.dtype == "int32") and _size(op, 4) in (1, n) and _size(op, 5) in (1, n)

    return _all(_dtype_is(0, *INT8), _per_tensor(1, 2, sy, zy), ok)


def _qconcat_ok(op: Op) -> bool:
    zy = _spec(op, 1)
    if zy is None or zy.dtype not in INT8 or _size(op, 0) != 1 or _size(op, 1) != 1:
        return False
    parts = range(2, len(op.input_specs), 3)
    return all(_dtype_is(i, *INT8)(op) and _size(op, i + 1) == 1 and _size(op, i + 2) == 1 for i in parts)


def _same_dtypes(op: Op) -> bool:
    a, b = _spec(op, 0), _spec(op, 1)
    return a is not None and b is not None and a.dtype == b.dtype


FLOAT = _dtype_is(0, "float32")
NOT_BLOCKED = lambda op: _rank(op, 1) <= 1  # noqa: E731  - per-tensor or per-axis scales, not blocked
PLANAR = lambda op: _rank(op, 0) == 4  # noqa: E731  - windowed kernels handle 2-D windows (4-D input) only
CONDITIONS: dict[str, Predicate] = {
    "Conv": _all(FLOAT, PLANAR, _dtype_is(1, "float32"), lambda op: _constant(op, 1) and _absent_or_constant(op, 2)),
    "Gemm": _all(FLOAT, _dtype_is(1, "float32")),
    "MatMul": _all(FLOAT, _dtype_is(1, "float32")),
    **{name: _same_dtypes for name in ("Add", "Sub", "Mul", "Div")},
    **{name: FLOAT for name in ("Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax", "GlobalAveragePool", "ReduceMean")},
    "BatchNormalization": _all(FLOAT, lambda op: all(_constant(op, i) for i in range(1, 5))),
    "AveragePool": _all(FLOAT, PLANAR),
    "MaxPool": _all(PLANAR, _dtype_is(0, "float32", *INT8), lambda op: len(op.outputs) == 1),  # no Indices
    "QLinearConv": _all(PLANAR, _dtype_is(0, *INT8), _per_tensor(1, 2, 6, 7), _qconv_ok),
    "QGemm": _qmatmul_ok(gemm=True),
    "QLinearMatMul": _qmatmul_ok(gemm=False),
    "QLinearAdd": _all(_dtype_is(0, *INT8), _dtype_is(3, *INT8), _per_tensor(1, 2, 4, 5, 6, 7)),
    "QLinearAveragePool": _all(PLANAR, _dtype_is(0, *INT8), _per_tensor(1, 2, 3, 4)),
    "QLinearGlobalAveragePool": _all(_dtype_is(0, *INT8), _per_tensor(1, 2, 3, 4), lambda op: _rank(op, 0) == 4),
    "QLinearConcat": _qconcat_ok,
    "QLinearMul": _all(_dtype_is(0, *INT8), _dtype_is(3, *INT8), _per_tensor(1, 2, 4, 5, 6, 7)),
    "QLinearSoftmax": _all(_dtype_is(0, *INT8), _per_tensor(1, 2, 3, 4)),
    "QuantizeLinear": _all(FLOAT, NOT_BLOCKED),
    "DequantizeLinear": _all(NOT_BLOCKED, _dtype_is(0, "int8", "uint8", "int32")),
}


# --- the device ---------------------------------------------------------------------------

#: ops below this many FLOPs try one thread against all for their first runs and keep the faster:
#: on a 2-core VM, waking numba's second thread (passive OpenMP wait) costs ~50-100 us per
#: parallel region, more than a small op takes; bigger ops always use every thread. The int8
#: kernels run ~0.7 TOPS a thread, so an op under this bound takes ~0.5 ms on one: resnet18's
#: convolutions (0.1-0.24 GFLOPs) are all learned.
PARALLEL_MIN_FLOPS = 400_000_000
#: timed runs per choice (the fastest counts), after one untimed first run of the op: its first run
#: pays first-run costs (fresh output pages, cold weights) of up to milliseconds, which with two
#: trials could decide a small op's thread count (and so its profiled time) by accident.
THREAD_TRIALS = 3
#: runs in which an op that chose all threads is timed again where it then runs: among ops that
#: mostly run on one thread, the helper threads sleep and wake late (on a 2-vCPU VM: mobilenet_v2's
#: 1x1 convs 26-38 us on two threads in the trials, where every op used two, and 50-73 us once
#: their neighbours ran on one, against 35 us on one thread); the op then goes back to one thread.
CONFIRM_RUNS = 3


class CpuDevice(HostDevice):
    """numba kernels on the host CPU (numpy buffers)."""

    kernels: Mapping[str, Kernel] = {**FLOAT_KERNELS, **QUANT_KERNELS, **QTRANSFORMER_KERNELS, **MOVEMENT_KERNELS, **TRANSFORMER_KERNELS}
    conditions: Mapping[str, Predicate] = {**CONDITIONS, **TRANSFORMER_CONDITIONS}
    # float32 kernels computing the reference's arithmetic (hetero.ir.ops.mlas, IEEE division; Sigmoid:
    # MLAS's logistic; HardSwish and HardSigmoid: the reference's multiply, add and clamp, each rounded;
    # ReduceMean: the reference's summation where its output is quantized; BatchNormalization: x * s + b
    # with onnxruntime's float32 s and b, hetero.ir.ops.pool.batch_norm_float32)
    same_bits_as_reference = frozenset({"Softmax", "Erf", "Gelu", "Tanh", "LayerNormalization", "Div", "HardSwish", "HardSigmoid",
                                        "Sigmoid", "ReduceMean", "BatchNormalization"})

    def __init__(self, info: DeviceInfo, threads: int | None = None, throttle: float = 1.0) -> None:
        start_threads_passive()
        super().__init__(info)
        limit = numba.config.NUMBA_NUM_THREADS
        if threads is not None and not 1 <= int(threads) <= limit:
            raise DeviceError(f"device {info.name}: threads must be between 1 and {limit}, got {threads}")
        self.threads = None if threads is None else int(threads)
        self.throttle = throttle  # checked by Device
        self._preparing = 0.0
        self._supports: dict[int, tuple[Op, bool]] = {}
        self._thread_trials: dict[int, tuple[Op, dict]] = {}
        self._confirming: dict[int, Op] = {}  # ops on all threads being timed where they run
        self._plans: dict[int, tuple[Graph, CpuPlan]] = {}
        self._steps: dict[int, tuple[Op, dict[tuple[str, ...], Step | None]]] = {}  # per op: by input layouts
        self._segment_plans: dict[tuple, tuple[Graph, CpuPlan]] = {}  # runtime segments: by graph and input layouts
        limit_blas_to_one_thread()
        log.debug("opened %s with threads=%s throttle=%s", info.name, self.threads, self.throttle)

    def supports(self, op: Op) -> bool:
        """Whether a kernel here runs the op (decided once per op: run asks every time)."""
        known = self._supports.get(id(op))
        if known is None or known[0] is not op:
            known = self._supports[id(op)] = (op, super().supports(op))
        return known[1]

    def close(self) -> None:
        """Drop prepared weights, compiled plans and cached decisions."""
        super().close()
        self._supports.clear()
        self._plans.clear()
        self._steps.clear()
        self._segment_plans.clear()

    def plan_for(self, graph: Graph) -> CpuPlan | None:
        """The graph compiled for this device, built on first use and kept; None while a fault
        is injected (per-op runs count down to it). Raises DeviceError naming the first op
        without a kernel here."""
        if self._fail_countdown is not None:
            return None
        return self._compiled(self._plans, id(graph), graph)

    def _compiled(self, cache: dict, key: Any, graph: Graph, **options: Any) -> CpuPlan:
        """``cache[key]``'s plan of ``graph`` (CpuPlan ``options``), compiled on first use; DeviceError
        naming the first op without a kernel here."""
        entry = cache.get(key)
        if entry is None or entry[0] is not graph:
            for op in graph.ops_in_order():
                if not self.supports(op):
                    raise DeviceError(f"{self.why_not(op)}; run it on another device (hetero devices lists them)")
            entry = cache[key] = (graph, CpuPlan(self, graph, **options))
        return entry[1]

    def prepared(self, op: Op, make: Callable[[], Any]) -> Any:
        """Per-op state built once; the time spent building it is not counted by throttle."""

        def timed_make() -> Any:
            start = time.perf_counter()
            try:
                return make()
            finally:
                self._preparing += time.perf_counter() - start

        return super().prepared(op, timed_make)

    def _threads_for(self, op: Op) -> int | None:
        """Threads for this op: the device's cap for big ops; for the rest, whichever of one
        thread or the cap ran faster in the op's first runs (results are the same either way)."""
        if self.threads == 1 or numba.config.NUMBA_NUM_THREADS == 1:
            return self.threads
        if op.flops >= PARALLEL_MIN_FLOPS:
            return self.threads
        trials = self._thread_trials.setdefault(id(op), (op, {}))[1]
        chosen = trials.get("chosen")
        if chosen is not None:
            return None if chosen == 0 else int(chosen)
        one, cap = trials.get(1, []), trials.get(0, [])
        return 1 if len(one) <= len(cap) else self.threads

    def _learn_threads(self, op: Op, threads: int | None, seconds: float) -> None:
        entry = self._thread_trials.get(id(op))
        if entry is None or entry[0] is not op:
            return
        trials = entry[1]
        if "confirm" in trials:
            self._confirm_threads(op, trials, seconds)
            return
        if "chosen" in trials:
            return
        if "warmed" not in trials:  # the op's first run: not a trial
            trials["warmed"] = True
            return
        trials.setdefault(1 if threads == 1 else 0, []).append(seconds)
        if len(trials.get(1, [])) >= THREAD_TRIALS and len(trials.get(0, [])) >= THREAD_TRIALS:
            faster_alone = min(trials[1]) <= min(trials[0])
            trials["chosen"] = 1 if faster_alone else (self.threads or 0)
            if not faster_alone:
                trials["confirm"] = []
                self._confirming[id(op)] = op

    def _confirm_threads(self, op: Op, trials: dict, seconds: float) -> None:
        """An op that chose all threads, timed where it runs (CONFIRM_RUNS runs): slower than its
        best one-thread trial, it goes back to one thread, and the other ops still confirming start
        their runs again (one fewer op on all threads changes when the helpers are awake)."""
        trials["confirm"].append(seconds)
        if len(trials["confirm"]) < CONFIRM_RUNS:
            return
        where_it_runs = float(np.median(trials.pop("confirm")))
        self._confirming.pop(id(op), None)
        if where_it_runs <= min(trials[1]):
            return
        trials["chosen"] = 1
        for key, other in list(self._confirming.items()):
            entry = self._thread_trials.get(key)
            if entry is not None and entry[0] is other and "confirm" in entry[1]:
                entry[1]["confirm"] = []
            else:  # trials dropped or forced meanwhile (the kernel profiler's)
                del self._confirming[key]

    def settle_threads(self, op: Op, threads: int) -> None:
        """Fix ``op``'s thread count without trials: 1, or 0 for the device's cap (the kernel
        profiler times each choice this way; the speed probe runs on one thread). A plan built
        after this takes it as settled."""
        self._thread_trials[id(op)] = (op, {"chosen": int(threads), "warmed": True})

    def share_cores(self, sharing: bool) -> None:
        """Another device (an OpenCL CPU device) runs on these cores while ``sharing``: the
        native helper threads then sleep after each job instead of spinning for the next."""
        native_jobs.share_cores(sharing)

    def learning(self, graph: Graph) -> bool:
        """Whether the device is still choosing a thread count for an op of ``graph`` (its first
        runs: trials, then confirmation where it runs); timing loops warm up until it is not."""
        from hetero.backends.cpu.plan import _thread_count_settled

        skipped = {id(plan.graph.op(name)) for cache in (self._plans, self._segment_plans)
                   for _, plan in cache.values() for name in plan.skipped}  # fused away: never run
        return any(not _thread_count_settled(self, op) for op in graph.ops_in_order() if id(op) not in skipped)

    def _step(self, op: Op, available: tuple[str, ...] | None = None) -> Step | None:
        """The op's plan step for inputs in these layouts (default NCHW), built once (the time
        counts as preparation); None where the kernel table runs the op. A step already built
        for other layouts that wants exactly these is reused (weights packed once per op)."""
        if available is None:
            available = (NCHW,) * len(op.activation_inputs)
        entry = self._steps.get(id(op))
        if entry is None or entry[0] is not op:
            entry = self._steps[id(op)] = (op, {})
        variants = entry[1]
        if available not in variants:
            begin = time.perf_counter()
            step = next((s for s in variants.values() if s is not None and s.wants == available), None)
            if step is None and self.supports(op):
                step = own_step(self, op, available)
            self._preparing += time.perf_counter() - begin
            variants[available] = step
        return variants[available]

    def _launch(self, op: Op, body: Callable[[], list[Buffer]]) -> list[Buffer]:
        """Run ``body`` (one op) with the op's thread count, learn from its time, sleep as throttled."""
        self._preparing = 0.0
        start = time.perf_counter()
        with ExitStack() as stack:
            threads = self._threads_for(op)
            if threads is not None:
                previous = helpers.thread_count()
                helpers.set_thread_count(threads)
                stack.callback(helpers.set_thread_count, previous)
            outputs = body()
        elapsed = time.perf_counter() - start - self._preparing
        self._learn_threads(op, threads, elapsed)
        if self.throttle > 1.0:
            busy = time.perf_counter() - start - self._preparing
            time.sleep(max(0.0, (self.throttle - 1.0) * busy))
        return outputs

    def run(self, op: Op, inputs: Sequence[Buffer]) -> list[Buffer]:
        """Run one op on NCHW arrays with the device's thread cap, then sleep as the throttle says.
        An op with a plan step runs it (the same kernels as a compiled plan), layouts converted
        at its boundary; the outputs are NCHW arrays."""
        arrays = [x.as_layout(NCHW) if isinstance(x, CpuBuffer) else x for x in inputs]

        def body() -> list[Buffer]:
            step = self._step(op) if self._fail_countdown is None else None
            return HostDevice.run(self, op, arrays) if step is None else run_step_nchw(step, arrays)

        return self._launch(op, body)

    def run_native(self, op: Op, inputs: Sequence[Buffer]) -> list[CpuBuffer]:
        """Run one op on buffers kept in their own layouts (``CpuBuffer``; a plain array is NCHW)
        and return its outputs as ``CpuBuffer`` in the layouts its step wrote: the step is the
        one a compiled plan picks for inputs in these layouts, so a run of ops on this device
        converts only where a step wants the other layout, or at ``download``."""
        buffers = [x if isinstance(x, CpuBuffer) else CpuBuffer(np.asarray(x), NCHW) for x in inputs]
        available = tuple(b.layout for b in buffers)

        def body() -> list[Buffer]:
            step = self._step(op, available) if self._fail_countdown is None else None
            if step is None:
                return [CpuBuffer(y, NCHW) for y in HostDevice.run(self, op, [b.as_layout(NCHW) for b in buffers])]
            outputs = step.run([b.as_layout(form) for b, form in zip(buffers, step.wants)])
            return [CpuBuffer(y, form) for y, form in zip(outputs, step.gives)]

        return self._launch(op, body)

    def run_segment(self, graph: Graph, inputs: Mapping[str, Buffer]) -> tuple[dict[str, CpuBuffer], list] | None:
        """Run a graph of ops placed together here (a runtime segment: ``hetero.exec.segments``) as one
        compiled plan on buffers in their own layouts, compiled once per graph and input layouts;
        the outputs as ``CpuBuffer`` in the layouts their steps wrote, and ``(op, start, end)`` per op
        on the ``time.perf_counter`` clock. None while a fault is injected: the runtime then runs
        the ops one by one, which count down to it."""
        if self._fail_countdown is not None:
            return None
        buffers = {name: x if isinstance(x, CpuBuffer) else CpuBuffer(np.asarray(x), NCHW) for name, x in inputs.items()}
        layouts = tuple(buffers[spec.name].layout for spec in graph.inputs)
        plan = self._compiled(self._segment_plans, (id(graph), layouts), graph,
                              input_layouts={spec.name: form for spec, form in zip(graph.inputs, layouts)}, native=True)
        spans: list = []
        try:
            outputs = plan.run({name: buffers[name].array for name in buffers}, spans=spans)
        finally:
            native_jobs.rest()  # the runtime's own threads (queues, other devices) want the cores next
        return {name: CpuBuffer(array, plan.output_layouts[name]) for name, array in outputs.items()}, spans

    def timed_run_native(self, op: Op, inputs: Sequence[Buffer]) -> tuple[list[Buffer], float]:
        """``run_native`` timed on the host clock (the runtime's path on this device)."""
        start = time.perf_counter()
        outputs = self.run_native(op, inputs)
        return outputs, time.perf_counter() - start

    def upload(self, array: np.ndarray) -> CpuBuffer:
        """A host array as an NCHW buffer (its layout conversions, if a step asks for one, kept)."""
        return CpuBuffer(np.require(array, requirements="C"), NCHW)

    def download(self, buffer: Buffer) -> np.ndarray:
        """A buffer as an NCHW host array (a channels-last ``CpuBuffer`` converted, once)."""
        if isinstance(buffer, CpuBuffer):
            return buffer.as_layout(NCHW)
        return super().download(buffer)
