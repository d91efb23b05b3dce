"""The layers import downwards only: the import graph of src/crmgate (read with ``ast``, so
``if TYPE_CHECKING:`` and function-level imports count too) has no circle among the connectors,
the unified model and the entity service, and the HTTP layer names no CRM's connector."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def modules(root: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in (root / "crmgate").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import a module makes: at its top level, under ``if TYPE_CHECKING:`` and inside
    functions alike (an import moved into a function to dodge a circle is still the circle)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Each crmgate module and the crmgate modules it imports. ``from pkg import mod`` is an
    edge to ``pkg.mod`` alone (a package's own ``__init__`` runs first in any case)."""
    known = modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.module and node.level == 0:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                submodules = [sub for sub in subs if sub in known]
                targets = submodules if len(submodules) == len(subs) else [node.module]
            else:
                continue
            edges.update(t for t in targets if t in known and t != name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(graph: dict[str, set[str]], keep: tuple[str, ...]) -> dict[str, set[str]]:
    def inside(name: str) -> bool:
        return any(name == k or name.startswith(k + ".") for k in keep)

    return {m: {t for t in ts if inside(t)} for m, ts in graph.items() if inside(m)}


CORE = ("crmgate.connectors", "crmgate.model", "crmgate.entities")


def test_connectors_model_and_entities_import_in_no_circle() -> None:
    assert cycles(_within(import_graph(), CORE)) == []


def test_the_model_imports_no_connector() -> None:
    graph = import_graph()
    reaching = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("crmgate.model")
        for target in targets
        if target.startswith("crmgate.connectors")
    }
    assert reaching == set()


def test_the_http_layer_names_no_crm_connector() -> None:
    """The HTTP layer maps the contract's errors and lists the platform catalogue; it knows no
    CRM and none of the connector machinery."""
    graph = import_graph()
    named = {
        target
        for module, targets in graph.items()
        if module == "crmgate.api" or module.startswith("crmgate.api.")
        for target in targets
        if target.startswith("crmgate.connectors")
    }
    assert named <= {"crmgate.connectors.errors", "crmgate.connectors.catalogue"}
    assert cycles(_within(graph, (*CORE, "crmgate.api"))) == []


def test_the_graph_sees_a_circle_hidden_behind_type_checking(tmp_path: Path) -> None:
    package = tmp_path / "crmgate"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from crmgate.b import x\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crmgate import a\n"
    )
    assert cycles(import_graph(tmp_path)) == [["crmgate.a", "crmgate.b"]]


def test_the_graph_sees_a_circle_hidden_inside_a_function(tmp_path: Path) -> None:
    package = tmp_path / "crmgate"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from crmgate.b import x\n")
    (package / "b.py").write_text("def x() -> None:\n    from crmgate.a import y\n")
    assert cycles(import_graph(tmp_path)) == [["crmgate.a", "crmgate.b"]]


# ---- what a CRM's connector module may not hold: the shared machinery's jobs -------------------

SHARED = {
    "__init__", "answers", "auth", "base", "catalogue", "dialect", "errors", "jsonpath", "local",
    "paging", "support",
}  # fmt: skip
STATUSES = {401, 403, 404, 429}


def crm_modules() -> dict[str, Path]:
    folder = SRC / "crmgate" / "connectors"
    return {path.stem: path for path in folder.glob("*.py") if path.stem not in SHARED}


def machinery_in(tree: ast.AST) -> list[str]:
    """What a connector module does by hand that the shared machinery does: a credential
    header built, an HTTP status ladder (401/403/404/429), a paging loop (a while that awaits)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in ("Authorization", "Bearer"):
            found.append(f"line {node.lineno}: builds the {node.value} header")
        if isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Attribute) and side.attr == "status"
            for side in (node.left, *node.comparators)
        ):
            numbers = {
                value.value
                for part in ast.walk(node)
                if isinstance(value := part, ast.Constant) and isinstance(value.value, int)
            }
            if numbers & STATUSES:
                found.append(f"line {node.lineno}: maps statuses {sorted(numbers & STATUSES)}")
        if isinstance(node, ast.While) and any(isinstance(n, ast.Await) for n in ast.walk(node)):
            found.append(f"line {node.lineno}: a loop of calls (a paginator's job)")
    return found


def test_no_connector_module_repeats_the_shared_machinery() -> None:
    assert {"salesforce", "hubspot", "pipedrive", "zoho", "dynamics"} <= set(crm_modules())
    for name, path in crm_modules().items():
        assert machinery_in(ast.parse(path.read_text())) == [], name


def test_the_machinery_check_sees_each_kind() -> None:
    sample = (
        "async def f(r, c):\n"
        "    h = {'Authorization': 'Bearer ' + t}\n"
        "    if r.status in (401, 403):\n        raise E\n"
        "    while c:\n        c = await next_page(c)\n"
    )
    assert len(machinery_in(ast.parse(sample))) == 3
