"""Device discovery: OpenCL devices are usable only when they build and run a kernel; a failing
one is listed as absent with the compiler's first line and the fix; unusable names are one-line
errors; profiles record the OpenCL platform and refuse another; a device that fails mid-profile
is an error, not a shorter profile."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest

from conftest import usable_opencl
from hetero.backends import open_device
from hetero.app.cli import main
from hetero.backends.discovery import OPENCL_FIX, _run_probe, discover, opencl_probe, opencl_verdict, probe_opencl
from hetero.errors import DeviceError, ProfileError
from hetero.ir.graph import Graph, TensorSpec, make_op
from hetero.cost.profile import check_device, load_profile, save_profile
from hetero.cost.profiler import Budget, profile_graph

OPENCL, NO_OPENCL = usable_opencl()
needs_opencl = pytest.mark.skipif(not OPENCL, reason=NO_OPENCL)
LISTED = opencl_probe().usable + tuple(a for a in opencl_probe().absent if a.device)
needs_a_listed_device = pytest.mark.skipif(
    importlib.util.find_spec("pyopencl") is None or not LISTED, reason="no OpenCL platform lists a device to probe")
BROKEN_SOURCE = "__kernel void probe(__global int *data, const int offset) { data[0] = no_such_name + offset; }"
TINY = Budget(warmup=1, min_count=3, max_count=10, target_spread=0.5, seconds_per_op=0.05)


UNARY = ("Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Softmax", "Identity")


def unary_chain(length: int) -> Graph:
    """A chain of ``length`` different unary ops on a small float tensor (one signature each)."""
    specs = {"t0": TensorSpec("t0", (4, 8), "float32")}
    ops = []
    for i in range(length):
        op = make_op(f"n{i}", UNARY[i], [f"t{i}"], [f"t{i + 1}"], {}, specs, {})
        specs[f"t{i + 1}"] = op.output_specs[0]
        ops.append(op)
    return Graph.build(ops, [specs["t0"]], [f"t{length}"], name="unary-chain")


@needs_a_listed_device
def test_a_device_whose_build_fails_is_absent_with_the_compilers_first_line():
    found = probe_opencl(source=BROKEN_SOURCE)
    assert not found.usable and not found.addresses
    assert len(found.absent) == len(LISTED)
    for entry in found.absent:
        assert entry.kind == "opencl" and entry.device and entry.device in entry.reason
        assert "cannot build and run a kernel: error" in entry.reason and OPENCL_FIX in entry.reason
        assert "\n" not in entry.reason
    # a compiler that works reports the error in this source; a broken one its own first line
    working = {d.description.split(" (")[0] for d in OPENCL}
    for entry in found.absent:
        if entry.device.split(" on ")[0] in working:
            assert "no_such_name" in entry.reason


@needs_opencl
def test_usable_devices_compute_the_builtins_hetero_kernels_call():
    """The probe's second kernel (float16 fma, rint, saturating conversions, exp/erf/tanh...) runs
    and checks its values on every device discovery calls usable; a compiler that dies on one of
    them (the wheel's LLVM 14 on Zen 4/5) makes its device absent instead (probe process)."""
    import pyopencl as cl

    from hetero.backends.opencl import cl_device
    from hetero.backends.opencl_probe import OPTIONS, run_builtins

    for info in OPENCL:
        context = cl.Context([cl_device(info)])
        queue = cl.CommandQueue(context)
        assert run_builtins(cl, np, context, queue, OPTIONS) == "", info.name


@needs_a_listed_device
def test_a_build_option_the_compiler_rejects_makes_the_device_absent():
    found = probe_opencl(options=["-cl-std=CL1.2", "-no-such-build-option"])
    assert not found.usable
    assert all("cannot build and run a kernel" in a.reason for a in found.absent)


@needs_a_listed_device
def test_a_probe_that_does_not_finish_offers_no_device():
    found = probe_opencl(timeout_s=0.05)  # python and pyopencl cannot even start in 50 ms
    assert not found.usable
    assert any("did not finish in" in a.reason for a in found.absent)


def test_opencl_is_probed_once_per_process():
    first = opencl_probe()
    started = time.perf_counter()
    devices, absent = discover()
    assert time.perf_counter() - started < 0.5
    assert opencl_probe() is first
    assert [d for d in devices if d.kind == "opencl"] == list(first.usable)
    assert [a for a in absent if a.kind == "opencl"] == list(first.absent)


def test_usable_opencl_devices_are_numbered_from_zero_and_say_their_driver():
    assert [d.name for d in OPENCL] == [f"opencl:{i}" for i in range(len(OPENCL))]
    for info in OPENCL:
        assert info.platform and info.driver
        assert info.platform.startswith("Portable Computing Language") == ("PoCL" in info.description)


@needs_a_listed_device
def test_every_device_that_works_gets_the_next_number_and_a_label_telling_drivers_apart():
    listing = {r["index"]: r for r in _run_probe({"start": 1 << 30}, 60.0).records if r["event"] == "device"}
    assert len(listing) == len(LISTED)
    all_work = opencl_verdict(listing, {i: "" for i in listing})  # as on a CPU both PoCLs know
    assert [d.name for d in all_work.usable] == [f"opencl:{i}" for i in range(len(listing))] and not all_work.absent
    drivers = {(r["name"], r["platform_version"], r["library"]) for r in listing.values()}
    assert len({d.description for d in all_work.usable}) == len(drivers)  # two PoCLs never look alike
    for info, record in zip(all_work.usable, listing.values()):
        assert (record["origin"] or record["library"].rsplit("/", 1)[-1]) in info.description
        assert record["library"] in info.driver
    first_fails = opencl_verdict(listing, {i: "error: broken" if i == 0 else "" for i in listing})
    assert [d.name for d in first_fails.usable] == [f"opencl:{i}" for i in range(len(listing) - 1)]
    assert first_fails.addresses.get("opencl:0") == ((listing[1]["platform_index"], listing[1]["device_index"])
                                                     if len(listing) > 1 else None)


@needs_opencl
def test_each_usable_device_opens_and_is_the_one_discovery_probed():
    for info in OPENCL:
        device = open_device(info.name)
        try:
            assert device.device.name.strip() in info.description
            assert f"{device.device.platform.name.strip()} {device.device.platform.version.strip()}" == info.platform
        finally:
            device.close()


def test_an_unusable_opencl_name_is_a_one_line_error_saying_why():
    name = f"opencl:{len(OPENCL)}"
    with pytest.raises(DeviceError) as err:
        open_device(name)
    message = str(err.value)
    assert "\n" not in message and f"'{name}' is not usable here" in message
    assert "usable devices: reference, cpu" in message
    for entry in opencl_probe().absent:
        assert entry.reason in message


def test_devices_table_tells_the_drivers_apart_and_lists_failing_devices(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for info in OPENCL:
        assert f"{info.name:<11} opencl" in out and f"driver: {info.driver}" in out
    for entry in opencl_probe().absent:
        assert f"opencl:     absent: {entry.reason}" in out
    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["platform"] for d in report["devices"] if d["kind"] == "opencl"] == [d.platform for d in OPENCL]
    assert [a["device"] for a in report["absent"] if a["kind"] == "opencl"] == [a.device for a in opencl_probe().absent]


def test_profile_naming_an_unusable_device_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["profile", "builtin:seed-cnn", "--devices", f"cpu,opencl:{len(OPENCL)}", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hetero: error: device") and "is not usable here" in err and "\n" not in err
    assert not out.exists()


@needs_opencl
def test_profile_records_the_opencl_platform_and_refuses_another(tmp_path):
    info = OPENCL[0]
    device = open_device(info.name)
    try:
        profile = profile_graph(unary_chain(1), [device], "unary-chain", "fp32", TINY, transfer_sizes=[1024, 4096])
    finally:
        device.close()
    path = tmp_path / "unary.json"
    save_profile(profile, path)
    assert json.loads(path.read_text())["devices"][info.name]["identity"]["platform"] == info.platform
    check_device(load_profile(path), str(path), info.name, info)  # the same platform: accepted
    data = json.loads(path.read_text())
    data["devices"][info.name]["identity"]["platform"] = "Portable Computing Language OpenCL 3.0 PoCL 9.9-rc1 Linux, LLVM 99.0.1"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError) as err:
        check_device(load_profile(path), str(path), info.name, info)
    message = str(err.value)
    assert "\n" not in message and "measured with OpenCL platform 'PoCL 9.9-rc1, LLVM 99.0.1'" in message
    assert f"re-measure it: hetero profile unary-chain --precision fp32 --devices {info.name} --reuse -o {path}" in message
    del data["devices"][info.name]["identity"]["platform"]  # a profile from before platforms were recorded
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"\(by its description\)"):
        check_device(load_profile(path), str(path), info.name, info)


def test_a_device_failing_mid_profile_is_an_error_not_a_shorter_profile():
    graph = unary_chain(6)
    device = open_device("reference")
    device.inject_failure(after_ops=3)  # breaks on the fourth op it runs, as a lost device does
    with pytest.raises(DeviceError, match=r"device reference failed on \w+ node \w+ after \d+ of 6 op signatures"):
        profile_graph(graph, [device], "unary-chain", "fp32", TINY, transfer_sizes=[1024])
