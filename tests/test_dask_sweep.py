"""hetero sweep: sweep files and their points, rows equal to hetero simulate, resume, Ctrl-C, Pareto.

Dask runs on real clusters: one LocalCluster of two worker processes for the module, one
external ``dask scheduler`` + ``dask worker`` on loopback (random ports, killed in a finally),
and the command line's own LocalCluster in the Ctrl-C test.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hetero.app.sim_outputs import run_scenario_file
from hetero.sweep import SweepError, dask_client, load_sweep, run_sweep
from hetero.sweep.pareto import pareto_front, select_rows
from hetero.sweep.results import ResultsFile, columns_for, open_results, read_rows

BASE = """\
name: phone-edge
model: builtin:seed-cnn
precision: fp32
host: phone
devices:
  - {name: phone, spec: snapdragon-8gen2-cpu}
  - {name: edge, spec: nvidia-t4, count: 1}
links:
  - {between: [phone, edge], latency: 2 ms, bandwidth: 20 Mbit/s, shared: true}
workload: {kind: poisson, rate: 100/s}
noise: {distribution: lognormal, cv: 0.1}
events:
  - {at: 1 s, kind: load, device: phone, utilisation: 0.95, duration: 2 s}
policy: {name: threshold, drift: 0.5, alpha: 0.2, cooldown: 0.2 s}
duration: 4 s
seed: 1
"""

SWEEP = """\
base: base.yaml
grid:
  workload.rate: [50/s, 200/s]
  devices[edge].count: [1, 2]
  policy: [static, threshold]
  precision: [fp32, int8]
seeds: [3, 4]
batch: 3
"""

DASK = Path(sys.executable).parent / "dask"


def write_sweep(folder: Path, sweep: str = SWEEP, base: str = BASE, name: str = "sweep.yaml") -> Path:
    (folder / "base.yaml").write_text(base)
    path = folder / name
    path.write_text(sweep)
    return path


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


# ----------------------------------------------------------------------------- sweep files


def test_grid_points_are_full_scenarios_with_the_swept_values(tmp_path):
    from hetero.sweep.spec import point_scenario

    sweep = load_sweep(write_sweep(tmp_path, SWEEP), check_worlds=False)  # the worlds: test_a_bad_point_...
    assert sweep.axes == ("workload.rate", "devices[edge].count", "policy", "precision")
    assert len(sweep.points) == 16 and sweep.runs == 32
    seen = set()
    for point in sweep.points:
        values = dict(point.values)
        scenario = point_scenario(point, sweep.base)
        assert scenario.workload.rate_per_s == float(values["workload.rate"].removesuffix("/s"))
        assert scenario.devices[1].count == values["devices[edge].count"]
        assert scenario.devices[1].names == (("edge",) if values["devices[edge].count"] == 1 else ("edge0", "edge1"))
        assert scenario.policy.name == values["policy"] and scenario.precision == values["precision"]
        assert scenario.links and scenario.events  # the rest of the base is kept
        assert point.seeds == (3, 4)
        seen.add(point.scenario_hash)
    assert len(seen) == 16  # one hash per distinct scenario
    again = load_sweep(tmp_path / "sweep.yaml", check_worlds=False)
    assert [p.scenario_hash for p in again.points] == [p.scenario_hash for p in sweep.points]


def test_random_points_stay_in_their_ranges_and_keep_units(tmp_path):
    text = """\
base: base.yaml
random:
  n: 30
  seed: 7
  params:
    workload.rate: {min: 20/s, max: 400/s, log: true}
    devices[1].count: {min: 1, max: 3}
    policy: {choice: [static, threshold]}
"""
    sweep = load_sweep(write_sweep(tmp_path, text), check_worlds=False)
    assert len(sweep.points) == 30
    rates = [float(dict(p.values)["workload.rate"].removesuffix("/s")) for p in sweep.points]
    counts = {dict(p.values)["devices[1].count"] for p in sweep.points}
    assert all(20 <= r <= 400 for r in rates) and len(set(rates)) == 30
    assert counts <= {1, 2, 3} and len(counts) > 1
    assert {dict(p.values)["policy"] for p in sweep.points} == {"static", "threshold"}
    assert all(p.seeds == (1,) for p in sweep.points)  # the base scenario's seed
    same = load_sweep(tmp_path / "sweep.yaml", check_worlds=False)
    assert [p.values for p in same.points] == [p.values for p in sweep.points]


@pytest.mark.parametrize("grid, needle, message", [
    ("devices[edge].count: [1, 0]", "devices[edge].count", "point 1 (policy=static, devices[edge].count=0): base.yaml: devices[1].count must be >= 1"),
    ("workload.rate: [50/s, fast]", "workload.rate", "point 1 (policy=static, workload.rate=fast): base.yaml: workload.rate 'fast' is not a rate"),
    ("devices[gpu].count: [2]", "devices[gpu].count", "devices has no entry named 'gpu' (names: phone, edge)"),
    ("devices[5].count: [2]", "devices[5].count", "devices has 2 entries; [5] is out of range"),
    ("devices[edge].spec: [nvidia-t4, tpu-9000]", "devices[edge].spec", "point 1 (policy=static, devices[edge].spec=tpu-9000): base.yaml: devices: spec 'tpu-9000' is not in the catalog"),
])
def test_a_bad_point_names_the_sweep_line_and_the_point(tmp_path, grid, needle, message):
    text = f"base: base.yaml\nseeds: [1]\ngrid:\n  policy: [static]\n  {grid}\n"
    with pytest.raises(SweepError) as caught:
        load_sweep(write_sweep(tmp_path, text))
    where = f"{tmp_path / 'sweep.yaml'}:{line_of(text, needle)}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert message in str(caught.value)


def test_sweep_file_errors_name_their_line(tmp_path):
    cases = {
        "base: missing.yaml\nseeds: [1]\n": (1, "'missing.yaml' is not a file"),
        "base: base.yaml\ngrids:\n  policy: [static]\n": (2, "grids is not a known field"),
        "base: base.yaml\ngrid:\n  policy: []\n": (3, "grid.policy must not be empty"),
        "base: base.yaml\ngrid:\n  policy: [static]\nrandom: {n: 2, params: {policy: {min: 5, max: 1}}}\n": (4, "max must be >= min"),
        "base: base.yaml\ngrid:\n  seed: [1, 2]\nseeds: [1]\n": (3, "seed is swept and 'seeds' is given"),
        "base: base.yaml\ngrid:\n  'workload..rate': [1]\n": (3, "is not a dotted path"),
    }
    for text, (line, message) in cases.items():
        with pytest.raises(SweepError) as caught:
            load_sweep(write_sweep(tmp_path, text))
        assert str(caught.value).startswith(f"{tmp_path / 'sweep.yaml'}:{line}: "), (text, str(caught.value))
        assert message in str(caught.value), (text, str(caught.value))


# ----------------------------------------------------------------------------- the results file


def test_results_file_drops_a_torn_last_line_and_keys_the_rest(tmp_path):
    path = tmp_path / "r.csv"
    columns = columns_for(("workload.rate",), energy=False)
    with ResultsFile(path, columns) as results:
        assert results.existing.rows == -1
        results.append({"point": 0, "seed": 1, "scenario_hash": "aa", "workload.rate": "5/s", "latency_p99_s": 0.1 + 0.2})
        results.append({"point": 1, "seed": 1, "scenario_hash": "bb", "error": "line one\nline two, with a comma"})
    whole = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(b'2,1,cc,"5/s",,0.0')  # a crash in the middle of a row
    existing = open_results(path, columns)
    assert existing.dropped_torn_line and existing.rows == 2
    assert existing.keys == {("aa", 1), ("bb", 1)}
    assert path.read_bytes() == whole
    rows = rows_of(path)
    assert float(rows[0]["latency_p99_s"]) == 0.1 + 0.2 and rows[1]["error"] == "line one line two, with a comma"
    with pytest.raises(SweepError, match="has the columns"):
        open_results(path, columns_for(("policy",), energy=False))


# ----------------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def local_client():
    with dask_client(workers=2) as client:
        yield client


def _reader(stream, lines: "queue.Queue[str]") -> None:
    for line in stream:
        lines.put(line)


def _stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def external_scheduler():
    """A `dask scheduler` and one `dask worker` on loopback ports the OS picks; stopped afterwards."""
    assert DASK.is_file(), f"{DASK} is missing: distributed is a dependency of hetero"
    processes: list[subprocess.Popen] = []
    try:
        scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        processes.append(scheduler)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_reader, args=(scheduler.stderr, lines), daemon=True).start()
        address, deadline = None, time.monotonic() + 60
        while address is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail("dask scheduler did not say its address within 60 s")
            if "Scheduler at:" in line:
                address = line.split("Scheduler at:")[1].strip()
        worker = subprocess.Popen([str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                                   "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        processes.append(worker)
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        _stop(processes)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, local_client):
    """The grid sweep run once on the LocalCluster, plus one bad point (too large to simulate)."""
    folder = tmp_path_factory.mktemp("swept")
    path = write_sweep(folder, SWEEP)
    sweep = load_sweep(path)
    output = folder / "results.csv"
    summary = run_sweep(sweep, output, local_client)
    return folder, sweep, output, summary


@pytest.mark.slow
def test_each_row_equals_hetero_simulate_bit_for_bit(swept):
    folder, sweep, output, summary = swept
    assert (summary.runs, summary.already, summary.computed, summary.failed, summary.workers) == (32, 0, 32, 0, 2)
    rows = rows_of(output)
    assert sorted((int(r["point"]), int(r["seed"])) for r in rows) == [(p, s) for p in range(16) for s in (3, 4)]
    by_index = {p.index: p for p in sweep.points}
    checked = 0
    for row in rows:
        point = by_index[int(row["point"])]
        if int(row["point"]) % 3:  # every third point (fp32 and int8): each hetero simulate builds a world
            continue
        scenario = folder / f"point{point.index}.yaml"
        scenario.write_text(point.text)  # beside base.yaml: relative paths resolve the same
        result = json.loads(_simulate(scenario, int(row["seed"])))
        expected = {
            "latency_mean_s": result["latency_s"]["mean"], "latency_p50_s": result["latency_s"]["p50"],
            "latency_p95_s": result["latency_s"]["p95"], "latency_p99_s": result["latency_s"]["p99"],
            "throughput_per_s": result["throughput_per_s"], "completed": result["requests"]["completed"],
            "failed": result["requests"]["failed"], "lost": result["requests"]["lost"], "rebalances": result["rebalances"],
        }
        if "energy_per_request_J" in row:
            expected["energy_per_request_J"] = result["energy_per_request_J"]
        for column, value in expected.items():
            assert row[column] == repr(value) if isinstance(value, float) else row[column] == str(value), (column, row, value)
        assert row["workload.rate"] == dict(point.values)["workload.rate"] and row["scenario_hash"] == point.scenario_hash
        checked += 1
    assert checked == 12
    assert any(float(r["cost_usd"]) == 160.0 + 2000.0 for r in rows if r["devices[edge].count"] == "1")


def _simulate(scenario: Path, seed: int) -> str:
    out = scenario.with_suffix(f".seed{seed}.json")
    run_scenario_file(scenario, output=out, seed=seed, progress=False)  # what hetero simulate runs
    return out.read_text()


@pytest.mark.slow
def test_a_rerun_computes_nothing_and_a_bad_point_is_a_row(swept, local_client):
    folder, sweep, output, _ = swept
    before = output.read_bytes()
    again = run_sweep(sweep, output, local_client)
    assert (again.already, again.computed) == (32, 0) and output.read_bytes() == before
    text = SWEEP.replace("  workload.rate: [50/s, 200/s]\n", "  workload.rate: [50/s, 1e9/s]\n")
    bad = load_sweep(write_sweep(folder, text, name="bad.yaml"))  # a valid scenario, too large to simulate
    summary = run_sweep(bad, folder / "bad.csv", local_client, batch=5)
    assert summary.computed == 32 and summary.failed == 16
    for row in rows_of(folder / "bad.csv"):
        if row["workload.rate"] == "1e9/s":
            assert "op executions, more than the limit" in row["error"] and row["latency_p99_s"] == ""
        else:
            assert row["error"] == "" and float(row["latency_p99_s"]) > 0


@pytest.mark.slow
def test_resume_after_a_killed_run_on_an_external_cluster(tmp_path, external_scheduler):
    from distributed import Client

    long = BASE.replace("duration: 4 s", "duration: 20 s")
    text = "base: base.yaml\ngrid:\n  workload.rate: [60/s, 70/s, 80/s, 90/s, 100/s, 110/s]\nseeds: [1, 2]\nbatch: 1\n"
    path = write_sweep(tmp_path, text, base=long)
    output = tmp_path / "r.csv"
    proc = subprocess.Popen([sys.executable, "-m", "hetero", "sweep", str(path), "-o", str(output), "--scheduler",
                             external_scheduler, "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (output.exists() and output.read_bytes().count(b"\n") >= 3):  # header + 2 rows
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no rows within 120 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    kept = output.read_bytes()
    kept_rows = kept.count(b"\n") - 1
    assert 2 <= kept_rows < 12, "the killed run finished the sweep: nothing left to resume"
    with open(output, "ab") as handle:
        handle.write(b"5,2,0123456789abcdef,110/s,,0.00")  # and a row torn by the crash
    with Client(external_scheduler, timeout=30) as client:
        summary = run_sweep(load_sweep(path), output, client)
    assert summary.dropped_torn_line and summary.already == kept_rows and summary.computed == 12 - kept_rows
    assert output.read_bytes().startswith(kept)
    rows = rows_of(output)
    assert sorted((r["workload.rate"], r["seed"]) for r in rows) == sorted(
        (f"{rate}/s", seed) for rate in (60, 70, 80, 90, 100, 110) for seed in ("1", "2"))
    assert all(r["error"] == "" for r in rows)


def _descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(int(entry.name))
    return found + [g for child in found for g in _descendants(child)]


@pytest.mark.slow
def test_ctrl_c_stops_the_local_cluster_and_keeps_the_rows(tmp_path):
    long = BASE.replace("duration: 4 s", "duration: 20 s")
    text = "base: base.yaml\ngrid:\n  workload.rate: [60/s, 70/s, 80/s, 90/s, 100/s, 110/s]\nseeds: [1, 2]\nbatch: 1\n"
    path = write_sweep(tmp_path, text, base=long)
    output = tmp_path / "r.csv"
    # a new session (its own process group, as a terminal's foreground job), SIGINT not ignored
    proc = subprocess.Popen([sys.executable, "-m", "hetero", "sweep", str(path), "-o", str(output), "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (output.exists() and output.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "no row within 120 s"
            time.sleep(0.1)
        children = _descendants(proc.pid)
        assert children, "the local cluster's worker processes are children of hetero"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"hetero: error: interrupted; {output} keeps the runs that finished")
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert not alive, f"worker processes left running: {alive}"
    assert 1 <= len(read_rows(output)) < 12


# ----------------------------------------------------------------------------- the Pareto front


@pytest.mark.slow
def test_pareto_front_is_exactly_the_undominated_points(swept, tmp_path):
    from hetero.app.cli import main

    _, _, output, _ = swept
    rows = read_rows(output)
    front = pareto_front(rows, "cost", "latency_p99_s")
    assert front.x == "cost_usd" and len(front.points) == 16 and front.left_out == 0

    def beats(a, b):
        return a.x <= b.x and a.y <= b.y and (a.x < b.x or a.y < b.y)

    on_front = set(front.front)
    for p in front.points:  # brute force over every pair
        assert (p in on_front) == (not any(beats(q, p) for q in front.points))
    for p in front.points:  # the mean over the point's two seeds
        mine = [float(r["latency_p99_s"]) for r in rows if int(r["point"]) == p.point]
        assert p.seeds == 2 and p.y == pytest.approx(sum(mine) / 2, rel=1e-15)
    fast = pareto_front(select_rows(rows, ["workload.rate=200/s"]), "cost", "latency_p99_s")
    assert len(fast.points) == 8
    image = tmp_path / "front.png"
    assert main(["sweep", "--plot", str(output), "--where", "workload.rate=200/s", "-o", str(image)]) == 0
    assert image.read_bytes().startswith(b"\x89PNG")
    assert main(["sweep", "--plot", str(output), "-o", str(image), "--y", "latency_p42_s"]) == 1
