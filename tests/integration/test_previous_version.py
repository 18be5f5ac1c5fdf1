"""Conversations meet the version before them (issue 20's upgrade rule), on RabbitMQ.

The previous version is the tree of the last release before conversations
(``PREVIOUS``), taken from this repository's history with ``git archive`` and
run in its own process through ``previous_peer.py``: a caller of that version
receiving an error reply or a stream, and a responder of that version receiving
deadline and stream headers, keep working.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import IO

import pytest

from messaging import BaseAgent, ConnectionPool, EventPublisher, RabbitMQConfig, RequestContext
from messaging.generated import messages_pb2 as pb
from tests.conftest import Names

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("previous_peer.py")
PREVIOUS = "c3eb73a"
"""main before the message pipeline and conversations (2026-11-28)."""


@pytest.fixture(scope="module")
def previous_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous version's ``src``, from git (a clone of the repository has it)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS, "src"],
        check=True,
        capture_output=True,
    ).stdout
    target = tmp_path_factory.mktemp("previous")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def peer(previous_src: Path, *arguments: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(previous_src)}
    return subprocess.Popen(
        [sys.executable, str(PEER), *arguments],
        env=env,
        cwd=previous_src,  # so that the new tree's src is not importable by accident
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_line(stream: IO[str], text: str, seconds: float = 30) -> list[str]:
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in stream:
            seen.append(line.rstrip())
            if text in line:
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(seconds), f"no {text!r} from the peer; it said: {seen}"
    return seen


@pytest.fixture
def new_agent(pool: ConnectionPool, names: Names) -> Iterator[BaseAgent]:
    agent = BaseAgent(pool, "new", exchange_name=names.exchange, queue_name=names.queue("new"))

    @agent.handler("new.fail")
    def fail(request: pb.QueryRequest) -> pb.QueryResponse:
        raise LookupError("nothing here")

    @agent.handler("new.stream")
    def stream(request: pb.QueryRequest, ctx: RequestContext) -> Iterator[pb.QueryResponse]:
        for n in range(5):
            yield pb.QueryResponse(answer=f"part {n}")

    thread = threading.Thread(target=agent.start_consuming)
    thread.start()
    while not agent.is_consuming:
        thread.join(0.05)
    yield agent
    agent.stop()
    thread.join(10)
    agent.close()


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config)
    yield pool
    pool.close()


def test_a_caller_of_the_previous_version_is_told_of_a_failure_at_once(
    previous_src: Path, new_agent: BaseAgent, names: Names
) -> None:
    old = peer(previous_src, "ask", names.exchange, "new.fail", "x")
    out, _ = old.communicate(timeout=60)
    # The old caller does not know the error reply's type: it fails at once with a
    # DecodeError naming it, instead of hanging for its 20 s.
    assert "raised DecodeError" in out, out
    assert "chimera.error" in out, out
    seconds = float(out.split("raised DecodeError after ")[1].split("s:")[0])
    assert seconds < 10, out


def test_a_caller_of_the_previous_version_gets_a_streams_first_reply(
    previous_src: Path, new_agent: BaseAgent, names: Names
) -> None:
    old = peer(previous_src, "ask", names.exchange, "new.stream", "x")
    out, _ = old.communicate(timeout=60)
    assert "reply chimera.v1.QueryResponse: part 0" in out, out


def test_a_responder_of_the_previous_version_takes_the_new_headers(
    previous_src: Path, pool: ConnectionPool, names: Names
) -> None:
    queue = names.queue("old")
    old = peer(previous_src, "answer", names.exchange, queue, "old.request")
    try:
        assert old.stdout is not None
        wait_line(old.stdout, "consuming")
        caller = EventPublisher(pool, "new-caller", names.exchange)
        reply = caller.request(
            pb.QueryRequest(query="hi"), "old.request", 20, response_type=pb.QueryResponse
        )
        assert reply.answer == "HI"
        streamed = [
            r.answer
            for r in caller.stream(
                pb.QueryRequest(query="yo"), "old.request", 20, response_type=pb.QueryResponse
            )
        ]
        assert streamed == ["YO"]  # a responder that does not stream: its one reply, then done
        caller.close()
    finally:
        old.send_signal(signal.SIGTERM)
        out, _ = old.communicate(timeout=30)
    assert "handled 'hi' with headers ['x-conversation-deadline']" in out, out
    assert "'x-conversation-stream'" in out, out
    assert old.returncode == 0, out
