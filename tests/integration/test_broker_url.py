"""RABBITMQ__URL on one real node: the list is tried in order, health says where we are."""

from __future__ import annotations

import socket

from pydantic import SecretStr

from messaging import AuthenticationFailedError, ConnectionFailedError, ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.ops.health import Readiness
from tests.broker_env import HOST, PORT


def _secret(url: str) -> SecretStr:
    return SecretStr(url)


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_first_node_is_skipped_and_health_names_the_live_one() -> None:
    dead = closed_port()
    config = RabbitMQConfig(
        url=_secret(f"amqp://guest:guest@127.0.0.1:{dead}/,amqp://guest:guest@{HOST}:{PORT}/"),
        connection_name="chimera-test",
        connect_timeout=3,
    )
    pool = ConnectionPool(config, max_retries=0, initial_retry_delay=0.1)
    try:
        pool.connect()
        health = pool.health()
        assert health.publishing.node == f"{HOST}:{PORT}"
        assert health.consuming.node == f"{HOST}:{PORT}"
        # The unauthenticated /readyz shows connection state, not where it points.
        readiness = Readiness(True, [], {"publish": health.publishing})
        assert "node" not in readiness.to_json()["connections"]["publish"]
    finally:
        pool.close()
    assert pool.health().publishing.node is None


def test_no_node_answering_names_every_node_tried() -> None:
    first, second = closed_port(), closed_port()
    config = RabbitMQConfig(
        url=_secret(
            f"amqp://guest:guest@127.0.0.1:{first}/,amqp://guest:guest@127.0.0.1:{second}/"
        ),
        connect_timeout=2,
    )
    pool = ConnectionPool(config, max_retries=0, initial_retry_delay=0.1)
    try:
        try:
            pool.connect()
        except ConnectionFailedError as exc:
            text = str(exc)
        else:
            raise AssertionError("connected to nodes that do not exist")
    finally:
        pool.close()
    assert "none of the 2 broker nodes answered" in text
    assert f"127.0.0.1:{first}" in text
    assert f"127.0.0.1:{second}" in text
    assert "guest:guest" not in text


def test_wrong_password_in_the_url_fails_at_once_without_trying_further_nodes() -> None:
    config = RabbitMQConfig(
        url=_secret(
            f"amqp://guest:wr0ng-secret@{HOST}:{PORT}/,amqp://guest:wr0ng-secret@{HOST}:{PORT}/"
        ),
        password=SecretStr("unused"),
    )
    pool = ConnectionPool(config, max_retries=5, initial_retry_delay=30.0)
    try:
        try:
            pool.connect()
        except AuthenticationFailedError as exc:
            text = str(exc)
        else:
            raise AssertionError("logged in with a wrong password")
    finally:
        pool.close()
    assert "RABBITMQ__URL" in text
    assert "wr0ng-secret" not in text
