"""Packaging: every subpackage ships, and kernels/, profiles/ and the seed model are found."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import hetero
from hetero.resources import data_dir, seed_model_path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(CONFIG["packages"])
    package_root = Path(hetero.__file__).parent
    found = {
        ".".join(("hetero", *init.parent.relative_to(package_root).parts)).rstrip(".")
        for init in package_root.rglob("__init__.py")
    }
    missing = sorted(found - listed)
    assert not missing, f"add these packages to [tool.setuptools] packages in pyproject.toml: {missing}"


def _data_folders() -> dict[str, Path]:
    """Every folder under a mapped data package (kernels/, profiles/, ...) by the package name it ships as."""
    folders: dict[str, Path] = {}
    for package, folder in CONFIG["package-dir"].items():
        if not package.startswith("hetero._data."):
            continue
        top = ROOT / folder
        for sub in [top, *(d for d in top.rglob("*") if d.is_dir())]:
            if any(f.is_file() for f in sub.iterdir()):
                folders[".".join((package, *sub.relative_to(top).parts))] = sub
    return folders


def test_every_data_folder_is_a_listed_package_with_its_files():
    """A data subfolder left out of the package list makes setuptools warn at every install (and
    drop it in some versions); each one must be listed, and its files matched by package-data."""
    folders = _data_folders()
    assert "hetero._data.profiles.catalog" in folders  # the spec catalog lives in a subfolder
    missing = sorted(set(folders) - set(CONFIG["packages"]))
    assert not missing, f"add these data packages to [tool.setuptools] packages in pyproject.toml: {missing}"
    for package, folder in folders.items():
        patterns = CONFIG["package-data"].get(package, [])
        unshipped = [f.name for f in folder.iterdir() if f.is_file() and not any(fnmatch.fnmatch(f.name, p) for p in patterns)
                     and not f.name.startswith(".") and f.suffix != ".pyc"]
        assert not unshipped, f"{folder.relative_to(ROOT)}: {unshipped} match no [tool.setuptools.package-data] pattern of {package}"


def test_data_folders_are_found():
    assert data_dir("kernels").is_dir()
    assert data_dir("profiles").is_dir()
    assert (data_dir("profiles") / "catalog").is_dir()
    assert seed_model_path().stat().st_size > 100_000
