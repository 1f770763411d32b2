"""The direction of imports inside ``src/custodes``, read from the source with :mod:`ast`.

Every ``import`` counts, at module level and inside functions alike: a deferred import still
ties the importer to what it imports, and a circle hidden in a function is still a circle.
Only imports under ``if TYPE_CHECKING:`` are left out of the circle check (they never run), but
they count for the direction rules (a type is still a dependency).

The rules (issue 17):

1. the ground floor (``protocol``, ``types``, ``errors``, ``_internal``) imports nothing above
   it;
2. ``guest`` imports no server package: what the guest image runs needs none of the broker;
3. ``audit`` (the broker's log) imports nothing of ``kbs`` (which writes it);
4. no import circle between modules anywhere in ``src/``.

A module imports a module: ``from a.b import c`` is an edge to ``a.b.c`` when that is a
module, else to ``a.b``. The checker is exercised on small synthetic packages first, so that
a rule that could never fail is caught here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

SRC: Final = Path(__file__).resolve().parents[2] / "src"
GROUND: Final = frozenset({"protocol", "types", "errors", "_internal"})
SERVER: Final = frozenset({"kbs", "attestation", "storage", "rvps", "audit", "policy", "ui"})
# (importer, imported) -> why this edge is allowed although a rule forbids it. Keep it empty:
# move the shared piece down instead (as the TPM enrolment messages moved to protocol/).
ALLOWED: Final[Mapping[tuple[str, str], str]] = {}


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    line: int
    runs: bool  # False: under ``if TYPE_CHECKING:``, never executed


@dataclass(frozen=True, slots=True)
class Graph:
    root: str
    modules: frozenset[str]
    edges: tuple[Edge, ...]

    def top(self, module: str) -> str:
        """The room a module lives in: ``custodes.k8s.access.model`` -> ``k8s``."""
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""


def _module_names(root_dir: Path, root: str) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in sorted((root_dir / root).rglob("*.py")):
        parts = list(path.relative_to(root_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.AST, runs: bool = True
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``tree``, with whether it executes."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, runs
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), False)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), runs)
        else:
            yield from _imports(node, runs)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: frozenset[str]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        origin = ".".join([*base, *([node.module] if node.module else [])])
    else:
        origin = node.module or ""
    for alias in node.names:
        sub = f"{origin}.{alias.name}"
        yield sub if sub in modules else origin


def build_graph(root_dir: Path, root: str = "custodes") -> Graph:
    """The module import graph of package ``root`` under ``root_dir``."""
    paths = _module_names(root_dir, root)
    modules = frozenset(paths)
    edges: list[Edge] = []
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, runs in _imports(tree):
            for target in _targets(node, module, is_package, modules):
                if target in modules and target != module:
                    edges.append(Edge(module, target, node.lineno, runs))
    return Graph(root, modules, tuple(edges))


def direction_violations(graph: Graph) -> list[str]:
    """Every edge that breaks rules 1-3, as ``importer:line -> imported (rule)``."""
    found: list[str] = []
    for edge in graph.edges:
        if (edge.source, edge.target) in ALLOWED:
            continue
        src, dst = graph.top(edge.source), graph.top(edge.target)
        rule = ""
        if src in GROUND and dst not in GROUND:
            rule = "the ground floor imports nothing above it"
        elif src == "guest" and dst in SERVER:
            rule = "guest imports no server package"
        elif src == "audit" and dst == "kbs":
            rule = "audit imports no kbs"
        if rule:
            found.append(f"{edge.source}:{edge.line} -> {edge.target} ({rule})")
    return found


def _strongly_connected(nodes: frozenset[str], succ: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's components, iteratively (the graph is deeper than the recursion limit allows
    for in a large tree)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(succ.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _cycle_through(start: str, members: set[str], succ: Mapping[str, list[str]]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside one component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in succ.get(node, ()):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return [start]


def import_cycles(graph: Graph) -> list[str]:
    """One cycle path per circle of executed imports, ``a -> b -> c -> a``."""
    succ: dict[str, list[str]] = {}
    for edge in graph.edges:
        if edge.runs:
            succ.setdefault(edge.source, []).append(edge.target)
    for targets in succ.values():
        targets.sort()
    found: list[str] = []
    for component in _strongly_connected(graph.modules, succ):
        if len(component) > 1:
            path = _cycle_through(min(component), set(component), succ)
            found.append(" -> ".join(path))
    return sorted(found)


# --- the checker itself, on synthetic packages -------------------------------------------------


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_reports_a_circle_with_its_path(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "demo/__init__.py": "",
            "demo/a.py": "import demo.b\n",
            # a function-level import closes the circle just the same
            "demo/b.py": "def f():\n    from demo.c import g\n",
            "demo/c.py": "from . import a\n",
            "demo/d.py": "from demo import a, c\n",  # into the circle, not part of it
        },
    )
    assert import_cycles(build_graph(root, "demo")) == ["demo.a -> demo.b -> demo.c -> demo.a"]


def test_checker_leaves_type_checking_imports_out_of_circles(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "demo/__init__.py": "",
            "demo/a.py": "import demo.b\n",
            "demo/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import demo.a\n",
        },
    )
    graph = build_graph(root, "demo")
    assert import_cycles(graph) == []
    assert {(e.source, e.target, e.runs) for e in graph.edges} == {
        ("demo.a", "demo.b", True),
        ("demo.b", "demo.a", False),
    }


def test_checker_reports_each_direction_rule(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "demo/__init__.py": "",
            "demo/errors.py": "",
            "demo/protocol/__init__.py": "",
            "demo/protocol/wire.py": "from demo.errors import E\nfrom demo.kbs import app\n",
            "demo/kbs/__init__.py": "",
            "demo/kbs/app.py": "import demo.audit.log\n",
            "demo/audit/__init__.py": "",
            "demo/audit/log.py": "def f():\n    from demo.kbs.app import x\n",
            "demo/guest/__init__.py": "",
            "demo/guest/client.py": "from demo.protocol import wire\nfrom ..storage import db\n",
            "demo/storage/__init__.py": "",
            "demo/storage/db.py": "",
        },
    )
    assert direction_violations(build_graph(root, "demo")) == [
        "demo.audit.log:2 -> demo.kbs.app (audit imports no kbs)",
        "demo.guest.client:2 -> demo.storage.db (guest imports no server package)",
        "demo.protocol.wire:2 -> demo.kbs.app (the ground floor imports nothing above it)",
    ]


# --- src/custodes -----------------------------------------------------------------------------

GRAPH: Final = build_graph(SRC)


def test_the_graph_is_read() -> None:
    # A resolver that silently dropped edges would pass every rule below.
    assert len(GRAPH.modules) > 100
    edges = {(e.source, e.target) for e in GRAPH.edges}
    assert ("custodes.protocol.jwe", "custodes.protocol.jwk") in edges
    assert ("custodes.kbs.broker", "custodes.audit.log") in edges


@pytest.mark.parametrize("rule", ["ground floor", "guest", "audit"])
def test_imports_point_down(rule: str) -> None:
    marker = {
        "ground floor": "(the ground floor",
        "guest": "(guest imports",
        "audit": "(audit imports",
    }[rule]
    found = [v for v in direction_violations(GRAPH) if marker in v]
    assert found == [], "\n".join(found)


def test_no_import_circles() -> None:
    found = import_cycles(GRAPH)
    assert found == [], "import circles:\n" + "\n".join(found)


def test_allowed_exceptions_are_still_needed() -> None:
    edges = {(e.source, e.target) for e in GRAPH.edges}
    assert [pair for pair in ALLOWED if pair not in edges] == []
