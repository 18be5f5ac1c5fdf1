"""messaging.testing replays a recorded conversation on the in-process broker.

The recording is made here too, on an in-process broker with the flight
recorder on (its stream queue works there as on RabbitMQ), then exported as
`chimera-bus trace --export` writes it, and replayed on a fresh broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging._portal import Portal
from messaging.demo.agents import AnalysisAgent, DataAgent, QueryAgent
from messaging.demo.client import AskClient
from messaging.errors import RequestTimeoutError, TopologyMissingError
from messaging.recorder import FlightRecorder, Record, RecorderSettings, encode
from messaging.recorder.reader import read_records
from messaging.testing import Conversation, MemoryBus

EXCHANGE = "chimera.events"
AGENTS = (DataAgent, AnalysisAgent, QueryAgent)
QUESTION = "How has BTC done this month?"


def record_conversation(path: Path, bodies: tuple[str, ...] = ("ask_client",)) -> str:
    """Run the demo once on a broker of its own with the recorder on; export the records."""
    bus = MemoryBus.fresh("recording")
    try:
        settings = RecorderSettings(stream="recorder", bodies=bodies, flush_interval=0.01)
        recorder = FlightRecorder(bus.pool, settings)
        bus.pool.use(recorder)
        for agent in AGENTS:
            bus.start(agent(bus.pool, EXCHANGE))
        client = AskClient(bus.pool, EXCHANGE)
        answer = client.ask(QUESTION, timeout=5)
        client.close()
        assert answer.answered, answer
        cid = answer.correlation_id

        def records() -> list[Record]:
            reading = read_records(bus.config, "recorder", correlation_id=cid, idle=0.05)
            try:
                return asyncio.run(reading).records
            except TopologyMissingError:  # not written yet
                return []

        bus.wait_until(
            lambda: sum(r.kind == "handle" for r in records()) == 5,
            what="the five handled hops recorded",
        )
        Portal.get().call(recorder.close())
        path.write_bytes(encode(records()))
        return cid
    finally:
        bus.close()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("recorded") / "btc.jsonl"
    return path, record_conversation(path)


@pytest.fixture
def bus() -> Iterator[MemoryBus]:
    made = MemoryBus.fresh("replay")
    yield made
    made.close()


def test_a_recorded_conversation_replays_with_the_same_hops(
    recording: tuple[Path, str], bus: MemoryBus
) -> None:
    path, cid = recording
    conversation = Conversation.load(path)
    assert conversation.correlation_id == cid
    assert [str(h) for h in conversation.hops()] == [
        "ask_client -> query_agent: chimera.v1.QueryRequest on query.request (ok)",
        "query_agent -> data_agent: chimera.v1.DataRequest on data.request (ok)",
        "data_agent -> query_agent: chimera.v1.DataResponse on data.response (ok)",
        "query_agent -> analysis_agent: chimera.v1.AnalysisRequest on analysis.request (ok)",
        "analysis_agent -> query_agent: chimera.v1.AnalysisResponse on analysis.response (ok)",
    ]
    hops = conversation.watch(bus.pool)
    for agent in AGENTS:
        bus.start(agent(bus.pool, EXCHANGE))
    conversation.replay(bus)
    conversation.assert_same_hops(hops)


class BrokenDataAgent(DataAgent):
    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        raise KeyError("prices table is gone")


def test_a_replay_that_goes_another_way_fails_and_says_where(
    recording: tuple[Path, str], bus: MemoryBus
) -> None:
    conversation = Conversation.load(recording[0])
    hops = conversation.watch(bus.pool)
    for agent in (BrokenDataAgent, AnalysisAgent, QueryAgent):
        bus.start(agent(bus.pool, EXCHANGE, retry_delays=[]))
    with pytest.raises(RequestTimeoutError):  # the asker never hears back
        conversation.replay(bus, timeout=1.0)
    with pytest.raises(
        AssertionError,
        match="data_agent: chimera.v1.DataRequest on data.request"
        r" \(error builtins.KeyError\)",
    ):
        conversation.assert_same_hops(hops, timeout=0.5)


def test_without_the_first_body_it_says_how_to_record_it(tmp_path: Path) -> None:
    path = tmp_path / "bodiless.jsonl"
    record_conversation(path, bodies=())
    with pytest.raises(ValueError, match="RECORDER__BODIES=ask_client"):
        Conversation.load(path).first_message()


def test_a_file_of_several_conversations_needs_a_correlation_id(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_bytes(
        b'{"kind":"publish","ts":1,"agent":"a","correlation_id":"x"}\n'
        b'{"kind":"publish","ts":2,"agent":"a","correlation_id":"y"}\n'
    )
    with pytest.raises(ValueError, match="2 conversations"):
        Conversation.load(path)
    assert Conversation.load(path, correlation_id="y").first.ts == 2.0
