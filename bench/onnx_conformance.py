"""Run onnx's own backend test cases through hetero's importer, the reference executor and the devices.

Suites: ``node`` (``onnx.backend.test.case.node.collect_testcases()``, one model per operator
form at its current opset) and the stored models under onnx/backend/test/data/
{pytorch-operator,pytorch-converted,simple}. Each case is classified as

- pass: every output matches the expected one (dtype, shape, values within rtol 1e-3 and atol 1e-5,
  the tolerances of onnx's own runner, or looser where the case asks for it);
- unsupported: hetero refused it with a HeteroError (UnsupportedOpError, ModelError, ...);
- wrong: it ran but an output differs;
- crash: any other exception.

Every case runs on the reference executor (numpy, the oracle) and, where a device claims every
op of the imported graph (``device.supports``), on that device too: the cpu device (numba) and
every usable OpenCL device, compared with the expected outputs the same way. A device that does
not claim an op of the case counts the case as unsupported (a capability gap); a wrong answer or
a crash on a device is a bug in its kernel or in its claim.

    python bench/onnx_conformance.py [--suite node ...] [--filter SUBSTR] [--devices reference,cpu,opencl:0]
                                     [--markdown FILE] [--json FILE] [--show wrong ...]

Counts are printed per device, suite and operator; ``--markdown`` writes the same tables.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from hetero.backends import open_device
from hetero.backends.base import Device
from hetero.backends.discovery import discover
from hetero.exec.executor import run_on_device, run_reference
from hetero.errors import HeteroError
from hetero.ir.graph import Graph
from hetero.ir.onnx_import import import_onnx

RTOL, ATOL = 1e-3, 1e-5
SUITES = ("node", "pytorch-operator", "pytorch-converted", "simple")
STATUSES = ("pass", "unsupported", "wrong", "crash")


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    operator: str
    model: onnx.ModelProto
    data_sets: list[tuple[list[np.ndarray], list[np.ndarray]]]
    rtol: float = RTOL
    atol: float = ATOL


@dataclass(frozen=True)
class Result:
    suite: str
    name: str
    operator: str
    status: str
    detail: str
    device: str = "reference"


def _schema_names() -> dict[str, str]:
    names = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            names[schema.name.lower()] = schema.name
    return names


_SCHEMAS = _schema_names()


def operator_of(name: str, model: onnx.ModelProto) -> str:
    """The operator a case tests: its single node's type, else the longest op name its name starts with."""
    nodes = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    tokens = re.sub(r"^test_", "", name).split("_")
    suffix = " (expanded)" if "expanded" in tokens else ""
    if len(set(nodes)) == 1 and not suffix:
        return nodes[0]
    for k in range(len(tokens), 0, -1):
        candidate = "".join(tokens[:k]).lower()
        if candidate in _SCHEMAS:
            return _SCHEMAS[candidate] + suffix
    return (nodes[0] if nodes else name) + suffix


def _read_pb(path: str) -> np.ndarray:
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def _stored_cases(suite: str) -> Iterator[Case]:
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", suite)
    for directory in sorted(glob.glob(os.path.join(root, "*"))):
        model_path = os.path.join(directory, "model.onnx")
        if not os.path.isfile(model_path):
            continue
        model = onnx.load(model_path)
        data_sets = []
        for data_dir in sorted(glob.glob(os.path.join(directory, "test_data_set_*"))):
            try:
                ins = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data_dir, "input_*.pb")), key=_index)]
                outs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data_dir, "output_*.pb")), key=_index)]
            except Exception:  # sequences and optionals are stored as other protos
                ins, outs = [], []
            data_sets.append((ins, outs))
        name = os.path.basename(directory)
        yield Case(suite, name, operator_of(name, model), model, data_sets)


def _array(value: object) -> object:
    """A test value as numpy: some node cases store tensors as TensorProtos (exact float16, cast cases)."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return value


def _index(path: str) -> int:
    return int(re.findall(r"_(\d+)\.pb$", path)[0])


def collect(suites: Sequence[str], pattern: str | None = None) -> list[Case]:
    """The cases of the given suites whose name contains ``pattern``."""
    cases: list[Case] = []
    for suite in suites:
        if suite == "node":
            from onnx.backend.test.case.node import collect_testcases

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for tc in collect_testcases(None):
                    if tc.model is None:
                        continue
                    cases.append(
                        Case(
                            "node", tc.name, operator_of(tc.name, tc.model), tc.model,
                            [([_array(v) for v in i], [_array(v) for v in o]) for i, o in tc.data_sets],
                            max(RTOL, float(tc.rtol)), max(ATOL, float(tc.atol)),
                        )
                    )
        else:
            cases.extend(_stored_cases(suite))
    if pattern:
        cases = [c for c in cases if pattern in c.name]
    return cases


def _compare(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> str | None:
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype:
        return f"dtype {actual.dtype}, expected {expected.dtype}"
    if expected.shape != actual.shape:
        return f"shape {list(actual.shape)}, expected {list(expected.shape)}"
    if expected.dtype == object or expected.dtype.kind in "SU":
        return None if np.array_equal(expected, actual) else "values differ"
    e, a = expected.astype(np.float64), actual.astype(np.float64)
    if not np.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        bad = ~np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
        return f"{int(bad.sum())} of {e.size} values differ (max abs {np.nanmax(np.abs(a - e)[bad]):.3g})"
    return None


# Inputs that decide an output shape, by op type and input position. hetero compiles graphs with
# static shapes, so it needs them at import; node cases feed them as graph inputs, and unless
# --strict the runner binds such graph inputs to the test data's values as initializers
# (what a static-shape compiler's user does). The op's data inputs stay graph inputs.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,), "Unsqueeze": (1,), "Squeeze": (1,), "Slice": (1, 2, 3, 4), "Split": (1,),
    "Tile": (1,), "Expand": (1,), "TopK": (1,), "CumSum": (1,), "CumProd": (1,), "Trilu": (1,),
    "OneHot": (1,), "Pad": (1, 3), "ConstantOfShape": (0,), "Resize": (1, 2, 3), "Upsample": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,), "CenterCropPad": (1, 2), "Col2Im": (1, 2), "Range": (0, 1, 2),
}


def _bind_shape_inputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    names = {
        node.input[i]
        for node in model.graph.node
        for i in SHAPE_INPUTS.get(node.op_type, ())
        if i < len(node.input) and node.input[i] in feeds
    }
    if not names:
        return model
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [v for v in bound.graph.input if v.name not in names]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    bound.graph.initializer.extend(numpy_helper.from_array(feeds.pop(n), n) for n in sorted(names))
    return bound


def _short(detail: str) -> str:
    return detail.splitlines()[0][:300] if detail else ""


def _outcome(
    case: Case, run: Callable[[], dict[str, np.ndarray]], expected: Sequence[np.ndarray], claimed: bool = False
) -> tuple[str, str] | None:
    """None when every output matches, else (status, detail). On a device that claimed every op
    (``claimed``), a refusal at run time is a crash too: its claim was wrong."""
    try:
        outputs = run()
    except HeteroError as err:
        if claimed:
            return "crash", f"claimed, then refused: {type(err).__name__}: {err}"
        return "unsupported", f"{type(err).__name__}: {err}"
    except Exception as err:  # a crash is what this runner exists to find
        return "crash", f"{type(err).__name__}: {err}"
    for proto, want in zip(case.model.graph.output, expected):
        problem = _compare(want, outputs[proto.name], case.rtol, case.atol)
        if problem:
            return "wrong", f"output {proto.name}: {problem}"
    return None


def _unclaimed(graph: Graph, device: Device) -> str | None:
    """Why the device does not run the whole graph (its first unclaimed op), or None."""
    for op in graph.ops_in_order():
        if not device.supports(op):
            return device.why_not(op)
    return None


def run_case(case: Case, strict: bool = False, devices: Sequence[Device] = ()) -> list[Result]:
    """Import and run one case on the reference executor and on each device; one Result per
    executor (reference first, then the devices in order)."""
    names = ["reference"] + [d.name for d in devices]
    verdict: dict[str, tuple[str, str] | None] = {n: None for n in names}

    def results() -> list[Result]:
        return [
            Result(case.suite, case.name, case.operator, *(verdict[n] or ("pass", "")), device=n)  # type: ignore[misc]
            for n in names
        ]

    def refuse_all(status: str, detail: str) -> list[Result]:
        for n in names:
            verdict[n] = (status, _short(detail))
        return results()

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            initializers = {init.name for init in case.model.graph.initializer}
            input_names = [v.name for v in case.model.graph.input if v.name not in initializers]
            if not case.data_sets:
                import_onnx(case.model, label=case.name)
                return refuse_all("unsupported", "the case has no test data")
            prepared = []
            for inputs, expected in case.data_sets:
                if len(inputs) != len(input_names) or not expected:
                    import_onnx(case.model, label=case.name)  # a refusal names the operator
                    return refuse_all("unsupported", "test data holds non-tensor values (sequence/optional)")
                feeds = dict(zip(input_names, inputs))
                model = case.model if strict else _bind_shape_inputs(case.model, feeds)
                prepared.append((import_onnx(model, label=case.name), feeds, expected))
        except HeteroError as err:
            return refuse_all("unsupported", f"{type(err).__name__}: {err}")
        except Exception as err:  # an importer crash
            return refuse_all("crash", f"{type(err).__name__}: {err}")
        for graph, feeds, expected in prepared:
            if verdict["reference"] is None:
                outcome = _outcome(case, lambda: run_reference(graph, feeds), expected)
                verdict["reference"] = outcome and (outcome[0], _short(outcome[1]))
            for device in devices:
                if verdict[device.name] is not None:
                    continue
                why = _unclaimed(graph, device)
                if why is not None:
                    verdict[device.name] = ("unsupported", _short(why))
                    continue
                outcome = _outcome(case, lambda: run_on_device(graph, device, feeds), expected, claimed=True)
                verdict[device.name] = outcome and (outcome[0], _short(outcome[1]))
    return results()


def summarize(results: Sequence[Result], device: str = "reference") -> tuple[dict[str, Counter], dict[str, Counter]]:
    """Status counts per suite and per operator (node suite) of one executor's results."""
    by_suite: dict[str, Counter] = defaultdict(Counter)
    by_op: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        if r.device != device:
            continue
        by_suite[r.suite][r.status] += 1
        if r.suite == "node":
            by_op[r.operator][r.status] += 1
    return by_suite, by_op


def device_names(results: Sequence[Result]) -> list[str]:
    """The executors of the results, in the order they ran."""
    return list(dict.fromkeys(r.device for r in results))


def _row(label: str, counts: Counter) -> str:
    total = sum(counts.values())
    cells = " | ".join(str(counts.get(s, 0)) for s in STATUSES)
    share = 100.0 * counts.get("pass", 0) / total if total else 0.0
    return f"| {label} | {total} | {cells} | {share:.0f}% |"


HEAD = "| {} | cases | pass | unsupported | wrong | crash | pass % |\n|---|---:|---:|---:|---:|---:|---:|"


def markdown(results: Sequence[Result]) -> str:
    """Per executor (reference, cpu, opencl:N): the suite table; then one per-operator table of
    the node suite with each executor's pass/unsupported/wrong/crash counts."""
    names = device_names(results)
    lines: list[str] = []
    for name in names:
        by_suite, _ = summarize(results, name)
        lines += [f"**{name}**", "", HEAD.format("suite")]
        lines += [_row(s, by_suite[s]) for s in SUITES if s in by_suite]
        lines.append("")
    per_device = {name: summarize(results, name)[1] for name in names}
    operators = sorted(per_device[names[0]]) if names else []
    if operators:
        lines.append("| operator (node suite) | cases | " + " | ".join(f"{n} pass/unsup/wrong/crash" for n in names) + " |")
        lines.append("|---|---:|" + "---:|" * len(names))
        for op in operators:
            cells = []
            for name in names:
                c = per_device[name][op]
                cells.append("/".join(str(c.get(s, 0)) for s in STATUSES))
            lines.append(f"| {op} | {sum(per_device[names[0]][op].values())} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def open_devices(names: Sequence[str] | None) -> list[Device]:
    """The devices to compare with the reference: those named, else cpu and every usable OpenCL device."""
    if names is None:
        usable, _ = discover(["cpu", "opencl"])
        names = [d.name for d in usable]
    return [open_device(n) for n in names if n != "reference"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=SUITES, help="suites to run (default: all)")
    parser.add_argument("--filter", help="only cases whose name contains this")
    parser.add_argument("--devices", help="comma-separated devices besides the reference (default: cpu and every "
                        "usable opencl:N; 'reference' alone runs none)")
    parser.add_argument("--markdown", help="write the tables as markdown to this file")
    parser.add_argument("--json", help="write every case's result as JSON to this file")
    parser.add_argument("--show", choices=STATUSES, action="append", help="list the cases with this status")
    parser.add_argument("--strict", action="store_true",
                        help="keep shape-deciding inputs (axes, shape, K, pads, ...) as graph inputs")
    parser.add_argument("--per-op", action="store_true", help="print the per-operator table too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hetero").setLevel(logging.ERROR)
    start = time.perf_counter()
    devices = open_devices(None if args.devices is None else [n.strip() for n in args.devices.split(",") if n.strip()])
    results = [r for c in collect(args.suite or SUITES, args.filter) for r in run_case(c, args.strict, devices)]
    for name in device_names(results):
        by_suite, by_op = summarize(results, name)
        print(f"{name:20s} {'cases':>6s} " + " ".join(f"{s:>11s}" for s in STATUSES))
        for suite in SUITES:
            if suite in by_suite:
                c = by_suite[suite]
                print(f"  {suite:18s} {sum(c.values()):6d} " + " ".join(f"{c.get(s, 0):11d}" for s in STATUSES))
        if args.per_op:
            for op in sorted(by_op):
                c = by_op[op]
                print(f"    {op:36s} " + " ".join(f"{s}={c[s]}" for s in STATUSES if c.get(s)))
    for r in results:
        if args.show and r.status in args.show:
            print(f"{r.status:11s} {r.device:10s} {r.suite}/{r.name}: {r.detail}")
    print(f"{len(results)} results in {time.perf_counter() - start:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
