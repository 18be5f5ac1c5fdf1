"""The announcement's JSON schema, its parsing, expiry in a Directory, and DISCOVERY__*."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from messaging import BaseAgent, ConnectionPool, MemoryTransport, RabbitMQConfig
from messaging.config import load_config
from messaging.discovery import AgentCard, Directory
from messaging.discovery.card import SCHEMA, card_for, distribution_version
from messaging.errors import ConfigurationError
from messaging.generated import messages_pb2 as pb
from messaging.transport.memory import MemoryBroker


def card(**changes: object) -> AgentCard:
    values: dict[str, object] = {
        "instance": "abc",
        "name": "weather",
        "kind": "agent",
        "version": "1.0",
        "exchange": "chimera.events",
        "queue": "weather",
        "routing_keys": ("weather.request",),
        "request_types": {"weather.request": "shop.v1.WeatherRequest"},
        "reply_types": {},
        "host": "node-1",
        "pid": 42,
        "since": datetime(2026, 12, 4, 16, 0, tzinfo=UTC),
        "interval": 5.0,
    }
    values.update(changes)
    return AgentCard(**values)  # type: ignore[arg-type]


def test_a_card_round_trips_through_its_documented_json() -> None:
    sent = card().stamped("withdraw")
    data = json.loads(sent.to_json())
    assert data["schema"] == SCHEMA
    assert data["event"] == "withdraw"
    assert data["since"] == "2026-12-04T16:00:00+00:00"
    assert data["routing_keys"] == ["weather.request"]
    assert AgentCard.from_json(sent.to_json()) == sent
    assert sent.expires_after == 15.0


def test_unknown_fields_are_ignored_so_later_versions_can_add_some() -> None:
    data = json.loads(card().to_json())
    data["capabilities"] = ["streaming"]
    assert AgentCard.from_json(json.dumps(data).encode()).name == "weather"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"schema": "other.v1", "name": "x"}).encode(),
        json.dumps({"schema": SCHEMA, "name": "x"}).encode(),
        json.dumps({**json.loads(card().to_json()), "interval": 0}).encode(),
        json.dumps({**json.loads(card().to_json()), "event": "explode"}).encode(),
        json.dumps({**json.loads(card().to_json()), "name": 7}).encode(),
        json.dumps({**json.loads(card().to_json()), "request_types": ["a"]}).encode(),
    ],
)
def test_anything_else_is_refused_with_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"not JSON|not a chimera|malformed|interval|event"):
        AgentCard.from_json(body)


def test_the_version_of_an_installed_distribution_is_found_and_a_script_has_none() -> None:
    assert distribution_version("messaging.demo.agents") != ""
    assert distribution_version("__main__") == ""
    assert distribution_version("no_such_package_anywhere") == ""


def test_discovery_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config().discovery.enabled is False
    monkeypatch.setenv("DISCOVERY__ENABLED", "true")
    monkeypatch.setenv("DISCOVERY__INTERVAL", "2.5")
    monkeypatch.setenv("DISCOVERY__EXCHANGE", "ops.discovery")
    discovery = load_config().discovery
    assert (discovery.enabled, discovery.interval, discovery.exchange) == (
        True,
        2.5,
        "ops.discovery",
    )
    monkeypatch.setenv("DISCOVERY__INTERVAL", "0")
    with pytest.raises(ConfigurationError, match="DISCOVERY__INTERVAL"):
        load_config()


class Heard:
    def __init__(self, body: bytes) -> None:
        self.body = body


def test_a_directory_forgets_an_instance_three_of_its_intervals_after_its_last_heartbeat() -> None:
    now = [100.0]
    directory = Directory(None, clock=lambda: now[0])  # type: ignore[arg-type]
    directory._on_delivery(Heard(card(interval=2.0).stamped().to_json()))  # type: ignore[arg-type]
    directory._on_delivery(Heard(b"noise"))  # type: ignore[arg-type]
    assert directory.malformed == 1
    now[0] += 6.0
    assert [c.name for c in directory.agents()] == ["weather"]
    now[0] += 0.01
    assert directory.agents() == []


def test_a_directory_drops_a_withdrawn_instance_at_once() -> None:
    directory = Directory(None)  # type: ignore[arg-type]
    directory._on_delivery(Heard(card().stamped().to_json()))  # type: ignore[arg-type]
    other = card(instance="def", name="alpha")
    directory._on_delivery(Heard(other.stamped().to_json()))  # type: ignore[arg-type]
    assert [c.name for c in directory.agents()] == ["alpha", "weather"]
    directory._on_delivery(Heard(card().stamped("withdraw").to_json()))  # type: ignore[arg-type]
    assert [c.instance for c in directory.agents()] == ["def"]


def test_a_typed_agents_card_says_what_each_handler_answers() -> None:
    pool = ConnectionPool(
        RabbitMQConfig(host="127.0.0.1", port=1),
        max_retries=0,
        transport=MemoryTransport(MemoryBroker()),
    )
    agent = BaseAgent(pool, "weather")

    @agent.handler("weather.now")
    def now(request: pb.QueryRequest) -> pb.QueryResponse:
        return pb.QueryResponse()

    @agent.handler("weather.hourly")
    def hourly(request: pb.QueryRequest) -> Iterator[pb.DataResponse]:
        yield pb.DataResponse()

    card = card_for(agent, interval=5.0, version="1")
    assert card.answers == {
        "weather.now": "chimera.v1.QueryResponse",
        "weather.hourly": "chimera.v1.DataResponse",
    }
    assert AgentCard.from_json(card.to_json()).answers == card.answers
    pool.close()
