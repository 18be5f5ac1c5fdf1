"""Item 6: bad configuration is a ConfigurationError naming the variable or argument,
raised before anything is declared, with no secret in it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from messaging import ConfigurationError, ConnectionPool, EventSubscriber
from messaging.aio import AsyncConnectionPool, AsyncEventSubscriber
from messaging.config import RabbitMQConfig, load_config
from messaging.generated import messages_pb2
from tests.conftest import BROKER, Names

SECRET = "s3cret-pw"


@pytest.mark.parametrize(
    ("variables", "named", "says"),
    [
        ({"RABBITMQ__HOST": ""}, "RABBITMQ__HOST", "empty"),
        ({"RABBITMQ__HOST": "   "}, "RABBITMQ__HOST", "empty"),
        ({"RABBITMQ__HOST": f"amqp://bob:{SECRET}@broker:5672/"}, "RABBITMQ__HOST", "URL"),
        ({"RABBITMQ__HOST": f"bob:{SECRET}@broker"}, "RABBITMQ__HOST", "URL"),
        ({"RABBITMQ": "{not json"}, "RABBITMQ", "not valid JSON"),
        ({"RABBITMQ": f'{{"host": "amqp://u:{SECRET}@h"}}'}, "RABBITMQ__HOST", "URL"),
        ({"RABBITMQ__PORT": "5672x"}, "RABBITMQ__PORT", "integer"),
        ({"RABBITMQ__PORT": "70000"}, "RABBITMQ__PORT", "65535"),
        ({"RABBITMQ__PASSWORD": SECRET, "RABBITMQ__HEARTBEAT": "-1"}, "HEARTBEAT", "greater than"),
        ({"MONITORING__LOG_LEVEL": "loud"}, "MONITORING__LOG_LEVEL", "unknown log level"),
    ],
)
def test_a_bad_variable_is_named_and_no_secret_is_shown(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str, says: str
) -> None:
    for name in ("RABBITMQ__HOST", "RABBITMQ__PORT"):  # the suite's own broker address
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_config()
    text = str(caught.value)
    assert named in text
    assert says in text
    assert SECRET not in text
    assert caught.value.__cause__ is None  # no chained traceback echoing the input
    assert caught.value.__suppress_context__


def test_a_bad_argument_to_the_config_is_named() -> None:
    with pytest.raises(ConfigurationError, match=r"host: must be a host name") as caught:
        RabbitMQConfig(host=f"amqp://u:{SECRET}@h", port=5672)
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"port=0: Input should be greater"):
        RabbitMQConfig(port=0)


class _Sub(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[messages_pb2.QueryRequest]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: Any, properties: dict[str, Any]) -> None:
        """Never reached: construction fails."""


class _AsyncSub(AsyncEventSubscriber):
    def get_message_class(self, routing_key: str) -> type[messages_pb2.QueryRequest]:
        return messages_pb2.QueryRequest

    async def handle_message(self, message: Any, properties: dict[str, Any]) -> None:
        """Never reached: construction fails."""


def _exchange_exists(name: str) -> bool:
    connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
    try:
        connection.channel().exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=1, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"prefetch_count": 70000}, "prefetch_count must be an int from 1 to 65535"),
        ({"prefetch_count": 0}, "prefetch_count"),
        ({"prefetch_count": True}, "prefetch_count"),
        ({"agent_name": "agënt"}, "'ë'"),
        ({"agent_name": "агент"}, "agent name"),
        ({"queue_name": "q\u00e9"}, "queue name"),
        ({"routing_keys": "query.request"}, "routing_keys must be a list"),
    ],
)
def test_bad_subscriber_arguments_fail_before_anything_is_declared(
    pool: ConnectionPool, names: Names, arguments: dict[str, Any], says: str
) -> None:
    exchange = names.exchange
    kwargs: dict[str, Any] = {
        "agent_name": "agent",
        "exchange_name": exchange,
        "routing_keys": ["query.request"],
        **arguments,
    }
    with pytest.raises(ConfigurationError, match=says):
        _Sub(pool, **kwargs)
    with pytest.raises(ConfigurationError, match=says):
        _AsyncSub(AsyncConnectionPool(pool.config), **kwargs)
    assert not _exchange_exists(exchange)
