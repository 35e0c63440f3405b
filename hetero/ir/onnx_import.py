"""ONNX -> Graph: parse with the onnx package, infer shapes, fold constants, build the IR.

Supported: the default ONNX domain at every opset the installed onnx defines (opsets below 13
are converted to 13 with onnx.version_converter) and the op types in the registry.
At import, Constant nodes and every op whose inputs are all constant (the shape-only
subgraphs Shape -> Gather -> Unsqueeze -> Concat -> Reshape, Cast on constants, ...) are
evaluated and become weights; Identity and Dropout are removed; BatchNormalization is folded
into the Conv before it when that Conv feeds nothing else. QuantizeLinear/DequantizeLinear
are never folded: they carry the int8 semantics. No partial graph is ever returned.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from hetero.ir import ops
from hetero.errors import GraphError, HeteroError, ModelError, UnsupportedOpError
from hetero.ir.graph import Graph, Op, TensorSpec, make_op
from hetero.ir.onnx_file import MAX_OPSET, MIN_OPSET, check_requested_shape, convert_opset, load_model
from hetero.ir.ops.pool import batch_norm_affine

log = logging.getLogger(__name__)

NEVER_FOLD = {"QuantizeLinear", "DequantizeLinear"}
REMOVED = {"Identity", "Dropout"}
CEIL_POOLS = {"MaxPool", "AveragePool"}


def import_onnx(
    source: str | os.PathLike[str] | onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    label: str | None = None,
) -> Graph:
    """Import an ONNX file or ModelProto into a validated Graph.

    ``input_shapes`` fixes symbolic input dimensions; otherwise every symbolic dim becomes 1.
    """
    if isinstance(source, onnx.ModelProto):
        model, where = source, label or (source.graph.name or "model")
    else:
        model, where = load_model(source), label or str(source)
    try:
        from hetero.ir.ops.fused import fuse_like_onnxruntime

        return fuse_like_onnxruntime(_Importer(model, where, input_shapes or {}).run())
    except HeteroError as err:
        message = str(err)
        raise type(err)(message if message.startswith(where) else f"{where}: {message}") from None



def _attribute(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


def _spec(value_info: onnx.ValueInfoProto) -> TensorSpec | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape") or not tensor_type.elem_type:
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    return TensorSpec(value_info.name, tuple(dims), np.dtype(dtype).name)


class _Importer:
    def __init__(self, model: onnx.ModelProto, where: str, input_shapes: Mapping[str, tuple[int, ...]]):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)  # input shapes get fixed in place; the caller's model stays as it was
        self.reshaped = False
        self.where = where
        self.input_shapes = input_shapes
        self.consts: dict[str, np.ndarray] = {}
        self.alias: dict[str, str] = {}
        self.specs: dict[str, TensorSpec] = {}
        self.onnx_specs: dict[str, TensorSpec] = {}
        self.ops: list[Op] = []

    def run(self) -> Graph:
        self._check_opset()
        graph = self.model.graph
        for init in graph.initializer:
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except (ValueError, TypeError) as err:
                raise ModelError(f"initializer '{init.name}' (dims {list(init.dims)}) cannot be read ({err}); "
                                 "the file is corrupt or was edited") from None
        inputs = self._fix_inputs()
        self._check_references()
        order = self._sorted_nodes()  # a cycle is named before shape inference trips over it
        self._infer_shapes()
        for node in order:
            self._import_node(node)
        outputs = [self._resolve(o.name) for o in graph.output]
        for original, name in zip(graph.output, outputs):
            if name in self.consts:
                raise UnsupportedOpError(f"graph output '{original.name}' is a constant; nothing computes it")
        self._fold_batch_norms(outputs)
        built = Graph.build(self.ops, inputs, outputs, name=graph.name or Path(self.where).stem)
        # the opset the ops' attributes follow (after any conversion) and the file's IR version:
        # what a writer of the graph back to ONNX (hetero.quant.qdq) declares
        built.graph["opset"] = next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))
        built.graph["ir_version"] = int(self.model.ir_version)
        return built

    def _check_opset(self) -> None:
        version = None
        for opset in self.model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                version = opset.version
        if version is None:
            raise ModelError("the model imports no default-domain opset")
        if version > MAX_OPSET:
            raise ModelError(
                f"opset {version} is newer than the installed onnx package knows (it defines up to "
                f"{MAX_OPSET}); upgrade onnx or export the model at opset {MAX_OPSET} or lower"
            )
        if version < MIN_OPSET:
            self.model = convert_opset(self.model, version)
        for node in self.model.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(
                    f"operator {node.domain}.{node.op_type} (node {node.name or node.output[0]}) is not supported: "
                    "only the default ONNX domain is"
                )

    def _fix_inputs(self) -> list[TensorSpec]:
        names = [v.name for v in self.model.graph.input if v.name not in self.consts]
        unknown = sorted(set(self.input_shapes) - set(names))
        if unknown:
            raise ModelError(f"an input shape is given for '{unknown[0]}', which is not a model input (inputs: {', '.join(names)})")
        inputs = []
        for value in self.model.graph.input:
            if value.name in self.consts:
                continue
            tensor_type = value.type.tensor_type
            if not tensor_type.elem_type:
                raise ModelError(f"graph input '{value.name}' is not a tensor")
            if value.name in self.input_shapes:
                dims = tuple(int(d) for d in self.input_shapes[value.name])
                check_requested_shape(value.name, tensor_type.shape.dim, dims)
            else:
                dims = tuple(
                    int(d.dim_value) if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim
                )
                if any(not d.HasField("dim_value") for d in tensor_type.shape.dim):
                    self.reshaped = True
                    log.info("input %s: symbolic dimensions set to 1 -> %s", value.name, dims)
            proto_dims = tensor_type.shape.dim
            if len(proto_dims) != len(dims):
                raise ModelError(f"input '{value.name}' has rank {len(proto_dims)}, not {len(dims)} as requested")
            for proto_dim, dim in zip(proto_dims, dims):
                if not (proto_dim.HasField("dim_value") and proto_dim.dim_value == dim):
                    self.reshaped = True
                proto_dim.Clear()
                proto_dim.dim_value = dim
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
            spec = TensorSpec(value.name, dims, dtype)
            self.specs[value.name] = spec
            inputs.append(spec)
        if not inputs:
            raise ModelError("the model has no non-constant graph input")
        return inputs

    def _infer_shapes(self) -> None:
        if self.reshaped:  # declared intermediate and output shapes were for the old input shape
            del self.model.graph.value_info[:]
            for output in self.model.graph.output:
                output.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=True, data_prop=True)
        except Exception as err:  # onnx raises InferenceError, ValidationError and plain RuntimeError
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"ONNX shape inference failed: {first_line}") from None
        for value in list(inferred.graph.value_info) + list(inferred.graph.output):
            spec = _spec(value)
            if spec is not None:
                self.onnx_specs[value.name] = spec

    def _check_references(self) -> None:
        """Every tensor a node reads is a graph input, an initializer or some node's output."""
        graph = self.model.graph
        known = {v.name for v in graph.input} | {init.name for init in graph.initializer}
        known |= {out for node in graph.node for out in node.output if out}
        for node in graph.node:
            for tensor in node.input:
                if tensor and tensor not in known:
                    name = node.name or (node.output[0] if node.output else node.op_type)
                    raise GraphError(f"node {name} ({node.op_type}) reads tensor '{tensor}', which is no graph input, "
                                     "initializer or node output; the model is incomplete")

    def _sorted_nodes(self) -> list[onnx.NodeProto]:
        nodes = list(self.model.graph.node)
        producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
        order = nx.DiGraph()
        order.add_nodes_from(range(len(nodes)))
        for i, node in enumerate(nodes):
            for tensor in node.input:
                if tensor in producer:
                    order.add_edge(producer[tensor], i)
        try:
            return [nodes[i] for i in nx.lexicographical_topological_sort(order)]
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(order)
            names = [nodes[u].name or nodes[u].output[0] for u, _ in cycle]
            raise GraphError(f"the graph has a cycle through nodes {' -> '.join(names + names[:1])}") from None

    def _resolve(self, tensor: str) -> str:
        while tensor in self.alias:
            tensor = self.alias[tensor]
        return tensor

    def _import_node(self, node: onnx.NodeProto) -> None:
        name = node.name or f"{node.op_type}_{node.output[0]}"
        attrs = {a.name: _attribute(a) for a in node.attribute}
        inputs = [self._resolve(t) if t else "" for t in node.input]
        outputs = list(node.output)
        while len(outputs) > 1 and not outputs[-1]:  # trailing optional outputs left out
            outputs.pop()
        outputs = [o or f"{name}:unused{i}" for i, o in enumerate(outputs)]  # skipped middle ones
        try:
            if node.op_type == "Constant":
                self.consts[outputs[0]] = self._constant_value(attrs)
                return
            if node.op_type in REMOVED:
                self._remove(node, inputs, outputs, name)
                return
            definition = ops.get(node.op_type)
            if node.op_type == "Split":
                attrs = self._normalise_split(attrs, inputs, outputs)
            foldable = node.op_type not in NEVER_FOLD and all(
                not t or t in self.consts for t in inputs
            )
            if node.op_type in ("Shape", "Size") and inputs[0] in self.specs:
                shape = self.specs[inputs[0]].shape
                self.consts[outputs[0]] = definition.reference([np.empty(shape, np.uint8)], attrs)[0]
                return
            if foldable:
                values = definition.reference([self.consts[t] if t else None for t in inputs], attrs)
                for tensor, value in zip(outputs, values):
                    self.consts[tensor] = np.asarray(value)
                return
            if definition.fold_only:
                raise UnsupportedOpError(f"{node.op_type} is only supported on constants")
            op = make_op(name, node.op_type, inputs, outputs, attrs, self.specs, self.consts)
        except UnsupportedOpError as err:
            detail = str(err)
            if not detail.startswith("operator"):
                detail = f"operator {node.op_type}: {detail}"
            raise UnsupportedOpError(f"node {name}: {detail}") from None
        except GraphError as err:
            message = str(err)
            if f"node {name}" not in message:
                message = f"node {name} ({node.op_type}): {message}"
            raise GraphError(message) from None
        for spec in op.output_specs:
            expected = self.onnx_specs.get(spec.name)
            if expected is not None and (expected.shape, expected.dtype) != (spec.shape, spec.dtype):
                if node.op_type in CEIL_POOLS and attrs.get("ceil_mode"):
                    # onnx's shape inference keeps a last ceil_mode window that starts in the end
                    # padding, onnxruntime drops it; hetero follows onnxruntime, so the shapes onnx
                    # inferred from here on cannot be trusted.
                    log.info("node %s: ceil_mode output %s differs from onnx's %s", name, spec.shape, expected.shape)
                    self.onnx_specs.clear()
                    self.specs[spec.name] = spec
                    continue
                raise GraphError(
                    f"node {name} ({node.op_type}): output '{spec.name}' computed as {list(spec.shape)} "
                    f"{spec.dtype} but ONNX shape inference says {list(expected.shape)} {expected.dtype}"
                )
            self.specs[spec.name] = spec
        self.ops.append(op)

    def _constant_value(self, attrs: dict[str, Any]) -> np.ndarray:
        for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
            if key in attrs:
                value = attrs[key]
                if key == "value_float" or key == "value_floats":
                    return np.asarray(value, np.float32)
                if key in ("value_int", "value_ints"):
                    return np.asarray(value, np.int64)
                return np.asarray(value)
        raise UnsupportedOpError(f"Constant with attributes {sorted(attrs)} is not supported")

    def _remove(self, node: onnx.NodeProto, inputs: list[str], outputs: list[str], name: str) -> None:
        graph_outputs = {o.name for o in self.model.graph.output}
        if node.op_type == "Dropout" and len(outputs) > 1 and outputs[1]:
            used = any(outputs[1] in n.input for n in self.model.graph.node) or outputs[1] in graph_outputs
            if used:
                raise UnsupportedOpError("Dropout's mask output is used; only inference-mode Dropout is supported")
        if node.op_type == "Dropout" and len(inputs) > 2 and inputs[2]:
            if inputs[2] not in self.consts or bool(np.asarray(self.consts[inputs[2]]).reshape(-1)[0]):
                raise UnsupportedOpError("Dropout with training_mode true or not constant is not supported; only inference-mode Dropout is")
        source = inputs[0]
        if source in self.consts:
            self.consts[outputs[0]] = self.consts[source]
        elif outputs[0] in graph_outputs:
            op = make_op(name, "Identity", [source], [outputs[0]], {}, self.specs, self.consts)
            self.specs[outputs[0]] = op.output_specs[0]
            self.ops.append(op)
        else:
            self.alias[outputs[0]] = source

    def _normalise_split(self, attrs: dict[str, Any], inputs: list[str], outputs: list[str]) -> dict[str, Any]:
        if (len(inputs) > 1 and inputs[1]) or attrs.get("split") is not None:
            return attrs
        if inputs[0] in self.specs:
            shape = self.specs[inputs[0]].shape
        elif inputs[0] in self.consts:  # a Split of a constant is folded, but needs sizes too
            shape = self.consts[inputs[0]].shape
        else:
            return attrs
        axis = int(attrs.get("axis", 0)) % len(shape)
        count = len(outputs)
        dim = shape[axis]
        chunk = -(-dim // count)
        sizes = [chunk] * (count - 1) + [dim - chunk * (count - 1)]
        attrs = {k: v for k, v in attrs.items() if k != "num_outputs"}
        attrs["split"] = tuple(sizes)
        return attrs

    def _fold_batch_norms(self, outputs: list[str]) -> None:
        consumers = Counter(t for op in self.ops for t in op.inputs if t)
        consumers.update(outputs)
        by_output = {op.outputs[0]: i for i, op in enumerate(self.ops)}
        kept: dict[int, Op] = dict(enumerate(self.ops))
        for i, bn in enumerate(self.ops):
            if bn.type != "BatchNormalization" or bn.inputs[0] not in by_output:
                continue
            j = by_output[bn.inputs[0]]
            conv = kept.get(j)
            if (
                conv is None
                or conv.type != "Conv"
                or consumers[bn.inputs[0]] != 1
                or conv.inputs[1] not in conv.weights
                or any(t not in bn.weights for t in bn.inputs[1:5])
            ):
                continue
            scale, shift = batch_norm_affine([None] + [bn.weights[t] for t in bn.inputs[1:5]], bn.attrs)
            weight = conv.weights[conv.inputs[1]]
            bias = conv.weights.get(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
            new_weight = (weight.astype(np.float64) * scale.reshape(-1, 1, 1, 1)).astype(weight.dtype)
            base = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
            new_bias = (base * scale + shift).astype(weight.dtype)
            w_name, b_name = f"{conv.name}.weight_bn", f"{conv.name}.bias_bn"
            weights = {w_name: new_weight, b_name: new_bias}
            specs = {t: s for t, s in zip(conv.inputs, conv.input_specs) if s is not None and t not in conv.weights}
            kept[j] = make_op(conv.name, "Conv", [conv.inputs[0], w_name, b_name], list(bn.outputs), conv.attrs, specs, weights)
            del kept[i]
        self.ops = [kept[k] for k in sorted(kept)]
