"""TLS against a node that listens only on TLS, with a CA and certificate made by the test."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from pydantic import SecretStr

from messaging import (
    AuthenticationFailedError,
    CertificateVerificationError,
    ConfigurationError,
    ConnectionPool,
    EventPublisher,
    EventSubscriber,
)
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from tests.integration.helpers import wait_for
from tests.production.conftest import CLIENT_NAME, SERVER_NAME, TlsFiles
from tests.production.nodes import Node


def config(url: str, **settings: Any) -> RabbitMQConfig:
    return RabbitMQConfig(url=SecretStr(url), connection_name="chimera-tls-test", **settings)


class Collector(EventSubscriber):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        self.texts: list[str] = []
        super().__init__(pool, "tls-test", exchange, queue, ["tls.#"])

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.texts.append(getattr(message, "query", ""))


def round_trip(cfg: RabbitMQConfig) -> list[str]:
    names = f"tls-{uuid.uuid4().hex[:8]}"
    with ConnectionPool(cfg, max_retries=2, initial_retry_delay=0.2) as pool:
        sub = Collector(pool, f"{names}.events", f"{names}.q")
        thread = threading.Thread(target=sub.start_consuming, daemon=True)
        thread.start()
        wait_for(lambda: sub.is_consuming, what="the consumer over TLS")
        publisher = EventPublisher(pool, "tls-test", f"{names}.events")
        try:
            publisher.publish(messages_pb2.QueryRequest(query="over TLS"), "tls.hello")
            wait_for(lambda: sub.texts == ["over TLS"], what="the message over TLS")
        finally:
            publisher.close()
            sub.stop()
            thread.join(30)
    return sub.texts


def test_amqps_round_trip_with_the_private_ca(tls_node: Node, tls_files: TlsFiles) -> None:
    url = f"amqps://guest:guest@{SERVER_NAME}:{tls_node.port}/"
    assert round_trip(config(url, tls_ca_file=tls_files.ca)) == ["over TLS"]


def test_tls_true_with_host_and_port_and_a_client_certificate(
    tls_node: Node, tls_files: TlsFiles
) -> None:
    cfg = RabbitMQConfig(
        host=SERVER_NAME,
        port=tls_node.port,
        tls=True,
        tls_ca_file=tls_files.ca,
        tls_cert_file=tls_files.client_cert,
        tls_key_file=tls_files.client_key,
    )
    assert round_trip(cfg) == ["over TLS"]


def test_server_name_verifies_a_certificate_issued_for_another_name(
    tls_node: Node, tls_files: TlsFiles
) -> None:
    """Dialled by address, the certificate (for 'localhost') verifies against the given name."""
    url = f"amqps://guest:guest@127.0.0.1:{tls_node.port}/"
    cfg = config(url, tls_ca_file=tls_files.ca, tls_server_name=SERVER_NAME)
    assert round_trip(cfg) == ["over TLS"]


def connect_error(cfg: RabbitMQConfig, caplog: pytest.LogCaptureFixture) -> str:
    """Connect with a generous retry policy and return the error, which must come at once."""
    pool = ConnectionPool(cfg, max_retries=5, initial_retry_delay=30.0)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="messaging.connection"),
            pytest.raises(CertificateVerificationError) as info,
        ):
            pool.connect()
    finally:
        pool.close()
    assert "retrying in" not in caplog.text  # retrying cannot fix it: not retried
    return str(info.value)


def test_without_the_ca_file_the_system_store_refuses_it_at_once(
    tls_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    text = connect_error(config(f"amqps://guest:guest@{SERVER_NAME}:{tls_node.port}/"), caplog)
    assert "could not be verified" in text
    assert "system's trust store" in text


def test_a_ca_that_did_not_sign_it_is_named_in_the_error(
    tls_node: Node, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"amqps://guest:guest@{SERVER_NAME}:{tls_node.port}/"
    text = connect_error(config(url, tls_ca_file=tls_files.other_ca), caplog)
    assert "could not be verified" in text
    assert str(tls_files.other_ca) in text


def test_a_host_name_mismatch_is_refused_at_once(
    tls_node: Node, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"amqps://guest:guest@127.0.0.1:{tls_node.port}/"  # the certificate says localhost
    text = connect_error(config(url, tls_ca_file=tls_files.ca), caplog)
    assert "could not be verified" in text
    assert "'127.0.0.1'" in text
    assert "RABBITMQ__TLS_SERVER_NAME" in text


def test_an_unreadable_ca_file_is_a_configuration_error(tls_files: TlsFiles) -> None:
    not_pem = tls_files.ca.parent / "not-a-ca.pem"
    not_pem.write_text("this is not a certificate\n")
    with pytest.raises(ConfigurationError, match="RABBITMQ__TLS_CA_FILE"):
        ConnectionPool(config("amqps://guest:guest@localhost:5671/", tls_ca_file=not_pem))


# -- logging in by certificate (SASL EXTERNAL) ------------------------------------------------


def certificate_login(node: Node, tls_files: TlsFiles, **settings: Any) -> RabbitMQConfig:
    """Certificate login to ``node``, with a password the broker's user does not have."""
    options: dict[str, Any] = {
        "host": SERVER_NAME,
        "port": node.port,
        "tls": True,
        "tls_ca_file": tls_files.ca,
        "tls_cert_file": tls_files.client_cert,
        "tls_key_file": tls_files.client_key,
        "username": CLIENT_NAME,
        "password": SecretStr("not-the-password-of-this-user"),
        "auth_mechanism": "EXTERNAL",
        "connection_name": "chimera-certificate-login-test",
    }
    options.update(settings)
    return RabbitMQConfig(**options)


def test_certificate_login_round_trip_sends_no_password(
    certificate_login_node: Node, tls_files: TlsFiles
) -> None:
    cfg = certificate_login(certificate_login_node, tls_files)
    assert round_trip(cfg) == ["over TLS"]
    with ConnectionPool(cfg, max_retries=2, initial_retry_delay=0.2) as pool:
        pool.connect()
        rows = json.loads(
            certificate_login_node.ctl(
                "list_connections",
                "user",
                "auth_mechanism",
                "client_properties",
                "--formatter",
                "json",
            )
        )
    ours = [row for row in rows if "chimera-certificate-login" in json.dumps(row)]
    assert ours, rows
    assert {(row["user"], row["auth_mechanism"]) for row in ours} == {(CLIENT_NAME, "EXTERNAL")}


def test_a_certificate_without_a_broker_user_is_refused_at_once(
    certificate_login_node: Node, tls_files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = certificate_login(
        certificate_login_node,
        tls_files,
        tls_cert_file=tls_files.stranger_cert,
        tls_key_file=tls_files.stranger_key,
    )
    pool = ConnectionPool(cfg, max_retries=5, initial_retry_delay=30.0)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="messaging.connection"),
            pytest.raises(AuthenticationFailedError) as info,
        ):
            pool.connect()
    finally:
        pool.close()
    assert "retrying in" not in caplog.text
    text = str(info.value)
    assert "EXTERNAL" in text
    assert str(tls_files.stranger_cert) in text
    assert "not-the-password" not in text


def test_password_login_to_a_certificate_only_broker_names_the_mechanisms(
    certificate_login_node: Node, tls_files: TlsFiles
) -> None:
    cfg = certificate_login(certificate_login_node, tls_files, auth_mechanism="plain")
    pool = ConnectionPool(cfg, max_retries=5, initial_retry_delay=30.0)
    try:
        with pytest.raises(
            AuthenticationFailedError, match="does not offer the SASL mechanism PLAIN"
        ):
            pool.connect()
    finally:
        pool.close()
