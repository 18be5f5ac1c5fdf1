"""A Node.js client, written from the wire protocol alone, holds conversations with a bus agent.

``tests/node/conversation_client.js`` (amqplib, no code of this package) asks a
typed handler that raises and reads the error reply by its headers and JSON
body; reads a stream with a window, granting credit as it reads; and cancels
a stream early. It stops after each item it reads until the test has looked
at the responder, so the test measures how far ahead of the reader the
responder got, as tests/conformance/test_streams.py does for the Python caller.

``tests/node`` owns its install (``package.json`` and ``package-lock.json``
committed, ``node_modules`` not): ``npm ci`` there when amqplib is missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from messaging import BaseAgent, ConnectionPool, RequestContext
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2 as pb
from tests.broker_env import URL
from tests.conftest import Names
from tests.integration.helpers import wait_for

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "conversation_client.js"
COUNT, WINDOW, CANCEL_AFTER = 40, 4, 3


@pytest.fixture(scope="module")
def node() -> str:
    """Path of ``node``, after installing amqplib from the lock file if it is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed for the Node.js client", pytrace=False)
    installed = NODE_DIR / "node_modules" / "amqplib" / "package.json"
    with open(NODE_DIR / ".install.lock", "w") as lock:  # two runs may start together
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return node


@dataclass
class Weather:
    """A typed agent: one handler that raises, one that streams and counts what it yielded."""

    pool: ConnectionPool
    exchange: str
    queue: str
    yielded: Counter[str] = field(default_factory=Counter)
    deadlines: dict[str, float | None] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.agent = BaseAgent(
            self.pool, "weather", exchange_name=self.exchange, queue_name=self.queue
        )

        @self.agent.handler("weather.fail")
        def fail(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
            self.deadlines[ctx.correlation_id or ""] = ctx.deadline
            raise ValueError(f"no weather for {request.query}")

        @self.agent.handler("weather.count")
        def count(request: pb.QueryRequest, ctx: RequestContext) -> Iterator[pb.QueryResponse]:
            correlation_id = ctx.correlation_id or ""
            try:
                for n in range(int(request.query)):
                    self.yielded[correlation_id] += 1
                    yield pb.QueryResponse(answer=str(n))
            finally:
                self.stopped.add(correlation_id)

    def yielded_once_still(self, correlation_id: str, still: float = 0.3, most: float = 3) -> int:
        """What the handler yielded, once it has yielded nothing more for ``still`` seconds
        (or after ``most`` seconds: a responder that ignores credit never stops)."""
        seen, give_up = self.yielded[correlation_id], time.monotonic() + most
        while time.monotonic() < give_up:
            time.sleep(still)
            now = self.yielded[correlation_id]
            if now == seen:
                break
            seen = now
        return seen


@pytest.fixture
def weather(names: Names, config: RabbitMQConfig) -> Iterator[Weather]:
    exchange = names.exchange
    names.exchanges.add(f"{exchange}.control")
    pool = ConnectionPool(config)
    weather = Weather(pool, exchange, names.queue("weather"))
    thread = threading.Thread(target=weather.agent.start_consuming, daemon=True)
    thread.start()
    try:
        wait_for(lambda: weather.agent.is_consuming, what="the agent to consume")
        yield weather
    finally:
        weather.agent.stop()
        thread.join(30)
        pool.close()
        assert not thread.is_alive(), "start_consuming did not return after stop()"


@dataclass
class Run:
    """What the Node client printed, and what the test saw of the responder meanwhile."""

    events: list[dict[str, Any]]
    ahead: dict[str, list[int]]
    """Per stream: at each item the client read, the handler's yields minus items read."""
    first_read_yielded: dict[str, int]

    def one(self, event: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == event]
        assert len(found) == 1, (event, self.events)
        return found[0]


def run_client(node: str, weather: Weather, **extra: Any) -> Run:
    """Run the Node client against ``weather``, answering it after each item it reads."""
    args = {
        "url": URL,
        "exchange": weather.exchange,
        "fail_key": "weather.fail",
        "stream_key": "weather.count",
        "count": COUNT,
        "window": WINDOW,
        "timeout_ms": 20_000,
        **extra,
    }
    proc = subprocess.Popen(
        [node, str(SCRIPT), json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()
    try:
        run = converse(proc, weather)
        stderr = proc.stderr.read() if proc.stderr else ""
        assert proc.wait(30) == 0, f"the Node client failed: {stderr[-2000:]}"
        return run
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):  # stdin of a client that died
                    pipe.close()


def converse(proc: subprocess.Popen[str], weather: Weather) -> Run:
    """Read the client's events until it exits; let it on after each item it reads."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    run = Run([], {}, {})
    for line in proc.stdout:
        event = json.loads(line)
        run.events.append(event)
        if event["event"] == "read":
            look_at_the_responder(run, weather, event)
            try:
                proc.stdin.write("\n")
                proc.stdin.flush()
            except BrokenPipeError:
                break  # the client died: its stderr says why
    return run


def look_at_the_responder(run: Run, weather: Weather, event: dict[str, Any]) -> None:
    """Called while the client waits after reading an item: how far ahead is the handler?"""
    correlation_id = event["correlation_id"]
    if event["n"] == 1:
        # Give an unchecked responder every chance to run ahead before counting.
        run.first_read_yielded[correlation_id] = weather.yielded_once_still(correlation_id)
    run.ahead.setdefault(correlation_id, []).append(weather.yielded[correlation_id] - event["n"])


@pytest.mark.timeout(180)
def test_a_node_client_reads_errors_streams_and_cancels(node: str, weather: Weather) -> None:
    run = run_client(node, weather, cancel_after=CANCEL_AFTER)

    error = run.one("error")
    correlation_id = error["correlation_id"]
    assert error["reply_correlation_id"] == correlation_id
    # The deadline Node wrote (a 64-bit header) is the one the handler was given.
    assert weather.deadlines[correlation_id] == pytest.approx(error["deadline_ms"] / 1000, abs=1e-3)
    assert error["type"] == "chimera.error"
    assert error["content_type"] == "application/json"
    assert error["headers"] == {
        "error_type": "builtins.ValueError",
        "error_message": "no weather for Atlantis",
        "failed_agent": "weather",
    }
    assert error["body"] == {
        "error_type": "builtins.ValueError",
        "message": "no weather for Atlantis",
        "agent": "weather",
        "correlation_id": correlation_id,
    }

    end = run.one("end")
    whole = end["correlation_id"]
    assert end["answers"] == [str(n) for n in range(COUNT)]
    assert (end["type"], end["marker"], end["body_length"]) == ("chimera.end", "end", 0)
    # Before any credit the responder sent exactly its window, and never ran further ahead.
    print(f"responder ahead of the Node reader, at each item: {run.ahead[whole]} (window {WINDOW})")
    assert run.first_read_yielded[whole] == WINDOW
    assert max(run.ahead[whole]) <= WINDOW
    assert end["most_unread"] <= WINDOW
    assert weather.yielded[whole] == COUNT

    cancelled = run.one("cancelled")
    early = cancelled["correlation_id"]
    assert cancelled["read"] == CANCEL_AFTER
    wait_for(lambda: early in weather.stopped, timeout=10, what="the cancelled handler to stop")
    assert weather.yielded[early] <= CANCEL_AFTER + WINDOW
    assert run.events[-1] == {"event": "done"}
