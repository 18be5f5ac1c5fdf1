"""The layering DESIGN.md promises, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "messaging"
AMQP_CLIENTS = {"aio_pika", "aiormq", "pamqp"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_transport_imports_the_amqp_client() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "transport" not in path.relative_to(SRC).parts
        and imported_roots(path) & AMQP_CLIENTS
    ]
    assert offenders == [], f"AMQP client imported outside messaging.transport: {offenders}"


def test_the_pure_modules_do_no_io() -> None:
    pure = ["backoff.py", "topology.py", "routing.py", "serialization.py", "metadata.py"]
    for name in pure:
        roots = imported_roots(SRC / name)
        assert not roots & (AMQP_CLIENTS | {"asyncio", "socket", "messaging.transport"}), name
