"""Profiler statistics, link fits, the profile file and its error paths, the cost model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hetero.backends import open_device
from hetero.cost.evaluate import error_metrics, evaluate_against, evaluate_holdout
from hetero.cost.model import ProfileCostModel, SpecDevice, fit_regression
from hetero.backends.discovery import DeviceInfo
from hetero.errors import ProfileError
from hetero.ir.source import load_graph
from hetero.cost.profile import OpStats, check_device, load_profile, save_profile
from hetero.cost.profiler import Budget, fit_link, profile_graph, robust_stats
from hetero.exec.dispatch import measure_dispatch

SMALL = Budget(warmup=1, min_count=5, max_count=30, target_spread=0.2, seconds_per_op=0.05)


@settings(max_examples=50, deadline=None)
@given(
    base=st.floats(1e-6, 1e-2),
    spikes=st.lists(st.floats(20, 1000), min_size=1, max_size=3),
)
def test_spikes_do_not_move_the_median(base, spikes):
    rng = np.random.default_rng(0)
    clean = base * (1 + 0.01 * rng.standard_normal(40))
    median, p10, p90, kept, dropped = robust_stats(list(clean) + [base * s for s in spikes])
    assert dropped == len(spikes)
    assert kept == 40
    assert abs(median - np.median(clean)) <= 0.02 * base
    assert p10 <= median <= p90 < 2 * base


@settings(max_examples=30, deadline=None)
@given(latency=st.floats(1e-7, 1e-3), bandwidth=st.floats(1e8, 1e11))
def test_link_fit_recovers_latency_and_bandwidth(latency, bandwidth):
    sizes = [1024 * 4**i for i in range(9)]
    points = [(n, latency + n / bandwidth) for n in sizes]
    fit_latency, fit_bandwidth = fit_link(points)
    assert fit_latency == pytest.approx(latency, rel=1e-3, abs=1e-9)
    assert fit_bandwidth == pytest.approx(bandwidth, rel=1e-3)


@pytest.fixture(scope="module")
def seed_profile(tmp_path_factory):
    graph = load_graph("builtin:seed-cnn")
    devices = [open_device("reference")]
    profile = profile_graph(graph, devices, "builtin:seed-cnn", "fp32", budget=SMALL, transfer_sizes=[1024, 65536, 1 << 20],
                            dispatch_s=measure_dispatch(devices))
    path = tmp_path_factory.mktemp("profile") / "seed.json"
    save_profile(profile, path)
    return graph, profile, path


def test_every_op_signature_is_measured(seed_profile):
    graph, profile, _ = seed_profile
    ops = profile.devices["reference"].ops
    assert {op.signature() for op in graph.ops_in_order()} == set(ops)
    for stats in ops.values():
        assert 0 < stats.p10_s <= stats.median_s <= stats.p90_s
        assert stats.count >= SMALL.min_count - stats.outliers
        assert stats.features["flops"] >= 0
    conv = next(s for s in ops.values() if s.op_type == "Conv")
    assert conv.features["flops"] == 2 * 32 * 26 * 26 * 9 + 32 * 26 * 26
    assert {(l.src, l.dst) for l in profile.links} == {("host", "reference"), ("reference", "host")}
    assert profile.libraries["numpy"] == np.__version__
    assert profile.host["cores"] >= 1


def test_profile_round_trip(seed_profile):
    _, profile, path = seed_profile
    loaded = load_profile(path)
    assert loaded.devices["reference"].ops == profile.devices["reference"].ops
    assert loaded.links == profile.links


def test_reuse_keeps_measured_entries(seed_profile):
    graph, profile, _ = seed_profile
    again = profile_graph(graph, [open_device("reference")], "m", "fp32", budget=SMALL, previous=profile, transfer_sizes=[1024])
    assert again.devices["reference"].ops == profile.devices["reference"].ops


def _edit(path, tmp_path, change):
    data = json.loads(path.read_text())
    change(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    return bad


def test_truncated_profile(seed_profile, tmp_path):
    _, _, path = seed_profile
    bad = tmp_path / "truncated.json"
    bad.write_text(path.read_text()[: len(path.read_text()) // 2])
    with pytest.raises(ProfileError, match=r"truncated.json: not valid JSON"):
        load_profile(bad)


def test_future_schema(seed_profile, tmp_path):
    bad = _edit(seed_profile[2], tmp_path, lambda d: d.update(schema_version=99))
    with pytest.raises(ProfileError, match=r"bad.json: schema version 99 is newer"):
        load_profile(bad)


def test_hand_edited_profile_names_the_field(seed_profile, tmp_path):
    def drop_median(data):
        first = next(iter(data["devices"]["reference"]["ops"].values()))
        del first["median_s"]

    with pytest.raises(ProfileError, match=r"bad.json: devices.reference.ops\[.*\] lacks 'median_s'"):
        load_profile(_edit(seed_profile[2], tmp_path, drop_median))

    def negative(data):
        data["links"][0]["bandwidth_Bps"] = -1

    with pytest.raises(ProfileError, match=r"links\[0\].bandwidth_Bps must be positive"):
        load_profile(_edit(seed_profile[2], tmp_path, negative))


def test_profile_of_another_device(seed_profile):
    _, profile, path = seed_profile
    other = DeviceInfo("reference", "reference", "numpy on some other machine", "numpy", 1, 0)
    with pytest.raises(ProfileError, match="was profiled as .* but here it is 'numpy on some other machine'"):
        check_device(profile, str(path), "reference", other)
    with pytest.raises(ProfileError, match="has no device 'cpu'"):
        check_device(profile, str(path), "cpu", other)


def test_failed_save_leaves_the_old_file(seed_profile, tmp_path):
    _, profile, path = seed_profile
    target = tmp_path / "keep.json"
    target.write_text("old")
    broken = profile.__class__(**{**profile.__dict__, "host": {"bad": object()}})
    with pytest.raises(TypeError):
        save_profile(broken, target)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def _stats(op_type, seconds, flops, nbytes):
    features = {"flops": flops, "bytes_read": nbytes, "bytes_written": nbytes / 2, "out_elements": nbytes / 8}
    return OpStats(op_type, seconds, seconds, seconds, 5, 0, 0.0, features)


def test_regression_recovers_a_linear_law():
    rng = np.random.default_rng(1)
    train = []
    for _ in range(12):
        flops, nbytes = rng.uniform(1e6, 1e9), rng.uniform(1e4, 1e7)
        train.append(_stats("Conv", 2e-5 + flops / 5e10 + nbytes / 1e10, flops, nbytes))
    model = fit_regression(train)
    flops, nbytes = 3e8, 2e6
    truth = 2e-5 + flops / 5e10 + nbytes / 1e10
    assert model.predict(train[0].features) == pytest.approx(train[0].median_s, rel=0.02)
    assert model.predict({"flops": flops, "bytes_read": nbytes, "bytes_written": nbytes / 2, "out_elements": nbytes / 8}) == pytest.approx(truth, rel=0.05)


def test_error_metrics():
    report = error_metrics([1.05, 2.3, 3.0, 10.0], [1.0, 2.0, 3.0, 4.0])
    assert report["within_10pct"] == 0.5
    assert report["within_20pct"] == 0.75
    assert report["n"] == 4
    assert report["spearman"] == pytest.approx(1.0)
    assert report["rmspe"] == pytest.approx(math.sqrt((0.05**2 + 0.15**2 + 0 + 1.5**2) / 4))


def test_evaluate_holdout_and_against(seed_profile):
    _, profile, _ = seed_profile
    report = evaluate_holdout(profile, fraction=0.3)
    assert report["n"] + report["unpredictable"] >= 2
    assert set(report) >= {"within_10pct", "within_20pct", "rmspe", "spearman", "n"}
    with pytest.raises(ProfileError, match="between 0 and 1"):
        evaluate_holdout(profile, fraction=1.5)
    self_report = evaluate_against(profile, profile)
    assert self_report["n"] == 0  # every signature is already known: nothing unseen to predict


def test_cost_model_lookup_roofline_and_transfers(seed_profile):
    graph, profile, _ = seed_profile
    spec = SpecDevice("npu", {"int8": 4e12, "fp32": 1e12}, 1e10, 1e-5, 1e-3, 1e8, frozenset({"Conv", "Gemm"}))
    cost = ProfileCostModel(graph, profile, ["reference", "npu"], specs={"npu": spec})
    conv = next(op for op in graph.ops_in_order() if op.type == "Conv")
    relu = next(op for op in graph.ops_in_order() if op.type == "Relu")
    stats = profile.devices["reference"].ops[conv.signature()]
    dispatch = profile.runtime["dispatch_s"]
    assert 0 < dispatch < 1e-3
    assert cost.compute(conv.name, "reference") == stats.expected_s + dispatch
    assert stats.expected_s == stats.wall_median_s >= stats.median_s
    assert cost.compute(conv.name, "npu") == pytest.approx(1e-5 + max(conv.flops / 1e12, (conv.bytes_read + conv.bytes_written) / 1e10))
    assert math.isinf(cost.compute(relu.name, "npu"))
    assert not cost.can_run(relu.name, "npu")
    assert cost.transfer(1000, "reference", "reference") == 0.0
    assert cost.transfer(10**6, "host", "npu") == pytest.approx(1e-3 + 1e-2)
    via_host = cost.transfer(10**6, "reference", "npu")
    assert via_host == pytest.approx(profile.link("reference", "host").seconds(10**6) + 1e-3 + 1e-2)
    with pytest.raises(ProfileError, match="neither in the profile nor a catalog spec"):
        ProfileCostModel(graph, profile, ["cpu"])
