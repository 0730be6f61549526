"""The shape of the code: dependencies among nnsig_core's modules point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import nnsig_core

ROOT = Path(nnsig_core.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """Every import (at any depth, functions included) outside ``if TYPE_CHECKING:`` blocks,
    as (module, names imported from it)."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the nnsig_core modules it imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for target, names in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if not target.startswith("nnsig_core"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            for t in subs or [target]:
                if t != module and t in files:
                    graph[module].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycle_among_nnsig_core_modules() -> None:
    graph = import_graph()
    assert len(graph) > 40 and "nnsig_core.analysis.engine" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_dask_driver_imports_dask() -> None:
    """Dask is imported (even inside a function) only by the Dask driver of the executor
    (``execute/dask_blocks.py``, ``execute/client.py``) and the ``distributed`` package."""
    driver = {"nnsig_core.execute.dask_blocks", "nnsig_core.execute.client"}
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        if name in driver or name.startswith("nnsig_core.distributed"):
            continue
        for module, _ in _imports(ast.parse(path.read_text())):
            if module.split(".")[0] in ("dask", "distributed"):
                offenders.append(f"{name} imports {module}")
    assert not offenders, offenders
