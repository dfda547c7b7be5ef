"""The house's rules, checked on the import graph itself (imports inside functions included):
no cycle among the modules of ``mlp`` and ``attnlab``, and the layers contract of
``pyproject.toml`` holds (``lint-imports`` runs it in CI; this test runs it too)."""

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            component = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                component.append(n)
                if n == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_the_packages() -> None:
    graph = grimp.build_graph("mlp", "attnlab")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_mlp_never_imports_attnlab() -> None:
    graph = grimp.build_graph("mlp", "attnlab")
    assert not graph.find_illegal_dependencies_for_layers(layers=["attnlab", "mlp"])


def test_the_layers_contract_holds() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout, result.stdout[-3000:]


def test_every_module_sits_in_a_layer() -> None:
    """A new module must be placed in the layers contract, or the contract says nothing of it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    graph = grimp.build_graph("mlp", "attnlab")
    roots = {"mlp", "attnlab", "mlp._lazy", "mlp.train"}  # the packages' lazy export tables
    loose = sorted(
        m
        for m in graph.modules
        if m not in roots and not any(m == p or m.startswith(p + ".") for p in placed)
    )
    assert loose == [], f"modules in no layer of pyproject.toml: {loose}"


def test_an_install_ships_every_package() -> None:
    """A non-editable install holds every package of the source tree (a fixed list of top
    packages would leave the subpackages out)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    shipped = set(find_packages(str(ROOT), include=find["find"]["include"]))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("mlp", "attnlab")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= shipped and "attnlab.studies.max_margin" in shipped
