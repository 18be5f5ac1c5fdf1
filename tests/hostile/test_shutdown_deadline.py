"""Item 8: a hung handler cannot keep a stopping process up for ever.

A real process with a handler that never returns gets SIGTERM: from that
moment the health endpoint says not ready; after ``shutdown_timeout`` the
process exits non-zero, and the broker has the unacked message again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from messaging._shutdown import EXIT_STATUS
from tests import broker_env
from tests.conftest import Names, RawBroker
from tests.integration.helpers import query, wait_for

ROOT = Path(__file__).resolve().parents[2]

SYNC = """
import sys, time
from messaging import ConnectionPool, EventSubscriber
from messaging.config import load_config
from messaging.generated import messages_pb2

class Hung(EventSubscriber):
    def get_message_class(self, routing_key):
        return messages_pb2.QueryRequest
    def handle_message(self, message, properties):
        print("handling", flush=True)
        while True:
            time.sleep(3600)

pool = ConnectionPool(load_config().rabbitmq)
sub = Hung(pool, "hung", exchange_name=sys.argv[1], queue_name=sys.argv[2],
           routing_keys=["k"], shutdown_timeout=2)
print("consuming", flush=True)
sub.start_consuming()
print("returned", flush=True)
"""

ASYNC = """
import asyncio, sys
from messaging.aio import AsyncConnectionPool, AsyncEventSubscriber
from messaging.generated import messages_pb2

class Hung(AsyncEventSubscriber):
    def get_message_class(self, routing_key):
        return messages_pb2.QueryRequest
    async def handle_message(self, message, properties):
        print("handling", flush=True)
        await asyncio.sleep(3600)

async def main():
    sub = Hung(AsyncConnectionPool(), "hung", exchange_name=sys.argv[1],
               queue_name=sys.argv[2], routing_keys=["k"], shutdown_timeout=2)
    print("consuming", flush=True)
    await sub.start_consuming()

asyncio.run(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


@pytest.mark.parametrize(
    ("script", "status"), [(SYNC, EXIT_STATUS), (ASYNC, 1)], ids=["sync", "async"]
)
def test_a_hung_handler_ends_in_a_non_zero_exit_with_its_message_requeued(
    tmp_path: Path, names: Names, raw: RawBroker, script: str, status: int
) -> None:
    exchange, queue = names.exchange, names.queue()
    program = tmp_path / "hung.py"
    program.write_text(textwrap.dedent(script))
    port = _free_port()
    env = {
        **os.environ,
        **broker_env.environ(),
        "MONITORING__HTTP_PORT": str(port),
        "PYTHONPATH": str(ROOT / "src"),
    }
    process = subprocess.Popen(
        [sys.executable, str(program), exchange, queue],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{url}/readyz")[0] == 200, timeout=30, what="ready")
        raw.publish(exchange, "k", query("never finishes").SerializeToString())
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("handling"):
                break
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        ready, report = _get(f"{url}/readyz")
        alive, _ = _get(f"{url}/healthz")
        code = process.wait(timeout=30)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = "".join(lines) + (process.stdout.read() if process.stdout else "")
    assert (ready, alive) == (503, 503), output
    assert "hung is shutting down" in str(report["problems"])
    assert code == status, output
    assert took < 2 + 10, output  # the deadline, plus the async grace and process exit
    assert "returned" not in output
    wait_for(lambda: raw.depth(queue) == 1, what="the unacked message back in the queue")
