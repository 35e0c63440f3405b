"""Scenario files: every field checked, errors name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hetero.sim import ScenarioError, load_scenario, parse_scenario
from hetero.sim.fields import parse_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scenarios"

BASE = """\
model: builtin:resnet18
host: cpu
devices:
  - {name: cpu, spec: rpi5-cpu}
  - {name: gpu, spec: jetson-orin-nano-gpu, count: 2}
links:
  - {between: [cpu, gpu], latency: 20 us, bandwidth: 8 GB/s}
workload: {kind: poisson, rate: 20/s}
duration: 10 s
"""


def test_a_full_scenario_parses_with_units_and_expanded_devices():
    scenario = parse_scenario(BASE + """\
scheduler: {algorithm: heft, objective: throughput}
noise: {distribution: lognormal, cv: 0.1, per: request}
events:
  - {at: 2 s, kind: slowdown, device: gpu1, factor: 2.5, duration: 500 ms}
  - {at: 3 s, kind: fail, device: gpu0, duration: 1 s}
  - {at: 1 s, kind: bandwidth, link: [cpu, gpu0], factor: 0.5}
policy: {name: periodic, period: 250 ms, alpha: 0.5}
seed: 9
""")
    assert scenario.device_names == ("cpu", "gpu0", "gpu1")
    assert [(l.src, l.dst) for l in scenario.links] == [("cpu", "gpu0"), ("cpu", "gpu1")]
    assert scenario.links[0].latency_s == pytest.approx(20e-6) and scenario.links[0].bandwidth_Bps == 8e9
    assert scenario.workload.rate_per_s == 20.0 and scenario.duration_s == 10.0
    assert [e.kind for e in scenario.events] == ["bandwidth", "slowdown", "fail"]  # sorted by time
    assert scenario.events[1].duration_s == pytest.approx(0.5) and scenario.events[1].factor == 2.5
    assert scenario.policy.name == "periodic" and scenario.policy.params == {"period": 0.25, "alpha": 0.5}
    assert (scenario.algorithm, scenario.objective, scenario.seed) == ("heft", "throughput", 9)
    assert scenario.noise.per == "request"


def test_wifi_bandwidth_in_megabits():
    scenario = parse_scenario(BASE.replace("bandwidth: 8 GB/s", "bandwidth: 50 Mbit/s, shared: true"))
    assert scenario.links[0].bandwidth_Bps == pytest.approx(50e6 / 8) and scenario.links[0].shared


@pytest.mark.parametrize(
    "extra, line, message",
    [
        ("events:\n  - {at: 1 s, kind: slowdown, device: cpu, factor: 0}\n", 11, "events[0].factor must be > 0"),
        ("events:\n  - {at: 1 s, kind: slowdown, device: cpu, factor: 2}\n  - {at: 2 s, kind: slowdown, device: npu, factor: 2}\n",
         12, "events[1].device 'npu' is not a device"),
        ("events:\n  - {at: 1 s, kind: melt, device: cpu}\n", 11, "events[0].kind 'melt' is not one of"),
        ("events:\n  - {at: 1 s, kind: fail, device: cpu, factor: 2}\n", 11, "events[0].factor is not a known field (allowed: at, kind, device, duration)"),
        ("events:\n  - {at: 1 s, kind: load, device: cpu, utilisation: 1.0}\n", 11, "events[0].utilisation must be < 1"),
        ("events:\n  - {at: -1 s, kind: fail, device: cpu}\n", 11, "events[0].at must be >= 0"),
        ("events:\n  - {at: 1 s, kind: recover, device: cpu}\n", 11, "recover of cpu, which is not down"),
        ("events:\n  - {at: 1 s, kind: bandwidth, link: [gpu0, gpu1], factor: 0.5}\n", 11, "events[0].link ['gpu0', 'gpu1'] is not a link"),
        ("policy: {name: periodic, perod: 1 s}\n", 10, "policy.perod is not a known field (allowed: name, period, alpha, stale)"),
        ("policy: {name: threshold, drift: -0.1}\n", 10, "policy.drift must be > 0"),
        ("policy: random\n", 10, "policy 'random' is not one of static, failover, threshold, periodic, least-loaded"),
        ("scheduler: {algorithm: magic}\n", 10, "scheduler.algorithm 'magic' is not one of"),
        ("noise: {distribution: lognormal}\n", 10, "noise needs 'cv'"),
        ("seed: 1.5\n", 10, "seed must be a whole number"),
        ("colour: blue\n", 10, "colour is not a known field (allowed: name, description, model"),
        ("duration: 5 s\n", 10, "duration is given twice"),
        ("links:\n  - {between: [gpu0, cpu], latency: 1 ms, bandwidth: 1 GB/s}\n", 10, "links is given twice"),
        ("durtion: 5 s\n", 10, "durtion is not a known field (allowed: name, description, model, precision, host, devices, "
         "links, workload, scheduler, noise, events, policy, duration, seed); did you mean 'duration'?"),
        ("policy: {name: periodic, peroid: 1 s}\n", 10, "did you mean 'period'?"),
        ("policy: failovr\n", 10, "did you mean 'failover'?"),
        ("policy: {name: periodic, period: 0 s}\n", 10, "policy.period must be > 0, got 0"),
        ("policy: {name: threshold, alpha: 1.5}\n", 10, "policy.alpha must be <= 1 (a fraction), got 1.5"),
    ],
)
def test_errors_name_file_line_and_field(extra, line, message):
    with pytest.raises(ScenarioError) as err:
        parse_scenario(BASE + extra, "scenario.yaml")
    text = str(err.value)
    assert text.startswith(f"scenario.yaml:{line}: "), text
    assert message in text, text
    assert "\n" not in text


@pytest.mark.parametrize(
    "old, new, line, message",
    [
        ("bandwidth: 8 GB/s", "bandwidth: 8 GB", 7, "links[0].bandwidth '8 GB' is not a bandwidth"),
        ("latency: 20 us", "latency: fast", 7, "links[0].latency 'fast' is not a duration"),
        ("between: [cpu, gpu]", "between: [cpu, tpu]", 7, "links[0].between[1] 'tpu' is not a device or the host"),
        ("rate: 20/s", "rate: 0/s", 8, "workload.rate must be > 0"),
        ("kind: poisson, rate: 20/s", "kind: poisson", 8, "workload needs 'rate'"),
        ("kind: poisson, rate: 20/s", "kind: closed, clients: 0", 8, "workload.clients must be >= 1"),
        ("spec: rpi5-cpu", "spec: rpi5-cpu, device: cpu", 4, "devices[0].device is only for profile devices"),
        ("{name: cpu, spec: rpi5-cpu}", "{name: cpu}", 4, "devices[0] needs either 'spec'"),
        ("count: 2", "count: 0", 5, "devices[1].count must be >= 1"),
        ("duration: 10 s", "duration: 0 s", 9, "duration must be > 0"),
        ("host: cpu", "host: gpu", 2, "host 'gpu' names 2 devices"),
        ("host: cpu", "host: cpv", 2, "host 'cpv' is not a device: name one of the devices (cpu, gpu, gpu0, gpu1)"),
        ("count: 2", "count: 5000", 5, "devices[1].count must be <= 1024"),
        ("bandwidth: 8 GB/s}", "bandwidth: 8 GB/s}\n  - {between: [gpu1, cpu], latency: 1 ms, bandwidth: 1 GB/s}", 8,
         "links[1] joins gpu1 and cpu, which an earlier link already joins"),
    ],
)
def test_field_errors_in_place(old, new, line, message):
    assert old in BASE
    with pytest.raises(ScenarioError) as err:
        parse_scenario(BASE.replace(old, new), "s.yaml")
    text = str(err.value)
    assert text.startswith(f"s.yaml:{line}: ") and message in text, text


def test_missing_required_fields_and_bad_yaml():
    with pytest.raises(ScenarioError, match=r"^x.yaml:1: the scenario needs 'devices'"):
        parse_scenario("model: builtin:resnet18\n", "x.yaml")
    with pytest.raises(ScenarioError, match=r"^x.yaml:2: not valid YAML"):
        parse_scenario("model: [a\nduration: 1\n", "x.yaml")
    with pytest.raises(ScenarioError, match=r"^x.yaml:1: the scenario is empty"):
        parse_scenario("", "x.yaml")
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario("/nonexistent/scenario.yaml")


def test_catalog_and_link_errors_at_build_time():
    from hetero.sim import build_world

    scenario = parse_scenario(BASE.replace("spec: rpi5-cpu", "spec: pentium-90"), "b.yaml")
    with pytest.raises(ScenarioError, match=r"^b.yaml:4: devices: spec 'pentium-90' is not in the catalog"):
        build_world(scenario)


def test_trace_workload_reads_csv_with_line_numbers(tmp_path):
    csv = tmp_path / "arrivals.csv"
    csv.write_text("arrival_s,camera\n0.0,a\n0.5,b\n0.25,c\n")
    text = BASE.replace("workload: {kind: poisson, rate: 20/s}", "workload: {kind: trace, file: arrivals.csv}")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ScenarioError, match=r"arrivals.csv:4: arrival times must be >= 0 and non-decreasing"):
        load_scenario(tmp_path / "s.yaml")
    csv.write_text("arrival_s\n0.0\n0.5\n1.25\n")
    assert load_scenario(tmp_path / "s.yaml").workload.arrivals_s == (0.0, 0.5, 1.25)
    (tmp_path / "s.yaml").write_text(text.replace("arrivals.csv", "missing.csv"))
    with pytest.raises(ScenarioError, match=r"s.yaml:8: workload.file 'missing.csv' is not a file"):
        load_scenario(tmp_path / "s.yaml")


def test_field_reader_reports_duplicate_and_nested_lines():
    top = parse_yaml("a:\n  b: 1\n  b: 2\n", "d.yaml")
    with pytest.raises(ScenarioError, match=r"^d.yaml:3: a.b is given twice"):
        top.mapping(("a",))["a"].mapping(("b",))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_scenarios_parse(path):
    scenario = load_scenario(path)
    assert scenario.description
    assert scenario.events or scenario.policy.name == "static"  # dynamic, or a static comparison (neurosurgeon)


def test_policy_parameters_have_one_check_for_scenarios_and_the_command_line():
    from hetero.errors import InputError
    from hetero.policy import make_policy

    with pytest.raises(ScenarioError) as in_file:
        parse_scenario(BASE + "policy: {name: periodic, period: -1}\n", "p.yaml")
    with pytest.raises(InputError) as on_command_line:
        make_policy("periodic", {"period": -1.0})
    problem = "must be > 0, got -1"
    assert str(in_file.value) == f"p.yaml:10: policy.period {problem}"
    assert str(on_command_line.value) == f"policy periodic: parameter period (seconds) {problem}"
    assert parse_scenario(BASE + "policy: {name: threshold, cooldown: 0 s}\n").policy.params == {"cooldown": 0.0}
    make_policy("threshold", {"cooldown": 0.0})


def test_a_workload_too_large_is_refused_with_its_estimate():
    from hetero.sim import build_world
    from hetero.errors import SimulationError
    from hetero.sim.engine import Simulator

    scenario = parse_scenario(BASE.replace("builtin:resnet18", "builtin:seed-cnn").replace("rate: 20/s", "rate: 1e9/s"), "big.yaml")
    world = build_world(scenario)
    ops = len(world.graph)
    with pytest.raises(SimulationError) as err:
        Simulator(scenario, world).run()
    text = str(err.value)
    assert text.startswith("big.yaml: the workload is about 1e+10 requests x") and f"x {ops} ops" in text
    assert "more than the limit of 2e+07" in text and "workload.requests" in text and "--max-events" in text
    capped = parse_scenario(BASE.replace("builtin:resnet18", "builtin:seed-cnn").replace("rate: 20/s", "rate: 1e9/s, requests: 50"))
    result = Simulator(capped, world).run()
    assert result.requests["arrived"] == 50
    with pytest.raises(SimulationError, match="more than the limit of 10"):
        Simulator(scenario.__class__(**{**scenario.__dict__, "workload": capped.workload}), world, max_events=10).run()


def test_a_scenario_without_precision_runs_the_model_at_its_own(tmp_path):
    """A QDQ model in a scenario that names no precision is simulated at int8 (as hetero run does), not fp32."""
    import onnx

    from hetero.ir.datasets import calibration_digits
    from hetero.ir.onnx_import import import_onnx
    from hetero.ir.source import load_onnx
    from hetero.quant.qdq import quantize_model
    from hetero.sim import build_world

    path = tmp_path / "seed_qdq.onnx"
    onnx.save(quantize_model(import_onnx(load_onnx("builtin:seed-cnn")), calibration_digits(16)), str(path))
    text = BASE.replace("builtin:resnet18", str(path))
    assert parse_scenario(text).precision is None

    def costs(scenario_text):
        world = build_world(parse_scenario(scenario_text, str(tmp_path / "s.yaml")))
        return {(node, device): world.cost.compute(node, device) for node in world.graph for device in world.cost.devices}

    own = costs(text)
    assert own == costs(text + "precision: int8\n")
    assert own != costs(text + "precision: fp32\n")
