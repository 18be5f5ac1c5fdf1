"""The private-node recipe's sweep: nodes an interrupted test run left running are stopped
and their folders removed; nodes whose owner still runs, or that have no owner, are kept."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.production import nodes
from tests.production.nodes import Node, Owner, port_open

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "rabbit-node"


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has come and gone."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    return finished.pid


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process to own a node; killed by the test when it wants the owner gone."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


def record(root: Path, name: str, *, owner: dict[str, int | None] | None, port: int) -> Path:
    """A node's folder as the recipe leaves it, for a node that is not running."""
    base = root / name
    base.mkdir(parents=True)
    body = {"name": name, "port": port, "dist_port": port + 20000, "owner": owner}
    (base / "node.json").write_text(json.dumps(body))
    return base


def test_a_node_whose_owner_died_is_stopped_and_removed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    if why_not := nodes.available():
        pytest.fail(f"this test starts a RabbitMQ node, but {why_not}")
    root = tmp_path / "nodes"  # a root of its own: the sweep sees this test's node only
    node = Node(f"chimera-sweep-{secrets.token_hex(3)}", root, owner=Owner.of(sleeper.pid))
    try:
        node.launch()
        node.wait()
        beam = node.os_pid()
        assert nodes.sweep(root) == []  # its owner still runs
        assert port_open(node.port)

        sleeper.kill()
        sleeper.wait()
        assert [swept.name for swept in nodes.sweep(root)] == [node.name]
        assert not port_open(node.port)
        assert not nodes.pid_alive(beam)
        assert not node.base.exists()
    finally:
        node.remove()


def test_the_command_sweeps_dead_owners_only(tmp_path: Path, dead_pid: int) -> None:
    root = tmp_path / "nodes"
    port = nodes.free_port()  # nothing answers there: stopping it is quick
    started = Owner.of(os.getpid()).started
    assert started is not None
    me: dict[str, int | None] = {"pid": os.getpid(), "started": started}
    gone = record(root, "chimera-gone", owner={"pid": dead_pid, "started": None}, port=port)
    kept = [
        record(root, "chimera-mine", owner=me, port=port),
        record(root, "chimera-cli", owner=None, port=port),  # `rabbit-node start`: no owner
        record(root, "rabbit", owner={"pid": dead_pid, "started": None}, port=port),
        record(root, "chimera-shared", owner={"pid": dead_pid, "started": None}, port=5672),
    ]
    # My pid, but another start time: the owner is gone and a new process has its pid.
    reused = record(
        root, "chimera-reused", owner={"pid": os.getpid(), "started": started - 1}, port=port
    )
    (root / "not-a-node").mkdir()
    kept.append(root / "not-a-node")
    copied = record(root, "chimera-copy", owner={"pid": dead_pid, "started": None}, port=port)
    (copied / "node.json").write_text(
        (copied / "node.json").read_text().replace("chimera-copy", "chimera-elsewhere")
    )
    kept.append(copied)  # its record names another folder: not this one to remove

    result = subprocess.run(
        [str(SCRIPT), "sweep"],
        env={**os.environ, "CHIMERA_NODES": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"swept chimera-gone@localhost on 127.0.0.1:{port} (owner pid {dead_pid} is gone)",
        f"swept chimera-reused@localhost on 127.0.0.1:{port} (owner pid {os.getpid()} is gone)",
    ]
    assert not gone.exists()
    assert not reused.exists()
    assert all(base.exists() for base in kept)
