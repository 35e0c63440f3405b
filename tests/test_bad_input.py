"""Every kind of bad input ends in one ``hetero: error: ...`` line naming what is at fault.

Each case runs the command line in-process (``hetero.app.cli.main``) on real bad files made here
(truncated and edited ONNX models, profiles, plans, scenarios, problem files, arrays) and checks
the exit status, that stderr is exactly one ``hetero: error:`` line holding the key name, and
that the command left no output file (nor a temporary one) behind.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from hetero.app.cli import main
from hetero.errors import OutputError
from hetero.io import OutputSet, write_atomic

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "models" / "seed_cnn.onnx"
PROFILE = ROOT / "profiles" / "seed-cnn.int8.json"
PROBLEM = ROOT / "examples" / "problems" / "edge_soc.json"

SCENARIO = """\
name: small
model: builtin:seed-cnn
host: cpu
devices:
  - {name: cpu, spec: intel-i7-1165g7-cpu}
  - {name: gpu, spec: nvidia-t4}
workload: {kind: poisson, rate: 200/s}
policy: static
duration: 1 s
"""


def _edit_json(source: Path, target: Path, edit) -> None:
    data = json.loads(source.read_text())
    edit(data)
    target.write_text(json.dumps(data))


def _first_op(profile: dict) -> dict:
    ops = profile["devices"]["cpu"]["ops"]
    return ops[next(iter(ops))]


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of bad (and a few good) input files."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    np.save(d / "x.npy", rng.random((2, 1, 28, 28), dtype=np.float32))
    np.save(d / "empty_batch.npy", np.zeros((0, 1, 28, 28), np.float32))
    np.save(d / "int32.npy", np.zeros((1, 1, 28, 28), np.int32))
    np.save(d / "float64.npy", np.zeros((1, 1, 28, 28), np.float64))
    nan = np.zeros((1, 1, 28, 28), np.float32)
    nan[0, 0, 3, 3] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "inf.npy", np.full((1, 1, 28, 28), np.inf, np.float32))
    np.save(d / "dims5.npy", np.zeros((1, 1, 1, 28, 28), np.float32))
    np.save(d / "shape.npy", np.zeros((1, 3, 28, 28), np.float32))
    np.save(d / "scalar.npy", np.float32(1.0))
    np.savez(d / "names.npz", inputs=np.zeros((1, 1, 28, 28), np.float32))
    np.savez(d / "none.npz")
    (d / "text.npy").write_text("not an array\n")
    (d / "empty.onnx").write_bytes(b"")
    (d / "garbage.onnx").write_bytes(b"this is not a protobuf at all \xff\xfe")
    data = SEED.read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    model = onnx.load(str(SEED))
    edits = {
        "unsupported.onnx": lambda m: setattr(m.graph.node[1], "op_type", "FancyOp"),
        "cyclic.onnx": lambda m: m.graph.node[0].input.__setitem__(0, m.graph.node[2].output[0]),
        "dangling.onnx": lambda m: m.graph.node[3].input.__setitem__(0, "ghost"),
        "domain.onnx": lambda m: setattr(m.graph.node[1], "domain", "com.example"),
    }
    for name, edit in edits.items():
        edited = copy.deepcopy(model)
        edit(edited)
        onnx.save(edited, str(d / name))
    corrupt = copy.deepcopy(model)
    corrupt.graph.initializer[0].ClearField("raw_data")
    corrupt.graph.initializer[0].float_data.extend([1.0, 2.0])
    onnx.save(corrupt, str(d / "initializer.onnx"))

    (d / "truncated.json").write_text(PROFILE.read_text()[:3000])
    _edit_json(PROFILE, d / "future.json", lambda p: p.update(schema_version=99))
    _edit_json(PROFILE, d / "features.json", lambda p: _first_op(p).update(features={"flops": "many"}))
    _edit_json(PROFILE, d / "negative.json", lambda p: _first_op(p).update(median_s=-1.0))
    _edit_json(PROFILE, d / "precision.json", lambda p: p.update(precision="int4"))
    _edit_json(PROFILE, d / "otherdevice.json", lambda p: p["devices"]["cpu"]["identity"].update(description="Other CPU"))

    _edit_json(PROBLEM, d / "host.json", lambda p: p.update(host="nowhere"))
    _edit_json(PROBLEM, d / "typo.json", lambda p: p.update(devcies=p.pop("devices")))
    _edit_json(PROBLEM, d / "seconds.json", lambda p: p["tasks"][next(iter(p["tasks"]))].update(cpu=-1))
    _edit_json(PROBLEM, d / "cycle.json", lambda p: p["edges"].append({"src": p["edges"][-1]["dst"], "dst": p["edges"][0]["src"], "bytes": 1}))
    (d / "broken.json").write_text('{"devices": ["a"],')

    assert main(["schedule", "--problem", str(PROBLEM), "-o", str(d / "otherplan.json")]) == 0

    scenarios = {
        "ok.yaml": SCENARIO,
        "host.yaml": SCENARIO.replace("host: cpu", "host: cpv"),
        "typo.yaml": SCENARIO.replace("duration:", "durtion:"),
        "units.yaml": SCENARIO.replace("duration: 1 s", "duration: 1 parsec"),
        "clients.yaml": SCENARIO.replace("{kind: poisson, rate: 200/s}", "{kind: closed, clients: -2}"),
        "rate.yaml": SCENARIO.replace("rate: 200/s", "rate: -5/s"),
        "period.yaml": SCENARIO.replace("policy: static", "policy: {name: periodic, period: -1}"),
        "huge.yaml": SCENARIO.replace("rate: 200/s", "rate: 1e9/s"),
        "devices.yaml": SCENARIO.replace("spec: nvidia-t4}", "spec: nvidia-t4, count: 100000000}"),
        "underflow.yaml": SCENARIO + "events:\n  - {at: 0 s, kind: slowdown, device: gpu, factor: 1e200}\n"
                                     "  - {at: 0 s, kind: slowdown, device: gpu, factor: 1e200}\n",
        "arrivals.yaml": SCENARIO.replace("{kind: poisson, rate: 200/s}", "{kind: trace, file: arrivals.csv}"),
        "notyaml.yaml": "devices: [1, 2\n",
        "empty.yaml": "",
    }
    for name, text in scenarios.items():
        (d / name).write_text(text)
    (d / "arrivals.csv").write_text("t\n0.1\nsoon\n")
    (d / "afile").write_text("a regular file\n")
    (d / "folder").mkdir()
    return d


def _run(d: Path, *argv: str) -> list[str]:
    return [a.format(d=d) for a in argv]


RUN = ("run", "builtin:seed-cnn", "--input", "{d}/x.npy")
PART = ("run", "builtin:seed-cnn", "--precision", "int8", "--input", "{d}/x.npy", "--devices", "cpu,reference")
SCHED = ("schedule", "builtin:seed-cnn", "--profile", str(PROFILE))
PROF = ("profile", "builtin:seed-cnn", "--devices", "reference", "-o", "{d}/p_out.json")

# (id, argv, what the message must name, files that must not exist afterwards)
CASES = [
    # model files
    ("model-missing", ("inspect", "{d}/nope.onnx"), "nope.onnx: no such model file", []),
    ("model-empty", ("inspect", "{d}/empty.onnx"), "empty.onnx", []),
    ("model-garbage", ("inspect", "{d}/garbage.onnx"), "garbage.onnx: not a readable ONNX model", []),
    ("model-truncated", ("inspect", "{d}/truncated.onnx"), "truncated.onnx", []),
    ("model-folder", ("inspect", "{d}/folder"), "folder: no such model file (it is a folder)", []),
    ("model-unsupported-op", ("inspect", "{d}/unsupported.onnx"), "FancyOp", []),
    ("model-cycle", ("inspect", "{d}/cyclic.onnx"), "cycle through nodes conv", []),
    ("model-dangling-tensor", ("inspect", "{d}/dangling.onnx"), "reads tensor 'ghost'", []),
    ("model-corrupt-initializer", ("inspect", "{d}/initializer.onnx"), "initializer 'conv.weight'", []),
    ("model-foreign-domain", ("inspect", "{d}/domain.onnx"), "com.example", []),
    ("model-unknown-builtin", ("inspect", "builtin:resnet19"), "resnet19", []),
    # input arrays
    ("input-empty-batch", ("run", "builtin:seed-cnn", "--input", "{d}/empty_batch.npy", "-o", "{d}/y1.npy"), "no samples", ["y1.npy"]),
    ("input-int32", ("run", "builtin:seed-cnn", "--input", "{d}/int32.npy"), "input 'input' is int32, model seed_cnn expects float32", []),
    ("input-float64", ("run", "builtin:seed-cnn", "--input", "{d}/float64.npy"), "is float64", []),
    ("input-nan", ("run", "builtin:seed-cnn", "--input", "{d}/nan.npy", "-o", "{d}/y2.npy"), "input 'input' holds 1 NaN/Inf", ["y2.npy"]),
    ("input-inf", ("run", "builtin:seed-cnn", "--input", "{d}/inf.npy"), "--allow-nonfinite", []),
    ("input-too-many-dims", ("run", "builtin:seed-cnn", "--input", "{d}/dims5.npy"), "[1, 1, 1, 28, 28]", []),
    ("input-wrong-shape", ("run", "builtin:seed-cnn", "--input", "{d}/shape.npy"), "has shape [1, 3, 28, 28]", []),
    ("input-scalar", ("run", "builtin:seed-cnn", "--input", "{d}/scalar.npy"), "scalar", []),
    ("input-npz-wrong-name", ("run", "builtin:seed-cnn", "--input", "{d}/names.npz"), "did you mean 'input'", []),
    ("input-npz-empty", ("run", "builtin:seed-cnn", "--input", "{d}/none.npz"), "holds no arrays", []),
    ("input-missing", ("run", "builtin:seed-cnn", "--input", "{d}/nope.npy"), "nope.npy: no such input file", []),
    ("input-folder", ("run", "builtin:seed-cnn", "--input", "{d}/folder"), "is a folder", []),
    ("input-not-an-array", ("run", "builtin:seed-cnn", "--input", "{d}/text.npy"), "text.npy: not a readable", []),
    ("calibration-int32", ("quantize", "builtin:seed-cnn", "--calibration", "{d}/int32.npy", "-o", "{d}/q1.onnx"), "is int32", ["q1.onnx"]),
    # output paths
    ("output-unwritable", RUN + ("-o", "/proc/hetero-y.npy"), "/proc/hetero-y.npy", []),
    ("output-is-folder", RUN + ("-o", "{d}/folder"), "is a folder", []),
    ("output-under-a-file", RUN + ("-o", "{d}/afile/y.npy"), "afile is a file", []),
    ("output-device-file", RUN + ("-o", "/dev/null"), "/dev/null: is not a regular file", []),
    ("output-wrong-suffix", RUN + ("-o", "{d}/y.xyz"), "y.xyz", ["y.xyz"]),
    ("output-twice", PART + ("-o", "{d}/same.npy", "--trace", "{d}/same.npy"), "same file", ["same.npy"]),
    ("simulate-plot-unwritable", ("simulate", "{d}/ok.yaml", "-o", "{d}/r.json", "--plot", "/proc/hetero-x.png"), "/proc/hetero-x.png", ["r.json"]),
    ("schedule-gantt-unwritable", ("schedule", "--problem", str(PROBLEM), "-o", "{d}/plan.json", "--gantt", "/proc/hetero-g.png"), "/proc/hetero-g.png", ["plan.json"]),
    ("plot-unknown-format", ("simulate", "{d}/ok.yaml", "-o", "{d}/r2.json", "--plot", "{d}/s.xyz"), "'.xyz' is not an image format", ["r2.json", "s.xyz"]),
    ("gantt-no-suffix", ("schedule", "--problem", str(PROBLEM), "--gantt", "{d}/gantt"), "no suffix", ["gantt"]),
    ("profile-output-unwritable", PROF[:-1] + ("/proc/hetero-p.json",), "/proc/hetero-p.json", []),
    ("demo-folder-under-a-file", ("demo", "-o", "{d}/afile/demo"), "afile is a file", []),
    # numbers and options
    ("seed-negative", ("simulate", "{d}/ok.yaml", "--seed", "-1", "-o", "{d}/r3.json"), "--seed", ["r3.json"]),
    ("max-events-zero", ("simulate", "{d}/ok.yaml", "--max-events", "0"), "--max-events", []),
    ("devices-empty", RUN + ("--devices", ""), "--devices '' names no device", []),
    ("devices-commas", SCHED + ("--devices", ",,"), "names no device", []),
    ("devices-repeated", RUN + ("--devices", "cpu,cpu"), "lists cpu twice", []),
    ("device-unknown", RUN + ("--device", "tpu:3"), "tpu:3", []),
    ("device-and-devices", RUN + ("--device", "cpu", "--devices", "cpu,reference"), "not both", []),
    ("budget-zero", PROF + ("--budget-s", "0"), "--budget-s", ["p_out.json"]),
    ("budget-negative", PROF + ("--budget-s", "-1"), "--budget-s", ["p_out.json"]),
    ("target-spread-zero", PROF + ("--target-spread", "0"), "--target-spread", ["p_out.json"]),
    ("max-transfer-negative", PROF + ("--max-transfer-mib", "-1"), "--max-transfer-mib", ["p_out.json"]),
    ("max-transfer-tiny", PROF + ("--max-transfer-mib", "1e-9"), "--max-transfer-mib", ["p_out.json"]),
    ("sweep-negative", PROF + ("--sweep", "-1"), "--sweep", ["p_out.json"]),
    ("holdout-one", ("profile", "--evaluate", str(PROFILE), "--holdout", "1"), "--holdout", []),
    ("percentile-zero", ("quantize", "builtin:seed-cnn", "--method", "percentile", "--percentile", "0", "-o", "{d}/q2.onnx"), "--percentile", ["q2.onnx"]),
    ("repeat-zero", RUN + ("--repeat", "0"), "--repeat", []),
    ("requests-zero", PART + ("--requests", "0"), "--requests", []),
    ("inflight-zero", PART + ("--inflight", "0"), "--inflight", []),
    ("threads-negative", RUN + ("--device", "cpu", "--threads", "-2"), "--threads", []),
    ("validate-requests-zero", ("validate", "builtin:seed-cnn", "--devices", "cpu", "--profile", str(PROFILE), "--requests", "0"), "--requests", []),
    ("not-a-number", RUN + ("--repeat", "three"), "'three' is not a whole number", []),
    ("number-nan", PROF + ("--budget-s", "nan"), "must be finite", ["p_out.json"]),
    ("unknown-option", RUN + ("--bogus",), "unrecognized arguments: --bogus", []),
    ("bad-choice", RUN + ("--precision", "int4"), "invalid choice: 'int4'", []),
    ("missing-argument", ("run", "builtin:seed-cnn"), "--input", []),
    ("no-command", (), "COMMAND", []),
    ("unknown-command", ("frobnicate",), "frobnicate", []),
    ("partitioned-option-on-one-device", RUN + ("--policy", "failover"), "--policy is for partitioned runs", []),
    ("repeat-on-partitioned", PART + ("--repeat", "3"), "--repeat times one device", []),
    # policies and faults
    ("policy-param-negative", PART + ("--policy", "periodic", "--policy-param", "period=-1"), "period (seconds) must be > 0, got -1", []),
    ("policy-param-fraction", PART + ("--policy", "threshold", "--policy-param", "alpha=1.5"), "alpha must be <= 1", []),
    ("policy-param-malformed", PART + ("--policy-param", "period"), "write KEY=VALUE", []),
    ("policy-param-unknown", PART + ("--policy", "periodic", "--policy-param", "peroid=1"), "did you mean 'period'", []),
    ("policy-unknown", PART + ("--policy", "failsafe"), "did you mean 'failover'", []),
    ("fault-malformed", PART + ("--fault", "cpu"), "write DEVICE@REQUEST", []),
    ("fault-unknown-device", PART + ("--fault", "opencl:7@1"), "'opencl:7' is not one of --devices", []),
    ("fault-beyond-requests", PART + ("--fault", "cpu@4", "--requests", "4"), "numbered 0 to 3", []),
    ("fault-twice", PART + ("--fault", "cpu@1", "--fault", "cpu@2"), "cpu is given twice", []),
    # scenario files
    ("scenario-host-not-a-device", ("simulate", "{d}/host.yaml"), "host 'cpv' is not a device", []),
    ("scenario-typo", ("simulate", "{d}/typo.yaml"), "did you mean 'duration'", []),
    ("scenario-unit", ("simulate", "{d}/units.yaml"), "'1 parsec' is not a duration", []),
    ("scenario-negative-count", ("simulate", "{d}/clients.yaml"), "workload.clients must be >= 1", []),
    ("scenario-negative-rate", ("simulate", "{d}/rate.yaml"), "workload.rate must be > 0", []),
    ("scenario-policy-param", ("simulate", "{d}/period.yaml"), "policy.period must be > 0, got -1", []),
    ("scenario-too-large", ("simulate", "{d}/huge.yaml", "-o", "{d}/r4.json"), "1e+09 requests x 7 ops = 7e+09 op executions", ["r4.json"]),
    ("scenario-too-many-devices", ("simulate", "{d}/devices.yaml"), "devices[1].count must be <= 1024", []),
    ("scenario-rate-to-zero", ("simulate", "{d}/underflow.yaml"), "underflow.yaml: events: a device's speed", []),
    ("scenario-arrival-trace", ("simulate", "{d}/arrivals.yaml"), "arrivals.csv:3: t must be a time in seconds", []),
    ("requests-too-many", PART + ("--requests", "2000000"), "at most 1,000,000 requests", []),
    ("scenario-not-yaml", ("simulate", "{d}/notyaml.yaml"), "notyaml.yaml:2: not valid YAML", []),
    ("scenario-empty", ("simulate", "{d}/empty.yaml"), "empty.yaml:1: the scenario is empty", []),
    ("scenario-missing", ("simulate", "{d}/nope.yaml"), "nope.yaml: no such scenario file", []),
    ("scenario-folder", ("simulate", "{d}/folder"), "folder", []),
    # problem files
    ("problem-host-not-a-device", ("schedule", "--problem", "{d}/host.json"), "host 'nowhere' is not a device", []),
    ("problem-typo", ("schedule", "--problem", "{d}/typo.json"), "did you mean 'devices'", []),
    ("problem-negative-seconds", ("schedule", "--problem", "{d}/seconds.json"), "must be >= 0", []),
    ("problem-cycle", ("schedule", "--problem", "{d}/cycle.json", "-o", "{d}/plan2.json"), "edges form a cycle", ["plan2.json"]),
    ("problem-not-json", ("schedule", "--problem", "{d}/broken.json"), "broken.json: not valid JSON", []),
    ("problem-and-model", ("schedule", "builtin:seed-cnn", "--problem", str(PROBLEM)), "not both", []),
    # profiles
    ("profile-truncated", SCHED[:3] + ("{d}/truncated.json", "--devices", "cpu"), "truncated.json: not valid JSON", []),
    ("profile-future", SCHED[:3] + ("{d}/future.json", "--devices", "cpu"), "schema version 99", []),
    ("profile-edited-field", SCHED[:3] + ("{d}/features.json", "--devices", "cpu"), "features.json: malformed profile", []),
    ("profile-negative-time", SCHED[:3] + ("{d}/negative.json", "--devices", "cpu"), "median_s = -1.0", []),
    ("profile-precision", ("profile", "--show", "{d}/precision.json"), "precision is 'int4'", []),
    ("profile-missing", ("profile", "--show", "{d}/nope.json"), "nope.json: no such profile", []),
    ("profile-folder", SCHED[:3] + ("{d}/folder", "--devices", "cpu"), "folder: is a folder, not a profile", []),
    ("profile-other-device", PART[:-1] + ("cpu", "--profile", "{d}/otherdevice.json"), "device 'cpu' was profiled as 'Other CPU'", []),
    ("profile-unknown-device", SCHED + ("--devices", "cpu,tpu9"), "tpu9", []),
    # plan files for --placement
    ("plan-missing", PART + ("--placement", "{d}/nope.json"), "nope.json: no such plan file", []),
    ("plan-of-another-model", PART + ("--placement", "{d}/otherplan.json"), "otherplan.json: the plan does not place node", []),
    ("plan-not-a-plan", PART + ("--placement", str(PROFILE)), "not a hetero plan file", []),
    ("plan-folder", PART + ("--placement", "{d}/folder"), "is a folder, not a plan file", []),
    ("plan-truncated", PART + ("--placement", "{d}/truncated.json"), "not valid JSON", []),
    ("placement-random-seed", PART + ("--placement", "random:x"), "random:SEED", []),
]


@pytest.mark.parametrize("argv, key, absent", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_fault(bad, capsys, argv, key, absent):
    before = set(os.listdir(bad))
    assert main(_run(bad, *argv)) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hetero: error: ")
    assert key in lines[0]
    assert "Traceback" not in captured.err and "unexpected" not in lines[0]
    for name in absent:
        assert not (bad / name).exists(), f"{name} was left behind"
    assert set(os.listdir(bad)) == before, "the command left files behind"


def test_help_and_version_still_work(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    assert "--fault DEVICE@REQUEST" in capsys.readouterr().out


# ----------------------------------------------------------------------------- outputs


def test_outputs_get_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.json", b"{}")
        os.umask(0o002)
        write_atomic(tmp_path / "b.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664


def test_a_failed_commit_writes_nothing_and_keeps_the_old_file(tmp_path):
    keep = tmp_path / "keep.json"
    keep.write_text("old")
    outputs = OutputSet({"-o": keep, "--trace": tmp_path / "new" / "deeper" / "t.json"})
    outputs.put("-o", b"new")
    outputs.put("--trace", b"{}")
    (tmp_path / "new").write_text("a file where the folder should go")  # appears after the checks
    with pytest.raises(OutputError, match="t.json"):
        outputs.commit()
    assert keep.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json", "new"]


def test_outputs_are_written_together_in_new_folders(tmp_path):
    outputs = OutputSet({"-o": tmp_path / "a" / "r.json", "--trace": tmp_path / "b" / "c" / "t.json", "--plot": None})
    assert not outputs.wants("--plot")
    outputs.put("-o", b"1")
    outputs.put("--trace", b"2")
    assert outputs.commit() == [tmp_path / "a" / "r.json", tmp_path / "b" / "c" / "t.json"]
    assert (tmp_path / "a" / "r.json").read_bytes() == b"1" and (tmp_path / "b" / "c" / "t.json").read_bytes() == b"2"


@pytest.mark.parametrize("suffix, magic", [("png", b"\x89PNG"), ("svg", b"<svg"), ("pdf", b"%PDF")])
def test_figures_are_written_in_the_format_their_suffix_names(tmp_path, capsys, suffix, magic):
    gantt = tmp_path / f"g.{suffix}"
    assert main(["schedule", "--problem", str(PROBLEM), "--gantt", str(gantt)]) == 0
    head = gantt.read_bytes()[:400]
    assert magic in head
    if suffix != "png":
        assert not head.startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- faults


def test_fault_with_failover_loses_nothing_and_outputs_are_bit_identical(tmp_path, capsys):
    from hetero.ir.datasets import load_digits_28

    x = tmp_path / "x.npy"
    np.save(x, load_digits_28("test")[0][:4])
    alone, partitioned = tmp_path / "alone.npy", tmp_path / "part.npy"
    assert main(["run", "builtin:seed-cnn", "--precision", "int8", "--input", str(x), "--device", "reference", "-o", str(alone)]) == 0
    capsys.readouterr()
    argv = ["run", "builtin:seed-cnn", "--precision", "int8", "--input", str(x), "--devices", "cpu,reference",
            "--placement", "random:0", "--policy", "failover", "--fault", "cpu@1", "-o", str(partitioned), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failed_requests"] == 0 and summary["requests"] == 4
    assert summary["failed_devices"] == ["cpu"] and summary["retries"] >= 1
    assert summary["faults"] == ["cpu@1"]
    assert "cpu" not in set(summary["placement"].values())
    assert np.array_equal(np.load(partitioned), np.load(alone))


def test_fault_under_the_static_policy_fails_and_writes_nothing(tmp_path, capsys):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32))
    argv = ["run", "builtin:seed-cnn", "--precision", "int8", "--input", str(x), "--devices", "cpu,reference",
            "--placement", "random:0", "--policy", "static", "--fault", "cpu@1", "-o", str(y), "--trace", str(tmp_path / "t.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hetero: error: ") and "requests failed (cpu failed)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_leaves_no_file(tmp_path):
    scenario = tmp_path / "long.yaml"
    scenario.write_text(SCENARIO.replace("rate: 200/s", "rate: 20000/s").replace("duration: 1 s", "duration: 100 s"))
    result = tmp_path / "r.json"
    # a job started in the background by a non-interactive shell (CI, `make test &`) inherits an
    # ignored SIGINT, as background jobs should; the child gets the default disposition back
    proc = subprocess.Popen([sys.executable, "-m", "hetero", "-v", "simulate", str(scenario), "-o", str(result)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    while not any("simulating" in line for line in seen):  # -v logs this as the simulation starts
        line = proc.stderr.readline()
        assert line, f"hetero ended before the simulation started: {seen}"
        seen.append(line)
    time.sleep(1.0)  # well inside the simulation (about a minute of work)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "hetero: error: interrupted; no output file was written", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.yaml"]
