"""The spec catalog: every shipped device loads, every figure has a source, bad entries are named."""

from __future__ import annotations

import json

import pytest

from hetero.cost.catalog import load_catalog, load_catalog_energy, load_link_energy, load_spec
from hetero.errors import ProfileError
from hetero.resources import data_dir

CATALOG = data_dir("profiles") / "catalog"


def test_catalog_holds_the_promised_device_classes():
    specs = load_catalog()
    assert {"rpi5-cpu", "jetson-orin-nano-gpu", "laptop-iris-xe", "coral-edgetpu", "h100-sxm"} <= set(specs)
    assert specs["coral-edgetpu"].supported_ops is not None and "fp32" not in specs["coral-edgetpu"].peak_ops_per_s
    assert specs["h100-sxm"].peak_ops_per_s["int8"] > specs["jetson-orin-nano-gpu"].peak_ops_per_s["int8"]


@pytest.mark.parametrize("path", sorted(p for p in CATALOG.glob("*.json") if p.name != "links.json"), ids=lambda p: p.stem)
def test_every_figure_is_marked_spec_and_sourced(path):
    data = json.loads(path.read_text())
    assert data["basis"] == "spec" and data["measured"] is False

    def figures(node):
        if isinstance(node, dict) and "value" in node:
            yield node
        elif isinstance(node, dict):
            for child in node.values():
                yield from figures(child)

    found = list(figures(data))
    assert len(found) >= 5
    for figure in found:
        assert len(figure["source"]) > 10


def _write(tmp_path, change):
    data = json.loads((CATALOG / "rpi5-cpu.json").read_text())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(peak_flops=1), "unknown field 'peak_flops'"),
        (lambda d: d.update(basis="measured"), "'basis' must be \"spec\""),
        (lambda d: d["peak_ops_per_s"]["fp32"].pop("source"), "peak_ops_per_s: 'fp32' must be"),
        (lambda d: d["memory_bandwidth_Bps"].update(value=-3), "non-negative number"),
    ],
)
def test_bad_catalog_entries_are_named(tmp_path, change, message):
    with pytest.raises(ProfileError, match="bad.json") as err:
        load_spec(_write(tmp_path, change))
    assert message in str(err.value)


def test_every_catalog_device_has_sourced_power_and_link_energy():
    specs, energy = load_catalog(), load_catalog_energy()
    assert set(energy) == set(specs)
    for name, figures in energy.items():
        assert 0 < figures.idle_W < figures.busy_W, name
        data = json.loads((CATALOG / f"{name}.json").read_text())
        for key in ("idle_W", "busy_W"):
            assert len(data["power"][key]["source"]) > 10
        assert len(data["link"]["energy_J_per_bit"]["source"]) > 10
    assert energy["nvidia-t4"].busy_W == 70.0  # the datasheet's max power
    assert energy["nvidia-t4"].link_J_per_byte == pytest.approx(8 * 1e-11)


def test_link_classes_are_sourced_and_per_byte():
    data = json.loads((CATALOG / "links.json").read_text())
    classes = load_link_energy()
    assert {"wifi", "lte", "pcie"} <= set(classes)
    for name, figure in data["links"].items():
        assert classes[name] == pytest.approx(8 * figure["value"]) and len(figure["source"]) > 10
    assert classes["lte"] > classes["wifi"] > classes["pcie"] > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["power"].update(busy_W={"value": 1.0, "source": "a made-up figure"}), "busy_W 1 W is below idle_W"),
        (lambda d: d["power"].update(peak_W={"value": 1.0, "source": "a made-up figure"}), "power: unknown field 'peak_W'"),
        (lambda d: d["power"]["idle_W"].pop("source"), "power: 'idle_W' must be"),
    ],
)
def test_bad_power_figures_are_named(tmp_path, change, message):
    with pytest.raises(ProfileError, match="bad.json") as err:
        load_spec(_write(tmp_path, change))
    assert message in str(err.value)
