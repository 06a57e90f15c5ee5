"""The package graph keeps its layering: config -> core -> remote -> engines -> stores ->
streaming -> models -> domains -> app (web) -> CLI. A package imports only its own layer's
packages (domains, the app) or lower ones, TYPE_CHECKING imports included, and no circle
joins top-level packages, except for ALLOWED_BACK_EDGES, a list that may only shrink."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import opscenter

ROOT = Path(opscenter.__file__).parent

LAYERS: list[set[str]] = [
    {"config"},
    {"core"},
    {"remote"},
    {"engines"},
    {"stores"},
    {"streaming"},
    {"documents"},
    {"models"},
    set(),  # every other package is a domain
    {
        "app",
        "runtime",
        "domains",
        "bootstrap",
        "web",
        "cli",
        "cli_actions",
        "cli_backups",
        "__main__",
    },
]
DOMAIN_RANK = LAYERS.index(set())

#: Imports that still go against the layering, each with why; remove an entry once the
#: edge is gone (the test fails while it is listed and no longer needed).
ALLOWED_BACK_EDGES: dict[tuple[str, str], str] = {
    # AppContext names the job runner's and the storage pool's types (TYPE_CHECKING only);
    # both still need models, which sit above core.
    ("core", "jobs"): "AppContext.runner is a jobs.runner.JobRunner",
    ("core", "storage"): "AppContext.storages is a storage.service.StoragePool",
    # Every route is guarded by auth's `require`, while auth records security events in the
    # audit trail and answers with users' UserOut: auth's guard and permission catalogue
    # belong in core (next step: the principal resolved by the app, checked in core).
    ("audit", "auth"): "audit/router.py guards its routes with auth.deps.require",
    ("users", "auth"): "users/ guards routes with auth.deps and reads auth.permissions",
}


def _top(module: str) -> str:
    return module.split(".")[1] if module.startswith("opscenter.") else ""


def import_edges() -> dict[tuple[str, str], set[str]]:
    """(importer, imported) top-level packages -> the files that import so."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "migrations":
            continue
        source = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [_top(node.module)]
                if node.module == "opscenter":
                    targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [_top(alias.name) for alias in node.names]
            else:
                continue
            for target in targets:
                if target and target not in ("__version__", source):
                    edges[(source, target)].add(str(relative))
    return edges


def rank(package: str) -> int:
    return next((i for i, layer in enumerate(LAYERS) if package in layer), DOMAIN_RANK)


def test_no_package_imports_a_higher_layer() -> None:
    upward = {
        f"{a} -> {b}: {sorted(files)}"
        for (a, b), files in import_edges().items()
        if (a, b) not in ALLOWED_BACK_EDGES
        and (rank(a) < rank(b) or (rank(a) == rank(b) and rank(a) < DOMAIN_RANK))
    }
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


def test_no_circle_between_top_level_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in import_edges():
        if (a, b) not in ALLOWED_BACK_EDGES:
            graph[a].add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (circle := visit(start)):
            raise AssertionError("import circle: " + " -> ".join(circle))


def test_the_allow_list_only_shrinks() -> None:
    edges = import_edges()
    stale = [edge for edge in ALLOWED_BACK_EDGES if edge not in edges]
    assert not stale, f"no longer imported, remove from ALLOWED_BACK_EDGES: {stale}"
