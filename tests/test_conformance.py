"""onnx's own backend tests through the importer, the reference executor and the devices
(bench/onnx_conformance.py).

Slow (collecting onnx's cases builds ~1,900 models): a representative subset of operators is run
on the reference, on cpu and on every usable OpenCL device, and every case must pass or be
refused (a HeteroError on the reference, an unclaimed op on a device): never a wrong answer, never
a crash, on any of them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import onnx_conformance as conformance  # noqa: E402

# the transformer and CNN-zoo operators of issues 12 and 19 whose node cases must all pass
MUST_PASS = {
    "LayerNormalization", "Softmax", "LogSoftmax", "MatMul", "Erf", "Gelu", "Tanh", "Sigmoid", "Pow", "Sqrt",
    "Div", "Sub", "Neg", "Exp", "Log", "Reciprocal", "Abs", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
    "ReduceProd", "ReduceL2", "Where", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And",
    "Or", "Xor", "Expand", "Tile", "Mod", "Gather", "Trilu", "Unsqueeze", "Squeeze", "Transpose", "Einsum",
    "HardSigmoid", "HardSwish", "ConvTranspose", "InstanceNormalization", "DepthToSpace", "SpaceToDepth",
    "ArgMax", "ArgMin", "TopK", "CumSum", "GatherElements", "GatherND", "ScatterND", "OneHot", "Mean", "Min",
    "Max", "Sum", "RotaryEmbedding", "Conv", "AveragePool", "LpPool", "GlobalMaxPool", "ConvInteger",
    "MatMulInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
}
# operators the devices have kernels for, run on every device too
DEVICE_OPERATORS = {
    "Add", "Mul", "Relu", "Clip", "Gemm", "BatchNormalization", "MaxPool", "GlobalAveragePool", "Concat",
    "Reshape", "Flatten", "Slice", "Split", "Cast", "Identity", "QuantizeLinear", "DequantizeLinear",
}
# cases of those operators that are refused on purpose (dtype or attribute hetero does not support)
REFUSED = ("bfloat16", "bf16", "antialias", "float8", "e4m3", "e5m2", "int4", "uint4", "int2", "float4", "_string",
           "with_argmax", "FLOAT8", "INT4", "INT2", "FLOAT4", "e8m0")


def _operator(result: conformance.Result) -> str:
    return result.operator.replace(" (expanded)", "")


@pytest.fixture(scope="module")
def devices() -> list:
    """cpu and every usable OpenCL device (as the runner picks them by default)."""
    opened = conformance.open_devices(None)
    yield opened
    for device in opened:
        device.close()


@pytest.fixture(scope="module")
def node_results(devices: list) -> list[conformance.Result]:
    wanted = MUST_PASS | DEVICE_OPERATORS | {"Resize", "Pad"}
    cases = [c for c in conformance.collect(["node"]) if c.operator.replace(" (expanded)", "") in wanted]
    return [r for c in cases for r in conformance.run_case(c, devices=devices)]


@pytest.fixture(scope="module")
def stored_results(devices: list) -> list[conformance.Result]:
    cases = conformance.collect(["pytorch-operator", "pytorch-converted"])
    return [r for c in cases for r in conformance.run_case(c, devices=devices)]


@pytest.mark.slow
def test_no_wrong_answer_and_no_crash_on_any_device(
    node_results: list[conformance.Result], stored_results: list[conformance.Result]
) -> None:
    bad = [f"{r.device} {r.name}: {r.status}: {r.detail}" for r in node_results + stored_results
           if r.status in ("wrong", "crash")]
    assert not bad, bad[:10]


@pytest.mark.slow
def test_devices_run_what_they_claim(node_results: list[conformance.Result], devices: list) -> None:
    """Each device runs (and passes) cases of the operators it has kernels for: the comparison is not vacuous."""
    assert "cpu" in [d.name for d in devices]
    for device in devices:
        passed = Counter(_operator(r) for r in node_results if r.device == device.name and r.status == "pass")
        assert {"Add", "Relu", "MaxPool", "Gemm", "Concat"} <= set(passed), (device.name, passed)


@pytest.mark.slow
def test_transformer_and_cnn_operators_pass(node_results: list[conformance.Result]) -> None:
    failing = [
        f"{r.name}: {r.detail}"
        for r in node_results
        if r.device == "reference" and r.operator in MUST_PASS and r.status != "pass"
        and not any(t in r.name for t in REFUSED)
    ]
    assert not failing, failing[:10]


@pytest.mark.slow
def test_stored_pytorch_suites_pass_on_the_reference(stored_results: list[conformance.Result]) -> None:
    """Every pytorch-operator and pytorch-converted case: all their operators are supported."""
    failing = [f"{r.name}: {r.status}: {r.detail}" for r in stored_results if r.device == "reference" and r.status != "pass"]
    assert not failing, failing[:10]


@pytest.mark.slow
def test_strict_mode_refuses_runtime_axes() -> None:
    """Without binding, an axes input fed at run time is an honest refusal, not a crash."""
    case = next(c for c in conformance.collect(["node"], "test_reduce_sum_keepdims_example"))
    assert conformance.run_case(case, strict=True)[0].status == "unsupported"
    assert conformance.run_case(case)[0].status == "pass"


@pytest.mark.slow
def test_a_device_refusing_an_op_it_claimed_is_a_crash(devices: list) -> None:
    """The runner's own check: a device whose claim is wrong shows as a crash, not as unsupported."""
    cpu = next(d for d in devices if d.name == "cpu")
    case = next(c for c in conformance.collect(["node"], "test_relu"))

    class Overclaiming(type(cpu)):  # claims every op, has kernels for few
        def supports(self, op: object) -> bool:
            return True

    liar = Overclaiming(dataclasses.replace(cpu.info, name="cpu-overclaiming"))
    liar.kernels = {}  # type: ignore[misc]
    results = conformance.run_case(case, devices=[cpu, liar])
    assert [r.status for r in results] == ["pass", "pass", "crash"]
