"""The project's import graph, read from the sources with ast (lazy imports inside functions
included): no import circles, and the service's layers import only downwards.

Layers of the service: `service.core` (the dataplane, models, modalities, batching, admission;
protocol-neutral) <- the adapters (`service.http`: REST and the Open Inference Protocol over REST)
<- the process (`service.bento`, `service.cli`, and the BentoML/uvicorn patches beside them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "training", "modelrepo", "loadtest", "bench")
# What the protocol-neutral core must never import, directly or through project modules.
HTTP_LIBRARIES = ("fastapi", "starlette", "uvicorn", "httptools", "h11", "grpc", "grpcio")
PROCESS_MODULES = (
    "service.bento",
    "service.cli",
    "service.protocol",
    "service.timeouts",
    "service.traffic_labels",
    "service.listener",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports (project modules and top-level third-party names)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package this module is in
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(project module -> the project modules it imports, -> the third-party ones)."""
    modules = project_modules()
    known = set(modules)
    inner: dict[str, set[str]] = {}
    outer: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = imports_of(name, path, known)
        inner[name] = {m for m in found if m in known and m != name}
        outer[name] = {m.split(".")[0] for m in found if m not in known}
    return inner, outer


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


GRAPH, THIRD_PARTY = import_graph()
CORE = sorted(m for m in GRAPH if in_layer(m, "service.core"))


def test_the_graph_is_read_from_the_sources() -> None:
    # The test would pass vacuously on an empty or unresolved graph: check it sees real edges.
    assert {"service.core.dataplane", "service.http.app", "training.export"} <= set(GRAPH)
    assert "service.core.runtime" in GRAPH["service.core.dataplane"]
    assert "fastapi" in THIRD_PARTY["service.http.app"]


def test_circles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    found = circles(GRAPH)
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("module", CORE)
def test_the_core_never_reaches_the_http_layer_or_the_process(module: str) -> None:
    reached = reachable(GRAPH, module)
    upward = sorted(
        m for m in reached if in_layer(m, "service.http") or m.startswith(PROCESS_MODULES)
    )
    libraries = sorted({lib for m in reached for lib in THIRD_PARTY[m]} & set(HTTP_LIBRARIES))
    assert upward == [] and libraries == [], f"{module} reaches {upward + libraries}"


def test_the_http_layer_never_imports_the_process() -> None:
    upward = {
        f"{m} -> {w}"
        for m in GRAPH
        if in_layer(m, "service.http")
        for w in GRAPH[m]
        if w.startswith(PROCESS_MODULES)
    }
    assert upward == set()


def test_the_protocol_adapters_do_not_import_each_other() -> None:
    routes = [m for m in GRAPH if in_layer(m, "service.http.routes")]
    crossing = {f"{m} -> {w}" for m in routes for w in GRAPH[m] if w in routes}
    assert crossing == set()


def test_importing_the_core_loads_no_web_framework() -> None:
    # At run time too (BentoML's dispatcher brings Starlette's datastructures along; FastAPI,
    # uvicorn and the HTTP layer must stay out).
    code = (
        "import sys, " + ", ".join(CORE) + "; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'grpc')"
        " or m.startswith('service.http') or m == 'service.bento'); print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
