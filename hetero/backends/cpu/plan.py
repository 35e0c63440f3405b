"""A graph compiled once for the cpu device: steps in order, buffers in slots, layouts fixed.

``CpuPlan(device, graph)`` binds every op to a :class:`~hetero.backends.cpu.steps.Step`
(weights packed, arguments resolved), assigns each tensor a layout (NHWC inside runs of
channels-last ops, converted once where a consumer needs NCHW and at the graph outputs), and
numbers the buffers so a run is a loop over a list: a few microseconds of Python per op. Each
buffer is released after its last reader, and kept mapped by the allocator for the next run
(``memory.keep_freed_memory``). Thread counts per op follow the device's
one-thread-or-all learning; ``throttle`` and injected faults behave as in ``CpuDevice.run``.
:class:`CpuBuffer` (an array and its layout) carries tensors between per-op runs that keep
layouts too (``CpuDevice.run_native``: the runtime); ``LAYOUT_CONVERSIONS`` counts conversions.
"""

from __future__ import annotations

import logging
import threading
from collections import abc
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numba
import numpy as np

from hetero.backends.base import Device
from hetero.backends.cpu import kernels_nhwc as nk
from hetero.backends.cpu import helpers, native_jobs, steps, steps_dw
from hetero.backends.cpu.memory import keep_freed_memory
from hetero.backends.cpu.steps import NCHW, NHWC, Step, fallback
from hetero.backends.cpu.steps_conv import qconv, qgemm
from hetero.backends.cpu.tails import Tail, find_tails
from hetero.ir.graph import Graph, Op

if TYPE_CHECKING:
    from hetero.backends.cpu.device import CpuDevice

log = logging.getLogger(__name__)


def conv_step(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """QLinearConv: steps_dw's kernels for a depthwise conv, else steps_conv's."""
    step = steps_dw.depthwise(device, op, available)
    return step if step is not None else qconv(device, op, available)


FLOAT_ELEMENTWISE = frozenset(("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish"))
"""Float activations whose cpu kernels are elementwise (steps.float_unary runs them channels-last)."""


BUILDERS: dict[str, Callable[[Device, Op, tuple[str, ...]], Step | None]] = {
    "QLinearConv": conv_step,
    "QGemm": qgemm,
    "QLinearMatMul": qgemm,
    "QLinearAdd": steps.qadd,
    "MaxPool": steps.max_pool,
    "QLinearGlobalAveragePool": steps.qglobal_pool,
    "QLinearAveragePool": steps.qaverage_pool,
    "QLinearConcat": steps.qconcat,
    "QuantizeLinear": steps.quantize,
    "DequantizeLinear": steps.dequantize,
    "Mul": steps.float_mul,
    "BatchNormalization": steps.batch_norm_nhwc,
    **{name: steps.float_unary for name in FLOAT_ELEMENTWISE},
    "Transpose": steps.transpose,
    "Slice": steps.slice_nhwc,
    "Split": steps.split_nhwc,
    **{name: steps.reshape for name in ("Flatten", "Reshape", "Squeeze")},
}
"""Op types with a plan step of their own; the others run their kernel from the device's table."""


def own_step(device: Device, op: Op, available: tuple[str, ...]) -> Step | None:
    """The op's own plan step given the layouts its inputs are available in; None where the
    device's kernel table runs it."""
    builder = BUILDERS.get(op.type)
    if builder is None or not steps.only_data_is_activation(op):
        return None
    return builder(device, op, available)


def build_step(device: Device, op: Op, available: tuple[str, ...]) -> Step:
    """The op bound to its fastest cpu kernel given the layouts its inputs are available in."""
    step = own_step(device, op, available)
    return step if step is not None else fallback(device, op)


def run_step_nchw(step: Step, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One step on NCHW arrays, its layouts converted at the op's boundary (a per-op run)."""
    ready = [to_nhwc(x) if form == NHWC else x for x, form in zip(inputs, step.wants)]
    return [to_nchw(y) if form == NHWC else y for y, form in zip(step.run(ready), step.gives)]


# observe(op, outputs, (device_s, wall_s) or None), as the executor's hook
Observe = Callable[[Op, Sequence[np.ndarray], "tuple[float, float] | None"], None]


class StepOutputs(abc.Sequence):
    """A step's outputs as an observer sees them: NCHW, each converted when the observer reads it
    and only then. A profile's timing hook reads none, and converting every output between two
    timed ops (a copy of the whole activation, on one thread) evicted the next op's input from
    the caches and let the helper threads fall asleep: mobilenet_v2's ops summed 1.72 ms that way
    against 1.13 ms for a whole run. Valid only inside the hook: the plan reuses the buffers."""

    __slots__ = ("_raw", "_forms", "_done")

    def __init__(self, raw: Sequence[np.ndarray], forms: Sequence[str]) -> None:
        self._raw: Sequence[np.ndarray] | None = raw
        self._forms = forms
        self._done: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._forms)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._raw is None:
            raise RuntimeError("a plan step's outputs were read after its observe hook returned; copy them inside the hook")
        index = range(len(self))[index]
        if index not in self._done:
            buffer = self._raw[index]
            self._done[index] = to_nchw(buffer) if self._forms[index] == NHWC else buffer
        return self._done[index]

    def expire(self) -> None:
        self._raw = None


SMALL_BYTES = 65536
"""Tensors up to this size change layout by a numpy copy: launching a parallel kernel costs more."""


class ConversionCount:
    """How many NCHW<->NHWC conversions ``to_nhwc``/``to_nchw`` did in this process (all threads),
    so tests can check where a run converts layouts without timing it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


LAYOUT_CONVERSIONS = ConversionCount()


def _bytes(x: np.ndarray) -> np.ndarray:
    """An 8-bit array as uint8 (one compiled conversion for int8 and uint8), others as they are."""
    return x.view(np.uint8) if x.dtype.itemsize == 1 else x


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """An (N, C, H, W) array channels-last; an (N, A, B, H, W) one as (N, H, W, A, B)."""
    LAYOUT_CONVERSIONS.add()
    if x.ndim == 5:
        return np.ascontiguousarray(x.transpose(0, 3, 4, 1, 2))
    n, c, h, w = x.shape
    if h * w == 1 or c == 1:
        return np.ascontiguousarray(x).reshape(n, h, w, c)
    if x.nbytes <= SMALL_BYTES:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = np.empty((n, h, w, c), x.dtype)
    nk.nchw_to_nhwc(_bytes(np.ascontiguousarray(x)).reshape(n, c, h * w), _bytes(out).reshape(n, h * w, c))
    return out


def to_nchw(x: np.ndarray) -> np.ndarray:
    """An (N, H, W, C) array back to (N, C, H, W); an (N, H, W, A, B) one to (N, A, B, H, W)."""
    LAYOUT_CONVERSIONS.add()
    if x.ndim == 5:
        return np.ascontiguousarray(x.transpose(0, 3, 4, 1, 2))
    n, h, w, c = x.shape
    if h * w == 1 or c == 1:
        return x.reshape(n, c, h, w)
    if x.nbytes <= SMALL_BYTES:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    out = np.empty((n, c, h, w), x.dtype)
    nk.nhwc_to_nchw(_bytes(x).reshape(n, h * w, c), _bytes(out).reshape(n, c, h * w))
    return out


def _float_nhwc_chains(graph: Graph) -> set[str]:
    """DequantizeLinear ops whose float output may stay channels-last: the float ops it feeds
    (elementwise activations, Mul by a tensor of the same shape or an (N, C, 1, 1) gate: a
    squeeze-and-excitation gate, Swish, HardSwish; a per-channel BatchNormalization) are read only by each other and by
    QuantizeLinear ops, so the float tensors return to 8 bits without a layout conversion (of
    4-byte elements). Found as the largest such set: start from every candidate, drop any op with
    a reader outside it or a full-size float input from outside it, until none is dropped."""
    consumers: dict[str, list[Op]] = {}
    for op in graph.ops_in_order():
        for t in op.activation_inputs:
            consumers.setdefault(t, []).append(op)
    outputs = {spec.name for spec in graph.outputs}

    def full_size(spec) -> bool:
        return spec is not None and len(spec.shape) == 4 and spec.shape[2] * spec.shape[3] > 1

    region = {}
    for op in graph.ops_in_order():
        out = op.output_specs[0] if op.output_specs else None
        if out is None or not full_size(out) or out.dtype != "float32" or op.outputs[0] in outputs:
            continue
        if op.type == "DequantizeLinear" or op.type in FLOAT_ELEMENTWISE or op.type in ("Mul", "BatchNormalization"):
            region[op.outputs[0]] = op
    changed = True
    while changed:
        changed = False
        for tensor, op in list(region.items()):
            readers = consumers.get(tensor, [])
            ok = bool(readers) and all(r.outputs[0] in region or (r.type == "QuantizeLinear" and _per_tensor(r)) for r in readers)
            if op.type != "DequantizeLinear":
                ok = ok and all(t in region for t, spec in zip(op.inputs, op.input_specs)
                                if t in op.activation_inputs and full_size(spec))
            if not ok:
                del region[tensor]
                changed = True
    return {op.name for op in region.values() if op.type == "DequantizeLinear"}


def _per_tensor(op: Op) -> bool:
    scale = op.weights.get(op.inputs[1]) if len(op.inputs) > 1 else None
    return scale is not None and np.asarray(scale).size == 1


_LEARNING = object()
"""A plan instruction whose thread count the device is still learning."""


def _thread_count_settled(device: "CpuDevice", op: Op) -> bool:
    """Whether the device's one-thread-or-all choice for ``op`` is final (``_threads_for`` then
    returns the same every time)."""
    from hetero.backends.cpu.device import PARALLEL_MIN_FLOPS

    if device.threads == 1 or numba.config.NUMBA_NUM_THREADS == 1 or op.flops >= PARALLEL_MIN_FLOPS:
        return True
    entry = device._thread_trials.get(id(op))
    return entry is not None and entry[0] is op and "chosen" in entry[1] and "confirm" not in entry[1]


@dataclass(frozen=True)
class CpuBuffer:
    """A tensor on the cpu device in the layout the step that made it wrote (``NCHW`` or ``NHWC``),
    for runs that keep tensors native between ops (``CpuDevice.run_native``). ``as_layout``
    converts once per layout asked for and keeps the result."""

    array: np.ndarray
    layout: str
    _converted: dict = field(default_factory=dict, compare=False, repr=False)

    def as_layout(self, form: str) -> np.ndarray:
        """The tensor as an array in ``form`` (a 4-D or 5-D array is converted on first request)."""
        if form == self.layout or self.array.ndim not in (4, 5):
            return self.array
        found = self._converted.get(form)
        if found is None:
            found = self._converted[form] = to_nchw(self.array) if form == NCHW else to_nhwc(self.array)
        return found


@dataclass(frozen=True)
class Instr:
    """One step of the plan: a bound op (``step``) or a layout conversion (``step`` None)."""

    step: Step | None
    convert: Callable[[np.ndarray], np.ndarray] | None
    reads: tuple[int, ...]
    writes: tuple[int, ...]
    frees: tuple[int, ...]  # slots whose last reader this is
    tail: Tail | None = None  # a fused float tail (``tails``): the step runs ``covers``, its QuantizeLinear last
    covers: tuple[Op, ...] = ()


class _Replay:
    """The tensors of a fused tail's ops for an observer, recomputed by the reference from the
    fused step's inputs on first read (none when the hook reads no outputs, as a timing hook)."""

    def __init__(self, tail: Tail, inputs: Sequence[np.ndarray], forms: Sequence[str]) -> None:
        self._tail, self._inputs, self._forms = tail, inputs, forms
        self._values: dict[str, np.ndarray] | None = None

    def outputs(self, op: Op) -> "_ReplayOutputs":
        return _ReplayOutputs(self, op)

    def value(self, tensor: str) -> np.ndarray:
        if self._inputs is None:
            raise RuntimeError("a plan step's outputs were read after its observe hook returned; copy them inside the hook")
        if self._values is None:
            sources = [to_nchw(x) if form == NHWC and x.ndim in (4, 5) else x for x, form in zip(self._inputs, self._forms)]
            self._values = self._tail.replay(sources)
        return self._values[tensor]

    def expire(self) -> None:
        self._inputs = None
        self._values = None


class _ReplayOutputs(abc.Sequence):
    __slots__ = ("_replay", "_names")

    def __init__(self, replay: _Replay, op: Op) -> None:
        self._replay, self._names = replay, op.outputs

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._replay.value(self._names[range(len(self))[index]])


class CpuPlan:
    """A graph compiled for one CpuDevice; ``run(feeds)`` returns the outputs as NCHW arrays.

    ``input_layouts`` (by input name; default NCHW) says which inputs arrive channels-last, and
    ``native`` keeps every output in the layout its step wrote (``output_layouts`` says which),
    as the runtime's same-device segments need (``CpuDevice.run_segment``): a tensor crosses
    between two segments of the device without conversions. The steps come from the device's
    per-op cache (``CpuDevice._step``), so a plan and per-op runs share packed weights."""

    def __init__(self, device: "CpuDevice", graph: Graph, input_layouts: Mapping[str, str] | None = None,
                 native: bool = False) -> None:
        keep_freed_memory()
        self.device = device
        self.graph = graph
        input_layouts = dict(input_layouts or {})
        slots: dict[tuple[str, str], int] = {}
        layout: dict[str, str] = {}
        instrs: list[tuple] = []  # (step, convert, reads, writes[, tail, covers])

        def slot(tensor: str, form: str) -> int:
            return slots.setdefault((tensor, form), len(slots))

        def need(tensor: str, form: str) -> int:
            if (tensor, form) in slots:
                return slots[(tensor, form)]
            have = slots[(tensor, layout[tensor])]
            convert = to_nhwc if form == NHWC else to_nchw
            instrs.append((None, convert, (have,), (slot(tensor, form),)))
            return slots[(tensor, form)]

        self.input_slots = []
        for spec in graph.inputs:
            layout[spec.name] = input_layouts.get(spec.name, NCHW)
            self.input_slots.append((spec.name, slot(spec.name, layout[spec.name])))
        cached = getattr(device, "_step", None)  # own_step, built once per op and layouts (None: no own step)
        float_nhwc = _float_nhwc_chains(graph)
        tails = {tail.anchor.name: tail for tail in find_tails(graph)}
        self.skipped = _fused_away(graph, tails.values())
        for op in graph.ops_in_order():
            if op.name in self.skipped:
                continue
            tail = tails.get(op.name)
            if tail is not None:
                step = tail.step(tuple(layout[t] for t in tail.sources))
                reads = tuple(need(t, form) for t, form in zip(tail.sources, step.wants))
                layout[op.outputs[0]] = step.gives[0]
                covers = tuple(o for o in tail.ops if o.name in self.skipped or o is op)
                instrs.append((step, None, reads, (slot(op.outputs[0], step.gives[0]),), tail, covers))
                continue
            available = tuple(layout[t] for t in op.activation_inputs)
            if op.type == "DequantizeLinear" and op.name not in float_nhwc:
                available = (NCHW,) * len(available)  # its float output leaves for NCHW ops: convert the 8-bit input
            if cached is None:
                step = build_step(device, op, available)
            else:
                step = cached(op, available) or fallback(device, op)
            reads = tuple(need(t, form) for t, form in zip(op.activation_inputs, step.wants))
            for tensor, form in zip(op.outputs, step.gives):
                layout[tensor] = form
            writes = tuple(slot(t, form) for t, form in zip(op.outputs, step.gives))
            instrs.append((step, None, reads, writes))
        if native:
            self.output_slots = [(spec.name, slots[(spec.name, layout[spec.name])]) for spec in graph.outputs]
            self.output_layouts = {spec.name: layout[spec.name] for spec in graph.outputs}
        else:
            self.output_slots = [(spec.name, need(spec.name, NCHW)) for spec in graph.outputs]
            self.output_layouts = {spec.name: NCHW for spec in graph.outputs}
        keep = {s for _, s in self.output_slots}
        last: dict[int, int] = {}
        for index, entry in enumerate(instrs):
            for s in entry[2]:
                last[s] = index
        self.instrs = [
            Instr(*entry[:4], tuple(s for s in set(entry[2]) if last[s] == index and s not in keep), *entry[4:])
            for index, entry in enumerate(instrs)
        ]
        self.slot_count = len(slots)
        self._settled: list[object] = [_LEARNING] * len(self.instrs)  # per instruction: its thread count once settled
        self._helpers_wanted: bool | None = None  # once every count is settled: whether any is above one
        self._fast: list[tuple] | None = None  # once every count is settled: the instructions for _run_fast
        converts = sum(1 for i in self.instrs if i.step is None)
        log.debug("compiled %s for %s: %d steps (%d ops fused away), %d layout conversions", graph.name, device.name,
                  len(self.instrs) - converts, len(self.skipped), converts)

    def run(self, feeds: Mapping[str, np.ndarray], observe: Observe | None = None, timed: bool = False,
            spans: list | None = None) -> dict[str, np.ndarray]:
        """Run the plan on host arrays (already checked against the graph's inputs; in the layouts
        ``input_layouts`` gave). Once the device has settled an op's thread count, its step runs
        without the learning's bookkeeping (no clock, no trial records) unless a hook, ``spans``
        (gets ``(op, start, end)`` per op on the ``time.perf_counter`` clock) or the throttle
        needs its time."""
        device = self.device
        if device.threads != 1 and self._wants_helpers():  # (threads None: numba's whole pool)
            native_jobs.wake()  # native helpers spin through the run (between ops of one thread too)
        values: list[np.ndarray | None] = [None] * self.slot_count
        for name, s in self.input_slots:
            x = feeds[name]
            values[s] = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        previous = current = helpers.thread_count()
        throttle = device.throttle
        timing = observe is not None or throttle > 1.0 or spans is not None
        if not timing and (self._fast is not None or self._settle_fast()):
            return self._run_fast(values, previous)
        clock = time.perf_counter
        settled = self._settled
        try:
            for index, instr in enumerate(self.instrs):
                inputs = [values[s] for s in instr.reads]
                step = instr.step
                if step is None:
                    outputs = [instr.convert(inputs[0])]
                else:
                    threads = settled[index]
                    learning = threads is _LEARNING
                    if learning:
                        threads = device._threads_for(step.op)
                    want = previous if threads is None else threads
                    if want != current:
                        helpers.set_thread_count(want)
                        current = want
                    if not (learning or timing):
                        outputs = step.run(inputs)
                    else:
                        start = clock()
                        outputs = step.run(inputs)
                        elapsed = clock() - start
                        if learning:
                            device._learn_threads(step.op, threads, elapsed)
                            if _thread_count_settled(device, step.op):
                                settled[index] = device._threads_for(step.op)
                        if throttle > 1.0:
                            time.sleep((throttle - 1.0) * elapsed)
                        if instr.covers:
                            _report_fused(instr, inputs, outputs, start, clock(), elapsed, spans, observe, timed)
                        else:
                            if spans is not None:
                                spans.append((step.op, start, clock()))
                            if observe is not None:
                                seen = StepOutputs(outputs, step.gives)
                                observe(step.op, seen, (elapsed, elapsed) if timed else None)
                                seen.expire()
                for s, buffer in zip(instr.writes, outputs):
                    values[s] = buffer
                for s in instr.frees:
                    values[s] = None
        finally:
            if current != previous:
                helpers.set_thread_count(previous)
        return {name: values[s] for name, s in self.output_slots}

    def _settle_fast(self) -> bool:
        """Once every instruction's thread count is settled: ``_fast``, the instructions as
        (reads, run, writes, frees, thread count: None for the run's own, 0 for any) for
        ``_run_fast``; whether it exists."""
        if any(t is _LEARNING for t, instr in zip(self._settled, self.instrs) if instr.step is not None):
            return False
        fast = []
        for instr, threads in zip(self.instrs, self._settled):
            if instr.step is None:
                run = (lambda inputs, convert=instr.convert: [convert(inputs[0])])
                threads = 0  # any count: a layout conversion runs on whatever is set
            else:
                run = instr.step.run
            fast.append((instr.reads, run, instr.writes, instr.frees, threads))
        self._fast = fast
        return True

    def _run_fast(self, values: list, previous: int) -> dict[str, np.ndarray]:
        """``run`` without hooks once every thread count is settled: no clock, no learning, the
        instructions' fields unpacked ahead (a plan of small ops spent ~1.3 us an instruction in
        the general loop's bookkeeping)."""
        current = previous
        set_count = helpers.set_thread_count
        try:
            for reads, run, writes, frees, threads in self._fast:
                if threads != current and threads != 0:
                    want = previous if threads is None else threads
                    if want != current:
                        set_count(want)
                        current = want
                outputs = run([values[s] for s in reads])
                for s, buffer in zip(writes, outputs):
                    values[s] = buffer
                for s in frees:
                    values[s] = None
        finally:
            if current != previous:
                set_count(previous)
        return {name: values[s] for name, s in self.output_slots}

    def _wants_helpers(self) -> bool:
        """Whether a run has an op on more than one thread (or one still choosing): only then are
        sleeping native helpers woken at its start (a plan settled on one thread everywhere, like
        the seed CNN's, would pay a wake-up per run for nothing)."""
        wanted = self._helpers_wanted
        if wanted is None:
            counts = [t for t, instr in zip(self._settled, self.instrs) if instr.step is not None]
            if any(t is _LEARNING for t in counts):
                return True
            wanted = self._helpers_wanted = any(t is None or t != 1 for t in counts)
        return wanted

    def breakdown(self, feeds: Mapping[str, np.ndarray], repeat: int = 10) -> dict[str, float]:
        """Where a run's time goes, median seconds of ``repeat`` runs: ``total`` (one plain run),
        ``kernels`` (the op steps, their output allocation included), ``layout`` (NCHW/NHWC
        conversions) and ``dispatch`` (the rest: the plan's own Python per op)."""
        totals, kernels, layouts = [], [], []
        clock = time.perf_counter
        for _ in range(repeat):
            start = clock()
            self.run(feeds)
            totals.append(clock() - start)
            values: list[np.ndarray | None] = [None] * self.slot_count
            for name, s in self.input_slots:
                values[s] = np.require(feeds[name], requirements="C")
            kernel_s = layout_s = 0.0
            cap = numba.get_num_threads()
            for instr in self.instrs:
                inputs = [values[s] for s in instr.reads]
                threads = None if instr.step is None else self.device._threads_for(instr.step.op)
                numba.set_num_threads(cap if threads is None else threads)
                begin = clock()
                outputs = [instr.convert(inputs[0])] if instr.step is None else instr.step.run(inputs)
                spent = clock() - begin
                if instr.step is None:
                    layout_s += spent
                else:
                    kernel_s += spent
                for s, buffer in zip(instr.writes, outputs):
                    values[s] = buffer
                for s in instr.frees:
                    values[s] = None
            numba.set_num_threads(cap)
            kernels.append(kernel_s)
            layouts.append(layout_s)
        total, kernel, layout = (float(np.median(v)) for v in (totals, kernels, layouts))
        return {"total": total, "kernels": kernel, "layout": layout, "dispatch": max(0.0, total - kernel - layout)}

    def describe(self) -> list[str]:
        """One line per instruction: op (type) and layouts, or a conversion."""
        lines = []
        for instr in self.instrs:
            if instr.step is None:
                lines.append(f"convert -> {'nhwc' if instr.convert is to_nhwc else 'nchw'}")
            else:
                op = instr.step.op
                fused = "" if instr.tail is None else f" fused {instr.tail.kind} of {', '.join(o.type for o in instr.covers)}"
                lines.append(f"{op.name} ({op.type}){fused} {','.join(instr.step.wants)} -> {','.join(instr.step.gives)}")
        return lines


def _fused_away(graph: Graph, tails) -> frozenset[str]:
    """The ops a plan with these fused tails never runs: each tail's ops but its QuantizeLinear,
    where a DequantizeLinear is one only if no other op reads its output, it is no graph output and
    no fused step reads it."""
    tails = list(tails)
    members = {op.name for tail in tails for op in tail.ops}
    sources = {t for tail in tails for t in tail.sources}
    outputs = {spec.name for spec in graph.outputs}
    readers: dict[str, set[str]] = {}
    for op in graph.ops_in_order():
        for t in op.activation_inputs:
            readers.setdefault(t, set()).add(op.name)
    skipped = set()
    for tail in tails:
        for op in tail.ops[:-1]:
            if op.type != "DequantizeLinear":
                skipped.add(op.name)
            elif op.outputs[0] not in outputs and op.outputs[0] not in sources and readers.get(op.outputs[0], set()) <= members:
                skipped.add(op.name)
    return frozenset(skipped)


def _report_fused(instr: Instr, inputs, outputs, start: float, end: float, elapsed: float, spans, observe, timed) -> None:
    """Spans and observations of a fused tail's step, one per op it covers: the time split evenly
    in graph order, the outputs of the ops it dropped replayed by the reference on demand."""
    ops = instr.covers
    share = elapsed / len(ops)
    if spans is not None:
        part = (end - start) / len(ops)
        spans.extend((op, start + i * part, start + (i + 1) * part) for i, op in enumerate(ops))
    if observe is None:
        return
    replay = _Replay(instr.tail, inputs, instr.step.wants)
    try:
        for op in ops:
            seen = StepOutputs(outputs, instr.step.gives) if op is instr.step.op else replay.outputs(op)
            observe(op, seen, (share, share) if timed else None)
            if isinstance(seen, StepOutputs):
                seen.expire()
    finally:
        replay.expire()


__all__ = ["CpuBuffer", "CpuPlan", "BUILDERS", "LAYOUT_CONVERSIONS", "build_step", "own_step", "run_step_nchw", "to_nhwc", "to_nchw"]
