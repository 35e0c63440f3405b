"""The model-independent kernel profile (hetero profile --kernels): sampling, storage, refit on
load, classes read from the cpu plan, scheduling a model nobody profiled, evaluation metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hetero.backends.registry import open_device
from hetero.cost.evaluate import error_metrics, evaluate_kernels_against
from hetero.cost.kernel_estimate import graph_kernel_cost
from hetero.cost.kernel_model import CACHE_BYTES, DERIVED, FEATURES, _matrix, derived, kernel_features, step_class
from hetero.cost.kernel_profile import (DeviceKernels, KernelProfile, KernelSample, classify_ops, load_kernel_profile,
                                        profile_kernels, save_kernel_profile)
from hetero.cost.kernel_space import build_sample
from hetero.cost.model import cost_model_for
from hetero.cost.profile import DeviceProfile, OpStats, Profile, load_profile
from hetero.errors import ProfileError
from hetero.ir.graph import Graph, TensorSpec, make_op

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cpu():
    device = open_device("cpu")
    yield device
    device.close()


@pytest.fixture(scope="module")
def kernels(cpu, tmp_path_factory) -> tuple[KernelProfile, Path]:
    profile = profile_kernels([cpu], ["int8", "fp32"], budget_s=4.0, seed=1, transfer_sizes=[4096, 65536])
    path = tmp_path_factory.mktemp("kernels") / "K.json"
    save_kernel_profile(profile, path)
    return profile, path


def test_profile_round_trips(kernels) -> None:
    profile, path = kernels
    loaded = load_kernel_profile(path)
    original, again = profile.devices["cpu"], loaded.devices["cpu"]
    assert len(original.samples) >= 12
    assert again.samples == original.samples
    assert again.kinds == original.kinds and again.plan_dispatch_s == original.plan_dispatch_s > 0
    assert loaded.precisions == ("int8", "fp32")
    assert {s.config["precision"] for s in again.samples} == {"int8", "fp32"}
    assert json.loads(path.read_text())["kind"] == "kernels"


def test_refit_from_samples_gives_the_same_predictions(kernels) -> None:
    profile, path = kernels
    first, second = profile.devices["cpu"].predictor(), load_kernel_profile(path).devices["cpu"].predictor()
    assert first is not second
    for sample in profile.devices["cpu"].samples[::7]:
        assert first.predict(sample.kernel_class, sample.features) == second.predict(sample.kernel_class, sample.features)


def test_sample_classes_are_what_the_plan_chose(kernels, cpu) -> None:
    profile, _ = kernels
    rng = np.random.default_rng(5)
    checked = 0
    for sample in profile.devices["cpu"].samples[:40]:
        if sample.op_type == "layout":
            continue
        graph, op = build_sample(sample.config, rng)
        plan = cpu.plan_for(graph)
        step = next(i.step for i in plan.instrs if i.step is not None and i.step.op is op)
        assert sample.kernel_class == step_class(step) == classify_ops(cpu, graph)[op.name]
        cpu.close()
        checked += 1
    assert checked > 10


def test_a_model_without_a_profile_is_scheduled_from_the_kernel_profile(kernels) -> None:
    from hetero.quant.precision import load_with_precision
    from hetero.schedulers import schedule

    _, path = kernels
    graph, precision = load_with_precision("builtin:seed-cnn", "int8")
    cost, _ = cost_model_for(graph, str(path), ["cpu"], precision)
    plan = schedule(graph, cost)
    assert set(plan.placement.values()) == {"cpu"}
    per_op = [cost.compute(node, "cpu") for node in graph.nodes]
    assert all(math.isfinite(s) and s > 0 for s in per_op)
    assert plan.makespan_s >= sum(per_op) * 0.999
    estimate = graph_kernel_cost(graph, "cpu", load_profile(path).kernels)
    assert estimate.classes == classify_ops(open_device("cpu"), graph)


def _broken(tmp_path: Path, path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    out = tmp_path / f"{edit.__name__}.json"
    out.write_text(json.dumps(data))
    return out


def test_bad_kernel_profiles_are_one_clear_error(kernels, tmp_path: Path) -> None:
    _, path = kernels
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(path.read_text()[:200])

    def unknown_class(d):
        d["devices"]["cpu"]["samples"][0]["class"] = "NoSuchOp/run"
        d["devices"]["cpu"]["samples"][0]["op_type"] = "NoSuchOp"

    def missing_field(d):
        del d["devices"]["cpu"]["samples"][3]["seconds"]

    def bad_kind(d):
        next(iter(d["devices"]["cpu"]["classes"].values()))["kind"] = "pickle"

    cases = [(corrupt, "not valid JSON"), (_broken(tmp_path, path, unknown_class), "samples[0].class 'NoSuchOp/run'"),
             (_broken(tmp_path, path, missing_field), "samples[3] lacks 'seconds'"),
             (_broken(tmp_path, path, bad_kind), "kind is 'pickle'")]
    for bad, words in cases:
        with pytest.raises(ProfileError) as err:
            load_profile(bad)
        message = str(err.value)
        assert str(bad) in message and words in message and "\n" not in message


def test_error_metrics_on_a_hand_built_case() -> None:
    m = error_metrics([1.05, 2.6, 6.0, 3.8], [1.0, 2.0, 3.0, 4.0])  # +5%, +30%, +100%, -5%
    assert m["within_10pct"] == 0.5 and m["within_20pct"] == 0.5 and m["n"] == 4
    assert m["rmspe"] == pytest.approx(math.sqrt((0.05**2 + 0.3**2 + 1.0 + 0.05**2) / 4))
    assert m["spearman"] == pytest.approx(0.8)  # ranks 1, 2, 4, 3 against 1, 2, 3, 4


def two_relus(cpu) -> tuple[Graph, object, str, dict]:
    """Two Relu ops of one signature: the graph, the first op, its kernel class (from the plan)
    and its features."""
    spec = TensorSpec("x", (1, 8, 4, 4), "float32")
    first = make_op("r1", "Relu", ["x"], ["y"], {}, {"x": spec}, {})
    second = make_op("r2", "Relu", ["y"], ["z"], {}, {"y": first.output_specs[0]}, {})
    graph = Graph.build([first, second], [spec], ["z"], name="relus")
    kernel_class = classify_ops(cpu, graph)["r1"]
    cpu.close()
    return graph, first, kernel_class, kernel_features(first, 1 << 20)


def test_evaluate_against_a_hand_built_model_profile(cpu) -> None:
    """Two Relu ops of one signature, their class sampled at a constant 10 us, measured 10.5 us:
    both within 10%, RMSPE 0.05/1.05; the class name comes from the plan; the whole model adds
    the plan's dispatch per op."""
    graph, first, kernel_class, features = two_relus(cpu)
    samples = tuple(KernelSample(kernel_class, "Relu", {}, features, 1e-5, 1e-5, 1e-5) for _ in range(4))
    kernels = KernelProfile("now", {}, {}, ("fp32",), {"cpu": DeviceKernels({"kind": "cpu"}, samples, 1e-6, 1e-6, {kernel_class: "loglin"})})
    stats = {op.signature(): OpStats("Relu", t, t, t, 5, 0, 0.0, {}) for op, t in ((first, 1.05e-5),)}
    other = Profile("relus", "fp32", "now", {}, {}, {"cpu": DeviceProfile({}, stats)})
    report = evaluate_kernels_against(kernels, other, graph)
    device = report["devices"]["cpu"]
    assert device["n"] == 2 and device["within_10pct"] == 1.0
    assert device["classes"][kernel_class]["rmspe"] == pytest.approx(0.05 / 1.05, rel=1e-3)
    assert device["model_predicted_s"] == pytest.approx(2 * (1e-5 + 1e-6), rel=1e-3)


def test_samples_are_fitted_at_the_first_probes_speed_and_evaluated_at_the_models(cpu) -> None:
    """Samples taken while the machine ran at half speed (speed 2.0: the probe took twice its
    first time) fit as if at full speed; a model profile measured when the probe took 2x the
    kernel profile's is predicted at that speed in the report's ``speed`` figures, not in the raw ones."""
    graph, first, kernel_class, features = two_relus(cpu)
    samples = tuple(KernelSample(kernel_class, "Relu", {}, features, 2e-5, 2e-5, 2e-5, 2.0) for _ in range(4))
    entry = DeviceKernels({"kind": "cpu"}, samples, 1e-6, 1e-6, {kernel_class: "loglin"}, probe_s=1e-4)
    assert entry.by_class()[kernel_class].seconds == (1e-5,) * 4
    kernels = KernelProfile("now", {}, {}, ("fp32",), {"cpu": entry})
    stats = {first.signature(): OpStats("Relu", 2.1e-5, 2.1e-5, 2.1e-5, 5, 0, 0.0, {})}
    other = Profile("relus", "fp32", "now", {}, {}, {"cpu": DeviceProfile({}, stats)}, runtime={"speed_probe_s:cpu": 2e-4})
    report = evaluate_kernels_against(kernels, other, graph)
    device = report["devices"]["cpu"]
    assert device["within_20pct"] == 0.0  # 10 us predicted against 21 us measured
    assert device["speed"]["factor"] == pytest.approx(2.0)
    assert device["speed"]["within_10pct"] == 1.0 and report["speed"]["within_10pct"] == 1.0
    assert device["speed"]["model_predicted_s"] == pytest.approx(2 * device["model_predicted_s"])


def test_the_speed_probe_times_the_cpu_device_and_a_bad_speed_is_refused(cpu, kernels, tmp_path: Path) -> None:
    from hetero.cost.speed import speed_probe

    first = speed_probe(cpu)
    assert first is not None and 0 < first < 0.1
    from hetero.cost.speed import probe_graph

    for op in probe_graph().ops_in_order():  # one thread, pinned: not the learning's choice of the moment
        assert cpu._threads_for(op) == 1
    profile, path = kernels
    assert profile.devices["cpu"].probe_s is not None and profile.devices["cpu"].probe_s > 0
    assert all(s.speed > 0 for s in profile.devices["cpu"].samples)
    data = json.loads(path.read_text())
    data["devices"]["cpu"]["samples"][3]["speed"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"devices\.cpu\.samples\[3\]\.speed"):
        load_kernel_profile(bad)
    for sample in data["devices"]["cpu"]["samples"]:
        del sample["speed"]  # a profile from before the probe: every sample at the first speed
    del data["devices"]["cpu"]["probe_s"]
    bad.write_text(json.dumps(data))
    assert {s.speed for s in load_kernel_profile(bad).devices["cpu"].samples} == {1.0}


def test_cli_profiles_kernels_and_schedules_with_them(tmp_path: Path, capsys) -> None:
    from hetero.app.cli import main

    path = tmp_path / "K.json"
    assert main(["profile", "--kernels", "--devices", "cpu", "--precision", "int8", "-o", str(path), "--budget-min", "0.05"]) == 0
    assert "kernel classes" in capsys.readouterr().out
    assert main(["schedule", "builtin:seed-cnn", "--profile", str(path), "--devices", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["placement"].values()) == {"cpu"} and summary["makespan"] > 0
    assert main(["profile", "--kernels", "builtin:seed-cnn", "-o", str(path)]) == 1
    assert "takes no MODEL" in capsys.readouterr().err


def test_schedule_simulate_validate_charge_the_runtimes_dispatch_evaluate_the_plans(kernels) -> None:
    """The Runtime's per-op cost (what validate and simulate run, as a model profile's dispatch_s)
    goes to the cost model; --evaluate compares with run --repeat and charges the plan's."""
    from hetero.quant.precision import load_with_precision

    profile, path = kernels
    entry = profile.devices["cpu"]
    assert entry.plan_dispatch_s > 0 and entry.runtime_dispatch_s >= 0
    # the Runtime runs a cpu partition as the compiled plan (same-device segments): its per-op cost
    # is the plan's within a few microseconds (op by op it added 8-13 us an op)
    assert abs(entry.runtime_dispatch_s - entry.plan_dispatch_s) < 5e-6
    loaded = load_profile(path)
    assert loaded.runtime["dispatch_s"] == entry.runtime_dispatch_s
    assert loaded.runtime["plan_dispatch_s"] == entry.plan_dispatch_s
    graph, precision = load_with_precision("builtin:seed-cnn", "int8")
    cost, _ = cost_model_for(graph, str(path), ["cpu"], precision)
    estimate = graph_kernel_cost(graph, "cpu", loaded.kernels)
    for node in list(graph.nodes)[:5]:
        assert cost.compute(node, "cpu") == pytest.approx(estimate.op_s(node) + entry.runtime_dispatch_s)


def test_an_fp32_scenario_simulates_on_a_kernel_profile_of_both_precisions(kernels, tmp_path: Path) -> None:
    from hetero.sim import ScenarioError, build_world, parse_scenario

    _, path = kernels
    text = f"""\
model: builtin:seed-cnn
precision: {{precision}}
host: cpu
devices:
  - {{{{name: cpu, profile: {path}, device: cpu}}}}
workload: {{{{kind: poisson, rate: 20/s}}}}
duration: 1 s
"""
    costs = {}
    for precision in ("fp32", "int8"):
        world = build_world(parse_scenario(text.format(precision=precision), f"{precision}.yaml"))
        costs[precision] = [world.cost.compute(node, "cpu") for node in world.graph.nodes]
        assert costs[precision] and all(math.isfinite(c) and c > 0 for c in costs[precision])
    assert costs["fp32"] != costs["int8"]  # each precision's own graph and samples
    model_profile = Path(__file__).resolve().parents[1] / "profiles" / "seed-cnn.int8.json"
    with pytest.raises(ScenarioError, match="seed-cnn.int8.json was measured in int8, the scenario runs fp32"):
        build_world(parse_scenario(text.format(precision="fp32").replace(str(path), str(model_profile)), "m.yaml"))


def test_cold_weights_feature_is_weights_times_the_share_of_cache_flushed() -> None:
    """Trees cannot multiply two features: the bytes an op fetches after a flush are given to them
    (derived from stored features, so a profile stored before this feature refits the same way)."""
    weights = 512 * 1024
    base = {"log_param_bytes": math.log1p(weights), "log_bytes_read": math.log1p(2 * weights)}
    cold = [derived({**base, "log_flush_bytes": math.log1p(flush)}) for flush in (0, CACHE_BYTES // 2, CACHE_BYTES, 4 * CACHE_BYTES)]
    assert cold[0] == [0.0, 0.0]
    assert cold[1][0] == pytest.approx(math.log1p(weights / 2), rel=1e-6)
    assert cold[2] == cold[3] == pytest.approx([math.log1p(weights), math.log1p(2 * weights)])
    assert _matrix([base]).shape == (1, len(FEATURES) + len(DERIVED))


def test_a_models_op_maps_to_the_sample_configuration_of_its_signature() -> None:
    """config_of(op) is what the sampler times for a model's op: the op build_sample makes from it
    has the model op's type, input, weight and output shapes and dtypes and attributes, for every
    op of resnet18."""
    from hetero.cost.kernel_space import config_of
    from hetero.quant.precision import load_with_precision

    graph, _ = load_with_precision("builtin:resnet18", "int8")
    rng = np.random.default_rng(0)
    families = set()
    for op in graph.ops_in_order():
        config = config_of(op, 1 << 20)
        assert config is not None, op.name
        _, sample = build_sample(config, rng)
        families.add(config["family"])
        assert sample.type == op.type, op.name
        assert [(s.shape, s.dtype) for s in sample.input_specs if s is not None] == \
            [(s.shape, s.dtype) for s in op.input_specs if s is not None], op.name
        assert [(s.shape, s.dtype) for s in sample.output_specs] == [(s.shape, s.dtype) for s in op.output_specs], op.name
        for key, value in op.attrs.items():  # the sample may add defaults (dilations) the builtin leaves out
            assert tuple(np.atleast_1d(sample.attrs[key])) == tuple(np.atleast_1d(value)), (op.name, key)
    assert {"quantize", "stem", "maxpool", "conv", "pointwise", "add", "globalpool", "flatten", "gemm", "dequantize"} <= families


def test_small_ops_are_timed_at_each_thread_choice_not_by_the_devices_trials(cpu) -> None:
    """time_settled forces one thread, then the cap, on a fresh plan each (the device records no
    trial runs of the op), and keeps the faster choice's statistics; ops the device never learns
    (at or above PARALLEL_MIN_FLOPS) go to time_in_plan unchanged."""
    import numba

    from hetero.backends.cpu.device import PARALLEL_MIN_FLOPS
    from hetero.cost.kernel_timing import _learns_threads, time_settled

    config = {"family": "add", "precision": "int8", "dtype": "uint8", "cin": 32, "cout": 32, "h": 14, "w": 14, "k": 1,
              "stride": 1, "group": 1, "relu": 0, "flush_bytes": 1 << 18}
    rng = np.random.default_rng(3)
    graph, op = build_sample(config, rng)
    assert op.flops < PARALLEL_MIN_FLOPS
    assert _learns_threads(cpu, op) == (numba.config.NUMBA_NUM_THREADS > 1)
    median, p10, p90 = time_settled(cpu, graph, op, rng, 1 << 18, budget_s=0.02)
    assert 0 < p10 <= median <= p90
    trials = cpu._thread_trials[id(op)][1]
    if _learns_threads(cpu, op):
        assert trials["chosen"] in (0, 1) and 1 not in trials and 0 not in trials  # forced, never trialled
    cpu.close()
    cpu._thread_trials.clear()
    big = build_sample({**config, "family": "conv", "cin": 256, "cout": 256, "h": 56, "w": 56, "k": 3}, rng)[1]
    assert big.flops >= PARALLEL_MIN_FLOPS and not _learns_threads(cpu, big)


def test_the_helper_waker_offers_the_cpu_helpers_a_job(cpu) -> None:
    import numba

    from hetero.backends.cpu import helpers
    from hetero.cost.kernel_timing import _helper_waker

    wake = _helper_waker(cpu)
    if numba.config.NUMBA_NUM_THREADS == 1:
        assert wake is None
        return
    before = helpers.HELPERS._generation
    wake()
    assert helpers.HELPERS._generation == before + 1
    assert len(helpers.HELPERS._threads) >= numba.config.NUMBA_NUM_THREADS - 1
