"""`status` and `top` through the management API, on a node of their own that runs it.

The suite's broker may not have the management plugin (and must not be
reconfigured), so these tests start a private node with it, on free loopback
ports, and stop it at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest
from typer.testing import CliRunner, Result

from messaging import ConnectionPool
from messaging.cli import app
from messaging.config import RabbitMQConfig
from tests.integration.helpers import Recorder, query, wait_for

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ManagedNode:
    port: int
    management_port: int

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def cli(self, *args: str) -> Result:
        env = {
            "RABBITMQ__HOST": "127.0.0.1",
            "RABBITMQ__PORT": str(self.port),
            "RABBITMQ__USERNAME": "guest",
            "RABBITMQ__PASSWORD": "guest",
            "RABBITMQ__VHOST": "/",
            "RABBITMQ_NODENAME": None,
            "CHIMERA_MANAGEMENT_URL": self.management_url,
            "COLUMNS": "250",
            "CHIMERA_EXCHANGE": None,
        }
        return CliRunner(env=env).invoke(app, list(args))

    def pika(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def node() -> Iterator[ManagedNode]:
    if shutil.which("rabbitmq-server") is None and not Path("/usr/lib/rabbitmq/bin").is_dir():
        pytest.skip("RabbitMQ is not installed here: no private node with management")
    for _ in range(100):  # the AMQP port, its Erlang distribution port (+20000), the API's
        port = random.randint(31000, 39000)
        if _free(port) and _free(port + 20000) and _free(port + 1000):
            break
    else:
        raise RuntimeError("no free ports for a private node")
    name = f"climgmt{uuid.uuid4().hex[:6]}"
    base = tempfile.mkdtemp(prefix="chimera-mgmt-")
    env = {"CHIMERA_NODES": base, "RABBIT_NODE_MANAGEMENT_PORT": str(port + 1000)}
    script = str(ROOT / "scripts" / "rabbit-node")
    try:
        subprocess.run(
            [script, "start", name, str(port)],
            env={**_environ(), **env}, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
        managed = ManagedNode(port, port + 1000)
        wait_for(lambda: _answers(managed), timeout=60, what="the management API")
        yield managed
    finally:
        subprocess.run(
            [script, "stop", name], env={**_environ(), **env}, capture_output=True, timeout=120
        )
        shutil.rmtree(base, ignore_errors=True)


def _environ() -> dict[str, str]:
    return dict(os.environ)


def _answers(node: ManagedNode) -> bool:
    """The CLI reads the management API (it says where its numbers come from)."""
    return "numbers from the management API" in node.cli("top", "--once", "-q", "none").output


def test_status_and_top_read_the_management_api(node: ManagedNode) -> None:
    suffix = uuid.uuid4().hex[:8]
    exchange, queue = f"mgmt-{suffix}.events", f"mgmt-{suffix}.q"
    config = RabbitMQConfig(host="127.0.0.1", port=node.port, connection_name="mgmt-worker")
    pool = ConnectionPool(config)
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    connection = node.pika()
    channel = connection.channel()
    try:
        # The API learns of a consumer from the node's statistics, a second later.
        wait_for(
            lambda: f"  {queue}: " in node.cli("status", "-q", queue, "-e", exchange).output,
            timeout=30,
            what="the consumer in the management API",
        )
        status = node.cli("status", "-q", queue, "-e", exchange)
        assert status.exit_code == 0, status.output
        assert f"consumers  from the management API at {node.management_url}" in status.output
        (line,) = [line for line in status.output.splitlines() if line.startswith(f"  {queue}: ")]
        assert "mgmt-worker" in line  # the consumer's connection, by name
        assert "node climgmt" in line  # and the node it is on

        # Traffic, then rates: the node samples every second.
        def rates_show() -> bool:
            for n in range(20):
                channel.basic_publish(
                    exchange, "x.y", query(f"m{n}").SerializeToString(),
                    pika.BasicProperties(type="chimera.v1.QueryRequest"),
                )  # fmt: skip
            snapshot = node.cli("top", "--json")
            (entry,) = [json.loads(x) for x in snapshot.stdout.splitlines()]
            return bool(entry["publish_rate"]) and bool(entry["deliver_rate"])

        wait_for(rates_show, timeout=60, what="publish and deliver rates")
        top = node.cli("top", "--json")
        (entry,) = [json.loads(x) for x in top.stdout.splitlines()]
        assert entry["queue"] == queue  # found without --queue: it has a .dlq beside it
        assert entry["source"] == f"the management API at {node.management_url}"
        assert entry["consumers"] == 1
        assert entry["unacked"] is not None
        assert entry["dlq"] == 0
    finally:
        sub.stop_and_join()
        pool.close()
        channel.queue_delete(queue)
        channel.queue_delete(f"{queue}.dlq")
        channel.exchange_delete(exchange)
        channel.exchange_delete(f"{exchange}.dlx")
        connection.close()
