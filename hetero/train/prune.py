"""Structured pruning by L1 norm (article 3.1.2): whole filters, channels and neurons leave the graph.

Channel groups are found on the ONNX graph itself. Every Conv (group 1) and Gemm opens a channel
space (its output channels); the space flows through channel-wise ops (Relu, Clip, BatchNorm,
pooling, depthwise Conv, per-channel constants) and is read by the next Conv's input channels or,
after Flatten, by a Gemm's input features (each channel a block of H*W features). A residual Add
joins the spaces of its operands into one (the same channels go on both sides); a Concat along
channels lays spaces side by side. A space that reaches a graph output or an op read any other
way stays whole.

Importance of channel c of a space: the L1 norm of the filter (row) that produces it, divided by
the mean over that producer's filters, summed over the space's producers. The channels below the
threshold that keeps round(size * (1 - ratio)) of them are removed from every tensor that holds
them, so the result is an ordinary smaller dense model. Pure numpy and onnx, no torch.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from hetero.errors import InputError, ModelError
from hetero.ir.source import quantized_form

log = logging.getLogger(__name__)

CHANNEL_WISE = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool",
                          "GlobalAveragePool", "Identity", "Dropout"})
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div"})

Segment = tuple[int, int, int]
"""(space id, channels, features per channel) of one run of a tensor's channel axis."""


@dataclass(frozen=True)
class PrunedSpace:
    """One channel space: where it starts, its size before and after, its L1 threshold."""

    producers: tuple[str, ...]
    channels_before: int
    channels_after: int
    threshold: float


@dataclass(frozen=True)
class PruneResult:
    """The pruned model and what was cut."""

    model: onnx.ModelProto
    spaces: tuple[PrunedSpace, ...]


@dataclass
class _Analysis:
    sizes: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    fixed: set[int] = field(default_factory=set)
    producers: dict[int, list[tuple[str, str, int]]] = field(default_factory=dict)  # space -> (node, init, axis)
    slices: list[tuple[str, int, list[Segment]]] = field(default_factory=list)  # (init, axis, layout)
    groups: dict[str, list[Segment]] = field(default_factory=dict)  # depthwise node -> its layout
    reshapes: dict[str, tuple[str, int]] = field(default_factory=dict)  # Reshape node -> (shape init, dim 0)

    def new_space(self, size: int) -> int:
        self.sizes.append(size)
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def fix(self, layout: list[Segment] | None) -> None:
        for space, _, _ in layout or []:
            self.fixed.add(self.root(space))

    def unite(self, a: list[Segment], b: list[Segment]) -> None:
        if [(s, r) for _, s, r in a] != [(s, r) for _, s, r in b]:
            self.fix(a)
            self.fix(b)
            return
        for (sa, _, _), (sb, _, _) in zip(a, b):
            ra, rb = self.root(sa), self.root(sb)
            if ra != rb:
                self.parent[rb] = ra
                if rb in self.fixed:
                    self.fixed.add(ra)
                self.producers.setdefault(ra, []).extend(self.producers.pop(rb, []))


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model)
    out: dict[str, list[int]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value for d in dims]
    return out


def analyse(model: onnx.ModelProto) -> _Analysis:
    """Channel spaces, what slices each one, and which must stay whole."""
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _shapes(model)
    an = _Analysis()
    layout: dict[str, list[Segment]] = {}

    def read_elsewhere(node: onnx.NodeProto) -> None:
        for name in node.input:
            an.fix(layout.get(name))

    for node in graph.node:
        attrs = _attrs(node)
        x = node.input[0] if node.input else ""
        lay = layout.get(x)
        out = node.output[0] if node.output else ""
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            w = inits[node.input[1]]
            group = int(attrs.get("group", 1))
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
            if group == 1:
                if lay is not None:
                    an.slices.append((node.input[1], 1, lay))
                space = an.new_space(w.shape[0])
                an.producers[space] = [(node.name, node.input[1], 0)]
                if bias:
                    an.slices.append((bias, 0, [(space, w.shape[0], 1)]))
                layout[out] = [(space, w.shape[0], 1)]
            elif lay is not None and w.shape[1] == 1 and group == w.shape[0] == sum(s for _, s, _ in lay):
                an.slices.append((node.input[1], 0, lay))
                if bias:
                    an.slices.append((bias, 0, lay))
                an.groups[node.name] = lay
                layout[out] = lay
            else:
                an.fix(lay)
        elif node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits and not attrs.get("transA", 0):
            w = inits[node.input[1]]
            trans_b = bool(attrs.get("transB", 0))
            if lay is not None:
                an.slices.append((node.input[1], 1 if trans_b else 0, lay))
            features = w.shape[0] if trans_b else w.shape[1]
            space = an.new_space(features)
            an.producers[space] = [(node.name, node.input[1], 0 if trans_b else 1)]
            if len(node.input) > 2 and node.input[2] in inits:
                c = inits[node.input[2]]
                if c.ndim >= 1 and c.shape[-1] == features and c.size == features:
                    an.slices.append((node.input[2], c.ndim - 1, [(space, features, 1)]))
                elif c.size != 1:
                    an.fixed.add(space)
            layout[out] = [(space, features, 1)]
        elif node.op_type in CHANNEL_WISE:
            if lay is not None:
                layout[out] = lay
        elif node.op_type == "BatchNormalization":
            if lay is not None:
                for name in node.input[1:5]:
                    an.slices.append((name, 0, lay))
                layout[out] = lay
        elif node.op_type in ("Flatten", "Reshape") and lay is not None:
            in_shape = shapes.get(x, [])
            out_shape = shapes.get(out, [])
            flat = len(out_shape) == 2 and len(in_shape) >= 2 and out_shape[0] == in_shape[0]
            if node.op_type == "Flatten" and int(attrs.get("axis", 1)) != 1:
                flat = False
            if flat and node.op_type == "Reshape":
                an.reshapes[node.name] = (node.input[1], in_shape[0])
            if flat:
                per = int(np.prod(in_shape[2:], dtype=np.int64)) if len(in_shape) > 2 else 1
                layout[out] = [(s, n, r * per) for s, n, r in lay]
            else:
                an.fix(lay)
        elif node.op_type in ELEMENTWISE and len(node.input) == 2:
            a, b = node.input
            la, lb = layout.get(a), layout.get(b)
            if la is not None and lb is not None:
                an.unite(la, lb)
                layout[out] = la
            elif (la is None) != (lb is None):
                tracked, other = (la, b) if la is not None else (lb, a)
                const = inits.get(other)
                rank = len(shapes.get(out, []))
                channels = sum(s for _, s, _ in tracked)
                if const is not None and (const.size == 1 or (rank - const.ndim <= 1 and const.ndim >= rank - 1
                                                              and const.shape[1 - (rank - const.ndim)] == channels
                                                              and const.size == channels)):
                    if const.size != 1:
                        an.slices.append((other, 1 - (rank - const.ndim), tracked))
                    layout[out] = tracked
                else:
                    an.fix(tracked)
        elif node.op_type == "Concat" and int(attrs.get("axis", 0)) == 1:
            parts = [layout.get(n) for n in node.input]
            if all(p is not None for p in parts):
                layout[out] = [seg for p in parts for seg in p]  # type: ignore[union-attr]
            else:
                for p in parts:
                    an.fix(p)
        else:
            read_elsewhere(node)
    for value in graph.output:
        an.fix(layout.get(value.name))
    # An initializer sliced twice (shared between nodes) keeps its spaces whole.
    seen: dict[str, int] = {}
    for name, _, lay in an.slices:
        seen[name] = seen.get(name, 0) + 1
    for name, _, lay in an.slices:
        if seen[name] > 1:
            an.fix(lay)
    return an


def _kept_indices(an: _Analysis, lay: list[Segment], keep: dict[int, np.ndarray]) -> np.ndarray:
    """Indices along an axis laid out as ``lay`` that survive."""
    out, offset = [], 0
    for space, size, per in lay:
        kept = keep.get(an.root(space), np.arange(size))
        out.append((offset + kept[:, None] * per + np.arange(per)[None, :]).ravel())
        offset += size * per
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def prune_model(model: onnx.ModelProto, ratio: float, label: str = "model") -> PruneResult:
    """Remove ``ratio`` of the channels of every prunable channel space by L1 importance."""
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"--ratio {ratio}: give the share of channels to remove, in [0, 1)")
    if quantized_form(model) is not None:
        raise ModelError(f"{label} is quantized; prune the fp32 model, then run hetero quantize on the result")
    an = analyse(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep: dict[int, np.ndarray] = {}
    spaces: list[PrunedSpace] = []
    for space in sorted({an.root(s) for s in range(len(an.sizes))}):
        producers = an.producers.get(space, [])
        if space in an.fixed or not producers:
            continue
        size = an.sizes[space]
        importance = np.zeros(size)
        for _, init, axis in producers:
            w = np.moveaxis(inits[init], axis, 0).reshape(size, -1)
            l1 = np.abs(w).sum(axis=1)
            importance += l1 / max(float(l1.mean()), 1e-12)
        n_keep = max(1, int(round(size * (1.0 - ratio))))
        order = np.argsort(-importance, kind="stable")
        keep[space] = np.sort(order[:n_keep])
        threshold = float(importance[order[n_keep - 1]])
        spaces.append(PrunedSpace(tuple(p[0] for p in producers), size, n_keep, threshold))
    out = copy.deepcopy(model)
    sliced: dict[str, np.ndarray] = {}
    for name, axis, lay in an.slices:
        sliced[name] = np.take(sliced.get(name, inits[name]), _kept_indices(an, lay, keep), axis=axis)
    for space in keep:
        for _, init, axis in an.producers[space]:
            sliced[init] = np.take(sliced.get(init, inits[init]), keep[space], axis=axis)
    for i, tensor in enumerate(out.graph.initializer):
        if tensor.name in sliced:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(sliced[tensor.name].astype(inits[tensor.name].dtype), tensor.name))
    for node in out.graph.node:
        if node.name in an.groups:
            channels = len(_kept_indices(an, [(s, n, 1) for s, n, _ in an.groups[node.name]], keep))
            for attr in node.attribute:
                if attr.name == "group":
                    attr.i = channels
        if node.name in an.reshapes:
            shape_name, batch = an.reshapes[node.name]
            new_name = f"{node.name}.pruned_shape"
            out.graph.initializer.append(numpy_helper.from_array(np.array([batch, -1], dtype=np.int64), new_name))
            node.input[1] = new_name
    del out.graph.value_info[:]
    try:
        onnx.checker.check_model(shape_inference.infer_shapes(out, strict_mode=True), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ModelError(f"{label}: pruning produced an invalid graph ({err}); report it with the model") from None
    log.info("pruned %d channel spaces of %s", len(spaces), label)
    return PruneResult(out, tuple(spaces))
