"""The layering DESIGN.md promises, checked on the source.

Every import counts, including those inside functions and under
``TYPE_CHECKING``: a type-only circle is still a circle to a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "messaging"
AMQP_CLIENTS = ("aio_pika", "aiormq", "pamqp")
PURE = {
    "messaging.backoff",
    "messaging.config",
    "messaging.errors",
    "messaging.headers",
    "messaging.metadata",
    "messaging.routing",
    "messaging.schemas",
    "messaging.serialization",
    "messaging.topology",
}
"""Modules below every layer: no I/O, and nothing of the bus but each other."""
SYNC_FACADE = (
    "messaging._portal",
    "messaging.agent",
    "messaging.connection",
    "messaging.publisher",
    "messaging.subscriber",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(module: str, source: str | None = None) -> set[str]:
    """Every module ``module`` imports (``from a import b`` names ``a.b`` when it is a module)."""
    path = MODULES[module]
    tree = ast.parse(source if source is not None else path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(graph: dict[str, set[str]], importer: str, imported: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if within(module, importer)
        for target in targets
        if within(target, *imported)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def amqp_outside_transport(graph: dict[str, set[str]]) -> list[str]:
    """The AMQP client only in ``transport/amqp``; above the transport, only the seam."""
    client = [
        line
        for line in offenders(graph, "messaging", AMQP_CLIENTS)
        if not within(line.split()[0], "messaging.transport.amqp")
    ]
    implementation = [
        line
        for line in offenders(graph, "messaging", ("messaging.transport.amqp",))
        if not within(line.split()[0], "messaging.transport")
    ]
    return client + implementation


def impure(graph: dict[str, set[str]]) -> list[str]:
    io = ("asyncio", "socket", *AMQP_CLIENTS)
    allowed = (*PURE, "messaging.generated")
    return sorted(
        f"{module} imports {target}"
        for module in PURE
        for target in graph[module]
        if within(target, *io) or (within(target, "messaging") and not within(target, *allowed))
    )


def core_reaching_up(graph: dict[str, set[str]]) -> list[str]:
    above = (
        *SYNC_FACADE,
        "messaging.ops.health",
        "messaging.discovery",
        "messaging.cli",
        "messaging.demo",
    )
    return offenders(graph, "messaging.aio", above) + offenders(
        graph, "messaging.transport", ("messaging.aio", "messaging.ops")
    )


def ops_misplaced(graph: dict[str, set[str]]) -> list[str]:
    leaves = ("messaging.ops.metrics", "messaging.ops.logcontext", "messaging.ops.tracing")
    found = offenders(graph, "messaging.ops", SYNC_FACADE)
    for leaf in leaves:
        found += offenders(graph, leaf, ("messaging.aio",))
    return found


def test_the_graph_sees_the_imports() -> None:
    # Guards the checks below against passing because the graph is empty.
    assert "messaging.aio.pool" in GRAPH["messaging.aio.publisher"]
    assert "messaging.ops.tracing" in GRAPH["messaging.aio.publisher"]
    assert any(within(t, "aiormq") for targets in GRAPH.values() for t in targets)


def test_only_the_amqp_transport_imports_the_amqp_client() -> None:
    assert amqp_outside_transport(GRAPH) == []


def test_the_pure_modules_do_no_io_and_import_only_each_other() -> None:
    assert impure(GRAPH) == []


def test_the_core_does_not_reach_up() -> None:
    """``aio/`` never imports the sync facade, the health endpoint, the CLI or the demo;
    the transport imports neither the core nor operations."""
    assert core_reaching_up(GRAPH) == []


def test_operations_watch_the_core_without_the_sync_layer() -> None:
    """``ops`` needs no sync class; the instruments the core uses import nothing of it."""
    assert ops_misplaced(GRAPH) == []


def test_there_are_no_import_circles() -> None:
    assert cycles(GRAPH) == []


CHECKS = {
    "amqp": amqp_outside_transport,
    "pure": impure,
    "core": core_reaching_up,
    "ops": ops_misplaced,
    "cycle": cycles,
}


@pytest.mark.parametrize(
    ("module", "extra", "check"),
    [
        ("messaging.ops.metrics", "import aiormq\n", "amqp"),
        ("messaging.aio.consumer", "from aiormq.abc import DeliveredMessage\n", "amqp"),
        ("messaging.transport.base", "from pamqp.commands import Basic\n", "amqp"),
        ("messaging.cli.dlq", "from messaging.transport.amqp import channels\n", "amqp"),
        ("messaging.routing", "import asyncio\n", "pure"),
        ("messaging.backoff", "from messaging.transport import Delivery\n", "pure"),
        ("messaging.aio.subscriber", "from messaging.ops import health\n", "core"),
        ("messaging.aio.pool", "from messaging.connection import ConnectionPool\n", "core"),
        ("messaging.transport.base", "from messaging.aio.pool import PoolHealth\n", "core"),
        ("messaging.ops.health", "from messaging._portal import Portal\n", "ops"),
        ("messaging.ops.metrics", "from messaging.aio.pool import AsyncConnectionPool\n", "ops"),
        ("messaging.aio.rpc", "from messaging.aio.publisher import AsyncEventPublisher\n", "cycle"),
        (
            "messaging.ops.metrics",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from messaging.aio.publisher import AsyncEventPublisher\n",
            "cycle",
        ),
    ],
)
def test_the_checks_can_fail(module: str, extra: str, check: str) -> None:
    """Each check above catches the kind of import it is there for."""
    graph = dict(GRAPH)
    graph[module] = imports_of(module, extra + MODULES[module].read_text())
    assert CHECKS[check](graph)
