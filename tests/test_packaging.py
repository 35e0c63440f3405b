"""Packaging: every subpackage ships, and kernels/, profiles/ and the seed model are found."""

from __future__ import annotations

import tomllib
from pathlib import Path

import hetero
from hetero.resources import data_dir, seed_model_path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    package_root = Path(hetero.__file__).parent
    found = {
        ".".join(("hetero", *init.parent.relative_to(package_root).parts)).rstrip(".")
        for init in package_root.rglob("__init__.py")
    }
    missing = sorted(found - listed)
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_data_folders_are_found():
    assert data_dir("kernels").is_dir()
    assert data_dir("profiles").is_dir()
    assert seed_model_path().stat().st_size > 100_000
