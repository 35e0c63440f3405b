"""Per-op times of a whole graph on a device from its kernel profile, as the runtime adds them up.

Each op costs its kernel class's prediction, plus the layout conversions the device's compiled
plan inserts for it (before it, for its inputs; a conversion of a graph output goes to the op
that makes it). The cost model adds ``Profile.runtime.dispatch_s`` (the Runtime's per-op cost)
to every op; ``hetero profile --evaluate`` adds the plan's own (``plan_dispatch_s``), which is what
``hetero run --repeat`` pays. Classes and conversions come from the plan compiled for the graph (cpu);
where the graph does not compile there (an op without a kernel), each supported op is classified
alone and no conversion is charged. A float tail the plan fuses (``hetero.backends.cpu.tails``) is
predicted as one step of its kernel class (the samples of families lookup and gated) and shared
evenly by its ops, as the plan's hooks report its time.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from hetero.backends.base import Device
from hetero.cost.kernel_model import kernel_features, layout_features, step_class
from hetero.errors import DeviceError
from hetero.ir.graph import Graph, Op

log = logging.getLogger(__name__)

_CPU: list[Any] = []


def _cpu_device() -> Any:
    """One cpu device for compiling plans (classification only; nothing runs on it)."""
    if not _CPU:
        from hetero.backends.registry import open_device

        _CPU.append(open_device("cpu"))
    return _CPU[0]


def _spec_of(op: Op, tensor: str) -> Any:
    return next(s for name, s in zip(op.inputs, op.input_specs) if name == tensor)


class GraphKernelCost:
    """Kernel-profile prediction of every op of a graph on one device."""

    def __init__(self, graph: Graph, kind: str, predictor: Any) -> None:
        self.graph = graph
        self.predictor = predictor
        self.classes: dict[str, str] = {}
        self.conversions: dict[str, list[tuple[str, tuple[int, ...], int]]] = {}  # op -> (class, NCHW shape, itemsize)
        self.supported: set[str] = set()
        self.fused: dict[str, tuple[str, int]] = {}  # op of a fused tail -> (the tail's QuantizeLinear, ops it runs)
        if kind == "cpu":
            self._from_plan()
        else:
            self.classes = {op.name: op.type for op in graph.ops_in_order()}
            self.supported = set(self.classes)
        self._cache: dict[str, float] = {}
        self.flush_bytes = bytes_per_run(graph)

    def _from_plan(self) -> None:
        from hetero.backends.cpu.plan import to_nhwc
        from hetero.backends.cpu.steps import NCHW, NHWC

        device = _cpu_device()
        ops = list(self.graph.ops_in_order())
        self.supported = {op.name for op in ops if device.supports(op)}
        try:
            plan = device.plan_for(self.graph)
        except DeviceError as err:
            from hetero.backends.cpu.plan import build_step

            log.info("%s does not compile for cpu (%s): classifying its ops one by one", self.graph.name, err)
            for op in ops:
                if op.name in self.supported:
                    available = tuple(NHWC if _spec_of(op, t).dtype in ("int8", "uint8") and len(_spec_of(op, t).shape) == 4
                                      else NCHW for t in op.activation_inputs)
                    self.classes[op.name] = step_class(build_step(device, op, available))
            return
        producer = {t: op for op in ops for t in op.outputs}
        tensor_specs = {spec.name: spec for spec in self.graph.inputs}
        tensor_specs.update((spec.name, spec) for op in ops for spec in op.output_specs)
        pending: list[tuple[int, str]] = []  # (slot written, class) of conversions not yet read
        outputs = {slot: name for name, slot in plan.output_slots}
        specs = {s.name: s for s in self.graph.outputs}
        for instr in plan.instrs:
            if instr.step is None:
                kernel_class = "layout/to_nhwc" if instr.convert is to_nhwc else "layout/to_nchw"
                slot = instr.writes[0]
                if slot in outputs and outputs[slot] in specs:
                    spec = specs[outputs[slot]]
                    owner = producer[outputs[slot]].name
                    self.conversions.setdefault(owner, []).append((kernel_class, tuple(spec.shape), _itemsize(spec.dtype)))
                else:
                    pending.append((slot, kernel_class))
                continue
            op = instr.step.op
            self.classes[op.name] = step_class(instr.step)
            if instr.covers:  # a fused tail: its step's time, shared evenly by the ops it runs
                for covered in instr.covers:
                    self.fused[covered.name] = (op.name, len(instr.covers))
            read_tensors = instr.tail.sources if instr.tail is not None else op.activation_inputs
            for slot, kernel_class in pending:
                if slot in instr.reads:
                    spec = tensor_specs[read_tensors[instr.reads.index(slot)]]
                    self.conversions.setdefault(op.name, []).append((kernel_class, tuple(spec.shape), _itemsize(spec.dtype)))
            pending = [(s, c) for s, c in pending if s not in instr.reads]
        device.close()

    def covers(self, node: str) -> bool:
        anchor = self.fused.get(node, (node, 1))[0]
        return node in self.supported and self.predictor.covers(self.classes.get(anchor, ""))

    def kernel_s(self, node: str) -> float:
        """The op's kernel alone (what a model profile measures per op; an op of a fused tail: its
        share of the fused step, as the plan reports it)."""
        anchor, share = self.fused.get(node, (node, 1))
        op = self.graph.op(anchor)
        guess = self.predictor.predict(self.classes.get(anchor, op.type), kernel_features(op, self.flush_bytes))
        return math.inf if guess is None else guess / share

    def layout_s(self, node: str) -> float:
        total = 0.0
        for kernel_class, shape, itemsize in self.conversions.get(node, ()):
            guess = self.predictor.predict(kernel_class, layout_features(shape, itemsize, self.flush_bytes))
            total += 0.0 if guess is None else guess
        return total

    def op_s(self, node: str) -> float:
        """Kernel plus the conversions the plan charges to it (no dispatch)."""
        if node not in self._cache:
            self._cache[node] = self.kernel_s(node) + self.layout_s(node) if self.covers(node) else math.inf
        return self._cache[node]


def bytes_per_run(graph: Graph) -> int:
    """What one run of the graph moves through the caches: its weights and every tensor its ops
    write (the samples' flush_bytes stand for this)."""
    return int(sum(op.param_bytes + sum(spec.nbytes for spec in op.output_specs) for op in graph.ops_in_order()))


def _itemsize(dtype: str) -> int:
    return int(np.dtype(dtype).itemsize)


_GRAPHS: dict[tuple[int, str], tuple[Graph, Any, GraphKernelCost]] = {}


def graph_kernel_cost(graph: Graph, device: str, kernels: Any) -> GraphKernelCost:
    """The (cached) per-op estimate of a graph on ``device`` from a KernelProfile."""
    entry = kernels.devices[device]
    key = (id(graph), device)
    found = _GRAPHS.get(key)
    if found is None or found[0] is not graph or found[1] is not entry:
        kind = str(entry.identity.get("kind", "cpu"))
        found = _GRAPHS[key] = (graph, entry, GraphKernelCost(graph, kind, entry.predictor()))
    return found[2]


def classify_ops(device: Device, graph: Any) -> dict[str, str]:
    """Op name -> kernel class: the step the device's compiled plan bound (cpu), else the op type."""
    plan_for = getattr(device, "plan_for", None)
    if plan_for is None:
        return {op.name: op.type for op in graph.ops_in_order()}
    plan = plan_for(graph)
    return {instr.step.op.name: step_class(instr.step) for instr in plan.instrs if instr.step is not None}


def fused_ops(device: Device, graph: Any, op: Op) -> int:
    """How many of ``graph``'s ops the device's plan runs in ``op``'s step (1 but for the
    QuantizeLinear of a fused float tail: the plan reports that step's time evenly over its ops)."""
    plan_for = getattr(device, "plan_for", None)
    if plan_for is None:
        return 1
    return next((max(1, len(i.covers)) for i in plan_for(graph).instrs if i.step is not None and i.step.op is op), 1)


def plan_dispatch_s(device: Device, length: int = 24) -> float:
    """The compiled plan's own Python per op (cpu), from a chain of Identity ops; 0.0 elsewhere."""
    from hetero.exec.dispatch import identity_chain

    plan_for = getattr(device, "plan_for", None)
    if plan_for is None:
        return 0.0
    graph = identity_chain(length)
    plan = plan_for(graph)
    parts = plan.breakdown({"t0": np.zeros(16, np.float32)}, repeat=50)
    return (parts["dispatch"] + parts["kernels"]) / length  # Identity's kernel returns its input: all dispatch
