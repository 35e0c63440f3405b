"""The example scenarios run end to end and write RESULT.json, a Perfetto trace and a plot."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hetero.app.sim_outputs import run_scenario_file, summary_lines

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scenarios"
PNG = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, tmp_path: Path, trace: bool = False, **options):
    paths = {"output": tmp_path / "result.json", "plot": tmp_path / "plot.png"}
    if trace:
        paths["trace"] = tmp_path / "trace.json"
    result = run_scenario_file(EXAMPLES / name, progress=False, **paths, **options)
    data = json.loads(paths["output"].read_text())
    assert data["format"] == "hetero-sim-result" and data["scenario"] == result.scenario
    assert paths["plot"].read_bytes().startswith(PNG)
    if trace:
        records = json.loads(paths["trace"].read_text())["traceEvents"]
        assert {"compute", "transfer", "event"} <= {record.get("cat") for record in records}
        assert sum(1 for r in records if r.get("cat") == "compute") == result.op_executions
    assert summary_lines(result)[0].startswith(f"scenario {result.scenario}")
    return result, data


def plans_between(data: dict, start_s: float, end_s: float) -> list[dict]:
    """The plans adopted in [start_s, end_s)."""
    return [plan for plan in data["plans"] if start_s <= plan["at_s"] < end_s]


def mean_utilisation(data: dict, device: str, start_s: float, end_s: float) -> float:
    rows = [row["utilisation"][device] for row in data["timeline"] if start_s <= row["t_s"] < end_s]
    return sum(rows) / len(rows)


def test_phone_edge_wifi(tmp_path):
    """All on the phone; offloaded to the edge while the phone is loaded (20-40 s); back on the phone after."""
    result, data = run_example("phone_edge_wifi.yaml", tmp_path, trace=True)
    assert data["requests"]["completed"] == data["requests"]["arrived"] > 100
    initial, *later = data["plans"]
    assert set(initial["ops_per_device"]) == {"phone"}
    during = plans_between(data, 20.0, 40.0)
    assert during and set(during[0]["ops_per_device"]) == {"edge"}  # the loaded phone offloads
    assert all(set(plan["ops_per_device"]) == {"phone"} for plan in plans_between(data, 40.0, 60.0))
    assert plans_between(data, 40.0, 60.0) and set(later[-1]["ops_per_device"]) == {"phone"}  # back once free
    assert not plans_between(data, 0.0, 20.0)[1:]  # nothing changes before the load
    assert data["bytes_per_link"]["phone -> edge"] > 0
    assert data["latency_s"]["p50"] == pytest.approx(data["predicted_makespan_s"], rel=0.2)
    radio_J = data["energy_J"]["links"]["phone -> edge"]
    assert radio_J / data["bytes_per_link"]["phone -> edge"] * 602112 == pytest.approx(1.36, rel=0.02)  # per offload
    assert data["power_W"]["phone"]["busy"] * data["predicted_makespan_s"] == pytest.approx(0.06, rel=0.1)  # a local frame


def test_gpu_failover(tmp_path):
    """A pipeline over both GPUs; gpu1 (and the cpu) alone while gpu0 is down; both again after; nothing lost."""
    result, data = run_example("gpu_failover.yaml", tmp_path)
    assert data["requests"]["lost"] == data["requests"]["failed"] == 0
    assert data["requests"]["completed"] == data["requests"]["arrived"] and data["requests"]["retried"] > 0
    assert [p["why"] for p in data["plans"]] == ["initial", "gpu0 failed", "gpu0 recovered"]
    initial, failed, recovered = (set(p["ops_per_device"]) for p in data["plans"])
    assert {"gpu0", "gpu1"} <= initial and {"gpu0", "gpu1"} <= recovered
    assert "gpu0" not in failed and "gpu1" in failed
    assert [p["at_s"] for p in data["plans"][1:]] == [8.0, 14.0]
    assert data["migrated_bytes"] > 0 and not data["errors"]

def test_seed_option_overrides_the_scenario(tmp_path):
    first = run_scenario_file(EXAMPLES / "phone_edge_wifi.yaml", progress=False)
    second = run_scenario_file(EXAMPLES / "phone_edge_wifi.yaml", seed=first.seed + 1, progress=False)
    assert second.seed == first.seed + 1 and second.requests["arrived"] != first.requests["arrived"]


@pytest.mark.slow
def test_gateway_throttling(tmp_path):
    """int8 resnet18 (quantizing it takes a while) pipelined over CPU, iGPU and Edge TPU, camera trace:
    while the iGPU is throttled (10-25 s) layers move from it to the CPU and the NPU, and back after."""
    result, data = run_example("gateway_throttling.yaml", tmp_path)
    assert data["requests"]["completed"] == data["requests"]["arrived"] == 3600
    assert data["rebalances"] >= 2
    initial = data["plans"][0]["ops_per_device"]
    assert set(initial) == {"cpu", "igpu", "npu"}
    throttled = plans_between(data, 10.0, 25.0)
    assert throttled and all(p["ops_per_device"].get("igpu", 0) < initial["igpu"] for p in throttled)
    assert max(p["ops_per_device"].get("npu", 0) for p in throttled) > initial["npu"]
    assert data["plans"][-1]["ops_per_device"] == initial and data["plans"][-1]["at_s"] >= 25.0  # back after
    before, during, after = (mean_utilisation(data, "npu", *window) for window in ((0, 9.9), (10.5, 25), (27, 30)))
    assert during > 1.5 * before  # the NPU takes more of the work while the iGPU is slow
    assert after == pytest.approx(before, rel=0.1)
    timeline = data["timeline"]
    before = [row["p50_s"] for row in timeline if row["t_s"] < 9 and row["p50_s"]]
    after = [row["p50_s"] for row in timeline if row["t_s"] > 27 and row["p50_s"]]
    assert max(after) < 1.2 * max(before)  # back to normal once the throttling is over


def test_measured_profile_devices_with_their_spread(tmp_path):
    """A device from a measured profile (here: the reference backend on this machine) next to a spec one."""
    from hetero.backends import open_device
    from hetero.ir.source import load_graph
    from hetero.cost.profile import save_profile
    from hetero.cost.profiler import Budget, profile_graph
    from hetero.sim import ScenarioError, load_scenario, simulate
    from hetero.sim.scenario import Noise, Workload

    budget = Budget(warmup=1, min_count=5, max_count=20, target_spread=0.2, seconds_per_op=0.02)
    profile = profile_graph(load_graph("builtin:seed-cnn"), [open_device("reference")], "builtin:seed-cnn", "fp32",
                            budget=budget, transfer_sizes=[1024, 65536])
    save_profile(profile, tmp_path / "here.json")
    (tmp_path / "s.yaml").write_text("""\
model: builtin:seed-cnn
devices:
  - {name: ref, profile: here.json, device: reference}
  - {name: pi, spec: rpi5-cpu}
workload: {kind: closed, clients: 1, requests: 200}
noise: profile
duration: 1 h
""")
    scenario = load_scenario(tmp_path / "s.yaml")
    result = simulate(scenario)
    assert result.requests["completed"] == 200
    assert result.latency_s["p99"] > result.latency_s["p50"]  # measured spread, drawn per op
    exact = simulate(dataclasses.replace(scenario, noise=Noise(), workload=Workload("closed", requests=1)))
    assert exact.latency_s["mean"] == pytest.approx(exact.predicted_makespan_s, rel=1e-9)
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace("device: reference", "device: cuda:7"))
    with pytest.raises(ScenarioError, match=r"s.yaml:3: devices: .*here.json has no device 'cuda:7'"):
        simulate(load_scenario(tmp_path / "s.yaml"))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_scenario_parses(path):
    from hetero.sim import load_scenario

    scenario = load_scenario(path)
    assert scenario.devices and scenario.duration_s > 0


@pytest.mark.slow
def test_measured_profile_scenario_rebalances_and_comes_back(monkeypatch):
    """All on the measured cpu; on the Jetson within 0.2 s of the load (3-6 s), with the backlog queued on the
    cpu; back on the cpu after; the tail is what the comment says, and the slowest request twice as slow with
    the backlog left behind."""
    result = run_scenario_file(EXAMPLES / "measured_cpu_plus_jetson.yaml", progress=False).to_dict()
    assert result["requests"]["failed"] == 0 and result["requests"]["lost"] == 0
    assert result["rebalances"] == 2
    assert set(result["plans"][0]["ops_per_device"]) == {"cpu"}
    loaded = plans_between(result, 3.0, 6.0)
    assert loaded and set(loaded[0]["ops_per_device"]) == {"jetson"} and loaded[0]["at_s"] < 3.2
    after = plans_between(result, 6.0, 10.0)
    assert after and set(after[-1]["ops_per_device"]) == {"cpu"} and after[-1]["at_s"] < 6.5
    assert result["requests"]["rerouted"] > 10  # the queued backlog moved
    assert result["latency_s"]["p99"] < 0.005
    from hetero.policy import StaticPolicy

    monkeypatch.setattr(StaticPolicy, "moves_queued", False)
    kept = run_scenario_file(EXAMPLES / "measured_cpu_plus_jetson.yaml", progress=False).to_dict()
    assert kept["requests"]["rerouted"] == 0 and kept["latency_s"]["max"] > 2 * result["latency_s"]["max"]


@pytest.mark.slow
def test_neurosurgeon_latency_and_energy_optimal_partitions(tmp_path):
    """Energy-optimal (the file): all on the phone, 13.7 ms, 0.062 J on the phone per inference; latency-optimal:
    all but fc on the edge, 12.9 ms, about 1.37 J on the phone (its Wi-Fi radio); some 20 times the battery."""
    frugal, data = run_example("neurosurgeon_phone_edge.yaml", tmp_path)
    fast = run_scenario_file(EXAMPLES / "neurosurgeon_phone_edge.yaml", progress=False, objective="latency").to_dict()
    n = data["requests"]["completed"]
    assert n == fast["requests"]["completed"] == 200
    assert data["plans"][0]["ops_per_device"] == {"phone": 49}
    assert fast["plans"][0]["ops_per_device"] == {"edge": 48, "phone": 1}
    assert data["latency_s"]["p50"] == pytest.approx(13.7e-3, rel=0.01)
    assert fast["latency_s"]["p50"] == pytest.approx(12.9e-3, rel=0.01)

    def phone_J(result):  # the phone's CPU and its Wi-Fi radio, per inference
        energy = result["energy_J"]
        return (energy["devices"]["phone"] + sum(energy["links"].values())) / result["requests"]["completed"]

    assert phone_J(data) == pytest.approx(0.062, rel=0.02)
    assert phone_J(fast) == pytest.approx(1.37, rel=0.02)
    assert 15 < phone_J(fast) / phone_J(data) < 25
    assert data["energy_per_request_J"] == pytest.approx(0.2, rel=0.02)  # with the edge server idling
    assert data["energy_per_request_J"] < fast["energy_per_request_J"]
    for result in (data, fast):  # back to back, one at a time: the scheduler's energy is the simulator's
        assert result["plans"][0]["predicted_energy_J"] == pytest.approx(result["energy_per_request_J"], rel=1e-6)


def test_device_names_keep_their_colon_everywhere(tmp_path):
    """A measured opencl:0 is called opencl:0 in the result, its summary, plot legend and trace (as
    every other command calls it), not opencl0."""
    profile = Path(__file__).resolve().parents[1] / "profiles" / "seed-cnn.int8.json"
    path = tmp_path / "colon.yaml"
    path.write_text(
        "name: colon\nmodel: builtin:seed-cnn\nprecision: int8\ndevices:\n"
        f"  - {{name: cpu, profile: '{profile}', device: cpu}}\n"
        f"  - {{name: 'opencl:0', profile: '{profile}', device: 'opencl:0'}}\n"
        "workload: {kind: closed, clients: 1, requests: 20}\nscheduler: {algorithm: single}\n"
        "events:\n  - {at: 0 s, kind: fail, device: 'opencl:0'}\npolicy: {name: failover}\nduration: 1 s\n"
    )
    result = run_scenario_file(path, output=tmp_path / "r.json", trace=tmp_path / "t.json", progress=False)
    assert set(result.devices) == {"cpu", "opencl:0"}
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["utilisation"]) == {"cpu", "opencl:0"}, data["utilisation"]
    assert any("opencl:0" in line for line in summary_lines(result))
    names = {r["args"]["name"] for r in json.loads((tmp_path / "t.json").read_text())["traceEvents"] if r.get("name") == "process_name"}
    assert "opencl:0" in names and "opencl0" not in names


def test_device_names_with_other_punctuation_are_refused(tmp_path):
    from hetero.errors import ScenarioError
    from hetero.sim.scenario import parse_scenario

    text = "model: builtin:seed-cnn\ndevices:\n  - {name: 'gpu/0', spec: nvidia-t4}\nworkload: {kind: closed}\nduration: 1 s\n"
    with pytest.raises(ScenarioError, match=r"s.yaml:3: devices\[0\]\.name 'gpu/0' must be letters, digits, '-', '_' or ':'"):
        parse_scenario(text, "s.yaml")
