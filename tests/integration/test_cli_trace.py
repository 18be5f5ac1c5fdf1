"""`chimera-bus trace` on RabbitMQ: the demo's four questions as four timelines, and bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from typer.testing import CliRunner, Result

from messaging import ConnectionPool, EventPublisher
from messaging.cli import app
from messaging.config import RabbitMQConfig
from messaging.demo.agents import AnalysisAgent, DataAgent, QueryAgent, demo_queue_name
from messaging.demo.client import DEFAULT_QUESTIONS, AskClient, Printer
from messaging.demo.inprocess import InProcessAgents
from messaging.generated import messages_pb2 as pb
from messaging.recorder import decode
from tests import broker_env
from tests.conftest import BROKER
from tests.integration.helpers import wait_for

DEMO_AGENTS = (DataAgent, AnalysisAgent, QueryAgent)


def cli(*args: str, stream: str) -> Result:
    env = {
        "RABBITMQ__HOST": broker_env.HOST,
        "RABBITMQ__PORT": str(broker_env.PORT),
        "RABBITMQ__USERNAME": "guest",
        "RABBITMQ__PASSWORD": "guest",
        "RECORDER__STREAM": stream,
        "COLUMNS": "250",
    }
    return CliRunner(env=env).invoke(app, list(args))


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}.recorder"
    yield name
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    connection.channel().queue_delete(name)
    connection.close()


@pytest.fixture
def recording(stream: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every pool made in the test records to ``stream`` (as RECORDER__ENABLED does in prod)."""
    monkeypatch.setenv("RECORDER__ENABLED", "true")
    monkeypatch.setenv("RECORDER__STREAM", stream)
    monkeypatch.setenv("RECORDER__FLUSH_INTERVAL", "0.05")
    return stream


@pytest.fixture
def demo_exchange() -> Iterator[str]:
    exchange = f"test-{uuid.uuid4().hex[:10]}.demo"
    yield exchange
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    channel = connection.channel()
    for agent in DEMO_AGENTS:
        queue = demo_queue_name(exchange, agent.AGENT_NAME)
        for name in (queue, f"{queue}.dlq"):
            channel.queue_delete(name)
    for name in (exchange, f"{exchange}.dlx"):
        channel.exchange_delete(name)
    connection.close()


def test_the_demos_four_questions_are_four_timelines(
    recording: str, demo_exchange: str, config: RabbitMQConfig
) -> None:
    lines: list[str] = []
    with InProcessAgents(demo_exchange, config, agents=DEMO_AGENTS, out=Printer(lines.append)):
        pool = ConnectionPool(config)
        client = AskClient(pool, demo_exchange)
        try:
            answers = [client.ask(question, timeout=30) for question in DEFAULT_QUESTIONS]
        finally:
            client.close()
            pool.close()
        assert all(a.answered for a in answers), answers
        ids = [a.correlation_id for a in answers]
        assert len(set(ids)) == 4

        def traced(cid: str) -> Result:
            return cli("trace", cid, "--idle", "0.5", stream=recording)

        # The agents' recorders write every 50 ms; the last hop may still be in the buffer.
        wait_for(
            lambda: all("query_agent" in traced(cid).output for cid in ids),
            what="the four conversations recorded",
        )
    timelines = {cid: traced(cid) for cid in ids}
    for cid, result in timelines.items():
        assert result.exit_code == 0, result.output
        out = result.output
        assert f"conversation {cid}" in out
        # who sent what to whom: the client asked, the query agent handled it and answered
        assert "ask_client\tsent\tQueryRequest\tquery.request\tto query_agent" in out
        assert "query_agent\thandled\tQueryRequest\tquery.request\tfrom ask_client" in out
        assert "query_agent\treply\tQueryResponse\t(reply)\tto ask_client" in out
        for line in out.splitlines()[2:]:
            if "\thandled\t" in line:
                hop, ran = line.split("\t")[6:8]
                assert float(hop) >= 0
                assert float(ran) >= 0
    assert len(timelines) == 4


def publish_recorded(config: RabbitMQConfig, cid: str, exchange: str) -> str:
    pool = ConnectionPool(config)
    publisher = EventPublisher(pool, agent_name="asker", exchange_name=exchange)
    try:
        return publisher.publish(
            pb.QueryRequest(query="x"), "nobody.listens", correlation_id=cid, mandatory=False
        )
    finally:
        publisher.close()
        pool.close()


def wait_recorded(stream: str, cid: str) -> None:
    wait_for(lambda: cli("trace", cid, "--idle", "0.3", stream=stream).exit_code == 0, what=cid)


def test_a_correlation_id_with_markup_and_control_characters_is_printed_inert(
    recording: str, config: RabbitMQConfig
) -> None:
    cid = "[bold red]boom[/] \x1b[2J\u202eevil"
    exchange = f"test-{uuid.uuid4().hex[:10]}.events"
    publish_recorded(config, cid, exchange)
    wait_recorded(recording, cid)
    result = cli("trace", cid, stream=recording)
    assert result.exit_code == 0, result.output
    assert "[bold red]boom[/]" in result.output  # shown as typed, not as markup
    assert "\\x1b[2J" in result.output
    assert "\\u202e" in result.output
    assert "\x1b" not in result.output
    as_json = cli("trace", cid, "--json", stream=recording)
    assert json.loads(as_json.output.splitlines()[0])["correlation_id"] == cid
    _delete_exchange(exchange)


def test_undecodable_records_are_skipped_and_counted(
    recording: str, config: RabbitMQConfig, tmp_path: Path
) -> None:
    exchange = f"test-{uuid.uuid4().hex[:10]}.events"
    sent = publish_recorded(config, "conv-ok", exchange)
    wait_recorded(recording, "conv-ok")
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    channel = connection.channel()
    channel.basic_publish("", recording, b'\xff\xfe not json\n{"kind": 1}\n')
    connection.close()
    publish_recorded(config, "conv-ok", exchange)

    def records() -> int:
        output = cli("trace", "conv-ok", "--json", stream=recording).output
        return sum(line.startswith("{") for line in output.splitlines())

    wait_for(lambda: records() == 2, what="the second record")
    export = tmp_path / "conv.jsonl"
    result = cli("trace", "conv-ok", "--export", str(export), stream=recording)
    assert result.exit_code == 0, result.output
    assert "2 record(s) could not be decoded and were skipped" in result.output
    exported = decode(export.read_bytes())
    assert exported.skipped == 0
    assert next(r.message_id for r in exported.records) == sent
    assert len(exported.records) == 2
    _delete_exchange(exchange)


def test_no_record_of_the_conversation_exits_1_and_a_missing_stream_2(
    recording: str, config: RabbitMQConfig
) -> None:
    exchange = f"test-{uuid.uuid4().hex[:10]}.events"
    publish_recorded(config, "conv-there", exchange)
    wait_recorded(recording, "conv-there")
    missing = cli("trace", "conv-elsewhere", "--idle", "0.3", stream=recording)
    assert missing.exit_code == 1
    assert "no record of conversation conv-elsewhere" in missing.output
    nowhere = cli("trace", "conv-there", stream=f"{recording}.absent")
    assert nowhere.exit_code == 2
    assert "there is no stream" in nowhere.output
    bad_since = cli("trace", "conv-there", "--since", "yesterday", stream=recording)
    assert bad_since.exit_code == 2
    assert "neither a duration" in bad_since.output
    recent = cli("trace", "conv-there", "--since", "10m", stream=recording)
    assert recent.exit_code == 0, recent.output
    _delete_exchange(exchange)


def _delete_exchange(exchange: str) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    channel = connection.channel()
    channel.exchange_delete(exchange)
    channel.exchange_delete(f"{exchange}.dlx")
    connection.close()
