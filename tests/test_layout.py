"""The package layout: one package per pipeline stage, imports running one way, no import circle.

Read from the source with ``ast`` (every import, also those inside functions), so the check holds
for code paths no other test happens to import.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import networkx as nx
import pytest

import hetero
from hetero.errors import HeteroError

PACKAGE_ROOT = Path(hetero.__file__).resolve().parent

# Lowest first; a module may import from its own layer and the layers below it. The pipeline's
# stages in the order data flows (see README "Layout"); the CostModel protocol sits with the
# Schedule it prices, below the profiler that measures it.
LAYERS: list[tuple[str, ...]] = [
    ("hetero.errors", "hetero.io", "hetero.resources"),
    ("hetero.ir", "hetero"),
    ("hetero.backends",),
    ("hetero.cost.protocol", "hetero.cost.energy", "hetero.problem", "hetero.schedule"),
    ("hetero.schedulers",),
    ("hetero.policy",),
    ("hetero.trace",),
    ("hetero.exec",),
    ("hetero.remote",),  # devices on other hosts (Dask): backends behind the Device protocol, used by hetero.app
    ("hetero.quant",),
    ("hetero.train",),  # training (torch); only hetero.app's training commands and the demo import it
    ("hetero.cost",),
    ("hetero.sim",),
    ("hetero.sweep",),
    ("hetero.app", "hetero.__main__"),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix naming ``module``."""
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add its package to LAYERS"
    return best


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        if "_data" in path.parts:
            continue
        parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
        name = ".".join(("hetero", *parts))
        files[name.removesuffix(".__init__")] = path
    return files


def imports_of(name: str, path: Path, known: set[str], top_level_only: bool) -> set[str]:
    """hetero modules that ``name`` imports (``from pkg import module`` resolves to the module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    nodes = [n for n in (tree.body if top_level_only else ast.walk(tree)) if id(n) not in typing_only]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hetero")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "hetero":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {m for m in found if m in known and m != name}


def test_imports_run_one_way():
    files = module_files()
    known = set(files)
    wrong = []
    for name, path in sorted(files.items()):
        for target in sorted(imports_of(name, path, known, top_level_only=False)):
            if layer_of(target) > layer_of(name):
                wrong.append(f"{name} imports {target} (a higher layer)")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    files = module_files()
    known = set(files)
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for target in imports_of(name, path, known, top_level_only=True):
            # a package's __init__ importing its own modules is not a circle
            if not target.startswith(name + "."):
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles: {cycles[:5]}"


@pytest.mark.parametrize("module", sorted(m for m in module_files() if not m.endswith("__main__")))
def test_each_module_imports_on_its_own(module):
    importlib.import_module(module)


def test_every_exception_descends_from_hetero_error():
    strays = []
    for info in pkgutil.walk_packages(hetero.__path__, "hetero."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__ and not issubclass(obj, HeteroError):
                strays.append(f"{info.name}.{obj.__name__}")
    assert not strays, f"exceptions outside the HeteroError tree: {strays}"
