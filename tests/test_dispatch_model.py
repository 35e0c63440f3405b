"""The runtime's per-op cost calibrated on the profiled model itself (hetero.exec.dispatch.model_dispatch_s):
what serving the whole graph through the Runtime costs beyond the ops' profiled seconds."""

from __future__ import annotations

import pytest

from hetero.backends import open_device
from hetero.exec.dispatch import calibrate_dispatch, model_dispatch_s
from hetero.quant.precision import load_for_precision


@pytest.fixture(scope="module")
def seed_on_cpu():
    graph = load_for_precision("builtin:seed-cnn", "int8")
    device = open_device("cpu")
    yield graph, device
    device.close()


def test_per_op_cost_is_what_serving_adds_beyond_the_ops(seed_on_cpu):
    graph, device = seed_on_cpu
    zero = {op.name: 0.0 for op in graph.ops_in_order()}
    whole = model_dispatch_s(graph, device, zero, 0.0, requests=20)  # all of a request's latency, per op
    assert whole is not None and whole > 0
    # charging the ops more leaves less per op, never below 0
    assert model_dispatch_s(graph, device, {n: 1.0 for n in zero}, 0.0, requests=5) == 0.0
    assert model_dispatch_s(graph, device, zero, 10.0, requests=5) == 0.0
    # a latency's worth per op is more than the Identity chain's runtime cost alone
    assert whole > calibrate_dispatch(device, length=8, requests=20)


def test_a_device_without_a_kernel_for_an_op_gives_none(seed_on_cpu):
    graph, device = seed_on_cpu

    class Lacking:  # the cpu device, but refusing the graph's Gemm ops
        name, kind = device.name, device.kind

        def supports(self, op):
            return op.type != "QGemm" and device.supports(op)

    assert model_dispatch_s(graph, Lacking(), {op.name: 0.0 for op in graph.ops_in_order()}, 0.0) is None
