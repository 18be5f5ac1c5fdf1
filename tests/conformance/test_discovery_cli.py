"""`chimera-bus agents` and `chimera-bus request` on both transports, through typer's runner.

The agents run in this process (the in-process broker is per process); the
cross-process case, with a SIGKILL, is tests/integration/test_cli_discovery.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from typer.testing import CliRunner, Result

from messaging import BaseAgent, ConnectionPool, RejectedMessageError, create_metadata
from messaging.cli import app
from messaging.generated import messages_pb2 as pb
from tests.broker_env import URL
from tests.conformance.conftest import MemoryTarget, Target
from tests.conformance.test_discovery import discovery, pool

__all__ = ["discovery", "pool"]  # the fixtures, imported so pytest finds them here


class Shouter(BaseAgent):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        super().__init__(pool, "shouter", ["ask.*"], exchange, queue, version="0.9")

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"ask.*": pb.QueryRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        if message.query == "fail":
            raise RejectedMessageError("no shouting about failure")
        answer = pb.QueryResponse(
            metadata=create_metadata(self.agent_name, properties["correlation_id"]),
            query=message.query,
            answer=message.query.upper(),
        )
        self.publish_response(answer, "ask.reply", properties["correlation_id"])


def url_of(target: Target) -> str:
    if target.name == "memory":
        assert isinstance(target, MemoryTarget) or hasattr(target, "broker")
        return f"memory://{getattr(target, 'broker').name}"  # noqa: B009
    return URL


def cli(target: Target, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--url", url_of(target)])


@pytest.fixture
def shouter(target: Target, pool: ConnectionPool, discovery: str) -> Iterator[Shouter]:
    agent = Shouter(pool, target.exchange(), target.queue())
    target.start(agent)
    yield agent
    target.stop(agent)


def test_agents_lists_a_running_agent_with_its_card(target: Target, shouter: Shouter) -> None:
    result = cli(target, "agents", "--json", "--wait", "1", "--exchange", shouter.exchange_name)
    assert result.exit_code == 0, result.output
    cards = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(c["name"], c["version"], c["queue"]) for c in cards] == [
        ("shouter", "0.9", shouter.queue_name)
    ]
    assert cards[0]["request_types"] == {"ask.*": "chimera.v1.QueryRequest"}

    table = cli(target, "agents", "--wait", "1", "--name", "shouter")
    assert table.exit_code == 0, table.output
    header, *rows = table.stdout.splitlines()  # piped: tab-separated, header first
    assert header.split("\t")[:3] == ["name", "version", "host"]
    mine = [row.split("\t") for row in rows if shouter.queue_name in row.split("\t")]
    assert [row[0] for row in mine] == ["shouter"]


def test_agents_says_so_when_nobody_announced(target: Target, discovery: str) -> None:
    result = cli(target, "agents", "--json", "--wait", "0.5", "--name", "nobody-at-all")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no agent announced itself" in result.stderr


def test_request_prints_the_reply_as_json(target: Target, shouter: Shouter) -> None:
    result = cli(
        target, "request", "ask.x", "--type", "QueryRequest", "--data", '{"query": "hi"}',
        "--exchange", shouter.exchange_name, "--timeout", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)
    assert (reply["query"], reply["answer"]) == ("hi", "HI")

    as_json = cli(
        target, "request", "ask.x", "-t", "chimera.v1.QueryRequest", "-d", '{"query": "yo"}',
        "-e", shouter.exchange_name, "--json",
    )  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    record = json.loads(as_json.stdout)
    assert record["type"] == "chimera.v1.QueryResponse"
    assert record["reply"]["answer"] == "YO"
    assert record["reply"]["metadata"]["correlation_id"] == record["correlation_id"]


def test_request_reports_the_agents_failure_with_exit_1(target: Target, shouter: Shouter) -> None:
    result = cli(
        target, "request", "ask.x", "--type", "QueryRequest", "--data", '{"query": "fail"}',
        "--exchange", shouter.exchange_name, "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "messaging.errors.RejectedMessageError"
    assert error["message"] == "no shouting about failure"
    assert error["agent"] == "shouter"
    assert "the agent failed the request: messaging.errors.RejectedMessageError" in result.stderr


BAD_INPUT = [
    ("NoSuchType", '{"query": "hi"}', "unknown message type"),
    ("QueryRequest", '{"query": ', "cannot build chimera.v1.QueryRequest from JSON"),
    ("QueryRequest", '{"no_such_field": 1}', "cannot build chimera.v1.QueryRequest"),
    ("QueryRequest", "[]", "--data must be a JSON object"),
]


def test_bad_input_exits_2_and_sends_nothing(target: Target) -> None:
    exchange, queue = target.exchange(), target.queue("watch")
    assert target.declare_raw(queue, {}, bind=(exchange, "#")) is None

    for type_name, data, says in BAD_INPUT:
        result = cli(
            target, "request", "ask.x", "--type", type_name, "--data", data, "-e", exchange
        )
        assert result.exit_code == 2, (type_name, data, result.output)
        assert says in result.stderr, (type_name, data)
    pattern = cli(target, "request", "ask.*", "--type", "QueryRequest", "--data", "{}")
    assert pattern.exit_code == 2, pattern.output
    assert "is a pattern" in pattern.stderr
    assert target.depth(queue) == 0

    # The same command with good input does send (nobody answers: exit 1 at the timeout).
    outcome: list[Result] = []
    good = ["request", "ask.x", "--type", "QueryRequest", "--data", "{}", "-e", exchange]
    sending = threading.Thread(target=lambda: outcome.append(cli(target, *good, "--timeout", "3")))
    sending.start()
    target.wait_for(lambda: target.depth(queue) == 1, what="the good request in the queue")
    sending.join(30)
    assert outcome[0].exit_code == 1, outcome[0].output
    assert "RequestTimeoutError" in outcome[0].stderr
