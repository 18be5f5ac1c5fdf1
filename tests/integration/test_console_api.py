"""`chimera-bus console`'s JSON endpoints on RabbitMQ, through Starlette's TestClient."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from messaging import ConnectionPool, EventPublisher
from messaging.config import RabbitMQConfig
from messaging.console import create_app
from messaging.console.bus import Bus
from tests import broker_env
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for
from tests.integration.test_cli import dead_letters, put_in_dlq
from tests.integration.test_cli_trace import recording, stream  # noqa: F401 (fixtures)

PRICE_MISSING = "shop.errors.PriceMissing"


@pytest.fixture(autouse=True)
def broker_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console reads the broker from RABBITMQ__*, as `chimera-bus console` does."""
    for key, value in broker_env.environ().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    made = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield made
    made.close()


@pytest.fixture
def failed(pool: ConnectionPool, raw: RawBroker, names: Names) -> tuple[str, str]:
    """A queue with three dead letters in two groups: two RuntimeErrors, one PriceMissing."""
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["boom 1", "boom 2"])
    put_in_dlq(
        raw, queue, query("no price").SerializeToString(),
        type="chimera.v1.QueryRequest", message_id="priceless",
        headers={
            "x-chimera-error-type": PRICE_MISSING,
            "x-chimera-original-exchange": exchange,
            "x-chimera-original-routing-key": "query.request",
        },
    )  # fmt: skip
    return exchange, queue


def client(config: RabbitMQConfig, *queues: str, token: str | None = None) -> TestClient:
    return TestClient(create_app(Bus(config, "no-such-stream", queues), token=token))


def groups(api: TestClient) -> dict[str | None, dict[str, Any]]:
    answer = api.get("/api/dead-letters")
    assert answer.status_code == 200, answer.text
    return {group["error_type"]: group for group in answer.json()["groups"]}


def test_dead_letters_are_grouped_by_agent_and_error_type(
    config: RabbitMQConfig, failed: tuple[str, str]
) -> None:
    _, queue = failed
    with client(config, queue) as api:
        found = groups(api)
    assert set(found) == {"builtins.RuntimeError", PRICE_MISSING}
    runtime = found["builtins.RuntimeError"]
    assert (runtime["queue"], runtime["agent"], runtime["count"]) == (queue, queue, 2)
    assert {letter["routing_key"] for letter in runtime["letters"]} == {"query.request"}
    assert [letter["message_id"] for letter in found[PRICE_MISSING]["letters"]] == ["priceless"]


def test_replay_by_id_and_purge_by_group_say_what_they_did(
    config: RabbitMQConfig, failed: tuple[str, str], raw: RawBroker
) -> None:
    _, queue = failed
    with client(config, queue) as api:
        first = groups(api)["builtins.RuntimeError"]["letters"][0]["message_id"]
        replayed = api.post("/api/replay", json={"queue": queue, "ids": [first]})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {
            "did": "replay", "queue": queue, "selection": f"id {first}",
            "replayed": 1, "of": 1, "failed": [],
        }  # fmt: skip
        assert raw.depth(queue) == 1  # back in the work queue (no consumer now)
        method, props, _ = raw.channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert props.message_id == first

        purged = api.post("/api/purge", json={"queue": queue, "error_type": PRICE_MISSING})
        assert purged.status_code == 200, purged.text
        assert purged.json()["purged"] == 1
        assert set(groups(api)) == {"builtins.RuntimeError"}
    assert raw.depth(f"{queue}.dlq") == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/replay", {"ids": ["nope"]}, 404, "no dead letter with id nope"),
        ("/api/purge", {"ids": ["nope"]}, 404, "no dead letter with id nope"),
        ("/api/purge", {"error_type": "KeyError"}, 404, "no dead letter matches"),
        ("/api/replay", {"ids": ["a"], "error_type": "KeyError"}, 400, "not both"),
        ("/api/purge", {}, 400, "say which dead letters"),
        ("/api/purge", {"ids": "priceless"}, 400, "ids: a list"),
        ("/api/replay", {"queue": "somebody-else", "ids": ["priceless"]}, 404, "not a queue"),
    ],
)
def test_bad_selections_get_a_clear_answer_and_change_nothing(
    config: RabbitMQConfig,
    failed: tuple[str, str],
    raw: RawBroker,
    path: str,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    _, queue = failed
    with client(config, queue) as api:
        answer = api.post(path, json={"queue": queue, **body})
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert raw.depth(f"{queue}.dlq") == 3
    assert raw.depth(queue) == 0


def test_a_body_that_is_not_json_is_a_400(config: RabbitMQConfig, names: Names) -> None:
    with client(config, names.queue()) as api:
        answer = api.post("/api/purge", content=b"<html>", headers={"content-type": "text/html"})
    assert answer.status_code == 400
    assert answer.json() == {"error": "the body must be a JSON object"}


@pytest.mark.parametrize(
    "correlation_id", ["<script>alert(1)</script>", "a b", "x" * 201, "\x1b[31mred"]
)
def test_a_correlation_id_with_markup_is_refused(
    config: RabbitMQConfig, correlation_id: str
) -> None:
    with client(config) as api:
        answer = api.get("/api/conversations/" + quote(correlation_id, safe=""))
    assert answer.status_code == 400
    assert "no spaces or markup" in answer.json()["error"]


def test_with_a_token_a_request_without_it_is_refused_and_changes_nothing(
    config: RabbitMQConfig, failed: tuple[str, str], raw: RawBroker
) -> None:
    _, queue = failed
    with client(config, queue, token="s3cret") as api:
        for answer in (
            api.get("/"),
            api.get("/api/dead-letters"),
            api.post("/api/purge", json={"queue": queue, "error_type": PRICE_MISSING}),
            api.post(
                "/api/purge",
                json={"queue": queue, "error_type": PRICE_MISSING},
                headers={"x-console-token": "wrong"},
            ),
        ):
            assert answer.status_code == 401, answer.text
            assert "token" in answer.json()["error"]
        assert raw.depth(f"{queue}.dlq") == 3
        assert api.get("/?token=s3cret").status_code == 200
        assert api.get("/api/agents", headers={"authorization": "Bearer s3cret"}).status_code == 200
        purged = api.post(
            "/api/purge",
            json={"queue": queue, "error_type": PRICE_MISSING},
            headers={"x-console-token": "s3cret"},
        )
    assert purged.status_code == 200, purged.text
    assert raw.depth(f"{queue}.dlq") == 2


def test_a_conversation_and_its_agents_come_from_the_recorder(
    recording: str,  # noqa: F811 (a fixture)
    config: RabbitMQConfig,
    pool: ConnectionPool,
    names: Names,
    raw: RawBroker,
) -> None:
    correlation_id = f"console-{uuid.uuid4().hex[:8]}"
    exchange, queue = names.exchange, names.queue()
    raw.channel.exchange_declare(exchange, "topic", durable=True)
    raw.channel.queue_declare(queue)
    raw.channel.queue_bind(queue, exchange, "query.request")
    publisher = EventPublisher(pool, "asker", exchange)
    publisher.publish(query("hello", correlation_id=correlation_id), "query.request")
    publisher.close()
    with TestClient(create_app(Bus(config, recording))) as api:
        found: dict[str, Any] = {}

        def recorded() -> bool:
            answer = api.get(f"/api/conversations/{correlation_id}")
            found.update(answer.json())
            return bool(answer.status_code == 200)

        wait_for(recorded, what="the conversation's record")
        assert found["correlation_id"] == correlation_id
        assert [step["agent"] for step in found["steps"]] == ["asker"]
        assert found["steps"][0]["kind"] == "publish"
        time.sleep(0.1)
        agents = api.get("/api/agents").json()
        assert agents["source"] == "recorder"
        assert "asker" in {agent["name"] for agent in agents["agents"]}
        missing = api.get("/api/conversations/never-was")
        assert missing.status_code == 404
        assert "no record of conversation never-was" in missing.json()["error"]


def test_the_flow_counts_who_talks_to_whom_with_errors(
    recording: str,  # noqa: F811 (a fixture)
    config: RabbitMQConfig,
    pool: ConnectionPool,
    names: Names,
    raw: RawBroker,
) -> None:
    exchange, queue = names.exchange, names.queue()
    agent = Recorder(
        pool, exchange=exchange, queue=queue, routing_keys=["query.*"], fail_on=["broken"]
    ).run_in_thread()
    publisher = EventPublisher(pool, "asker", exchange)
    try:
        for text in ("one", "two", "broken"):
            publisher.publish(query(text), "query.request")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")
        with TestClient(create_app(Bus(config, recording))) as api:
            edges: list[dict[str, Any]] = []

            def counted() -> bool:
                answer = api.get("/api/flow")
                assert answer.status_code == 200, answer.text
                edges[:] = answer.json()["edges"]
                return bool(edges) and edges[0]["count"] == 3

            wait_for(counted, what="three handled records")
    finally:
        publisher.close()
        agent.stop_and_join()
    assert edges == [
        {
            "from": "asker", "to": "recorder", "count": 3, "errors": 1,
            "rate_per_minute": 0.6, "error_rate": 0.333,
        }
    ]  # fmt: skip
