"""RABBITMQ__URL and the TLS settings: parsing, precedence, refusals, secrecy. No broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from messaging import ConfigurationError, RabbitMQConfig, load_config

SECRET = "s3cr3t-Pa55"


def _secret(url: str) -> SecretStr:
    return SecretStr(url)


def test_without_url_the_spec_variables_name_one_node() -> None:
    config = RabbitMQConfig(host="rabbit", port=5999, username="u", vhost="v")
    (node,) = config.nodes()
    assert (node.host, node.port, node.tls, node.username, node.vhost) == (
        "rabbit",
        5999,
        False,
        "u",
        "v",
    )
    assert config.memory_broker is None


def test_tls_true_defaults_the_port_to_5671() -> None:
    (node,) = RabbitMQConfig(host="rabbit", tls=True).nodes()
    assert (node.port, node.tls) == (5671, True)
    assert RabbitMQConfig(host="rabbit").nodes()[0].port == 5672


def test_url_list_is_parsed_in_order_and_takes_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ__HOST", "ignored")
    monkeypatch.setenv("RABBITMQ__PORT", "1111")
    monkeypatch.setenv(
        "RABBITMQ__URL",
        f"amqps://app:{SECRET}@n1.example:5671/prod, amqps://app:{SECRET}@n2.example/prod,"
        f"amqps://app:{SECRET}@n3.example:6000/prod",
    )
    nodes = load_config().rabbitmq.nodes()
    assert [(n.host, n.port) for n in nodes] == [
        ("n1.example", 5671),
        ("n2.example", 5671),
        ("n3.example", 6000),
    ]
    assert {(n.tls, n.username, n.vhost) for n in nodes} == {(True, "app", "prod")}
    assert nodes[0].password.get_secret_value() == SECRET


def test_url_vhost_and_credentials_are_percent_decoded_and_default_from_variables() -> None:
    config = RabbitMQConfig(
        url=_secret("amqp://a%40b:p%2Fw@h/%2F"), username="other", password=SecretStr("x")
    )
    (node,) = config.nodes()
    assert (node.username, node.password.get_secret_value(), node.vhost) == ("a@b", "p/w", "/")
    # No credentials in the URL: RABBITMQ__USERNAME / RABBITMQ__PASSWORD fill in.
    bare_config = RabbitMQConfig(url=_secret("amqp://h"), username="svc", password=SecretStr("pw"))
    (bare,) = bare_config.nodes()
    assert (bare.username, bare.password.get_secret_value(), bare.vhost) == ("svc", "pw", "/")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"amqp://u:{SECRET}@a,amqps://u:{SECRET}@b", "mixes amqp:// and amqps://"),
        (f"amqp://u:{SECRET}@a/one,amqp://u:{SECRET}@b/two", "different vhosts"),
        (f"memory://,amqp://u:{SECRET}@b", "mixes memory://"),
        (f"amqp://u:{SECRET}@a,,amqp://u:{SECRET}@b", "empty entry"),
        (f"http://u:{SECRET}@a", "not an amqp://"),
        (f"amqp://u:{SECRET}@a:99999", "port"),
        (f"amqp://u:{SECRET}@a?heartbeat=5", "query string"),
        (f"amqp://u:{SECRET}@/v", "no host"),
    ],
)
def test_bad_url_lists_are_configuration_errors_without_the_password(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match=says) as direct:
        RabbitMQConfig(url=_secret(url))
    assert SECRET not in str(direct.value)
    monkeypatch.setenv("RABBITMQ__URL", url)
    with pytest.raises(ConfigurationError, match=says) as from_env:
        load_config()
    assert SECRET not in str(from_env.value)


def test_plain_url_with_tls_true_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="amqps://"):
        RabbitMQConfig(url=_secret("amqp://h"), tls=True)


@pytest.mark.parametrize(("url", "name"), [("memory://", ""), ("memory://Tests", "Tests")])
def test_memory_url_names_the_in_process_broker(url: str, name: str) -> None:
    config = RabbitMQConfig(url=_secret(url))
    assert config.memory_broker == name
    assert config.safe_url() == url
    with pytest.raises(ConfigurationError, match="memory://"):
        config.nodes()


def test_password_in_url_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ__URL", f"amqp://u:{SECRET}@a,amqp://u:{SECRET}@b")
    config = load_config().rabbitmq
    shown = [repr(config), str(config), config.safe_url(), repr(load_config())]
    shown += [repr(node) for node in config.nodes()] + [n.safe_url() for n in config.nodes()]
    assert all(SECRET not in text for text in shown), shown
    assert config.safe_url() == "amqp://u:******@a:5672/%2F,amqp://u:******@b:5672/%2F"


def test_copy_with_update_sees_the_new_settings() -> None:
    config = RabbitMQConfig(host="a")
    assert config.model_copy(update={"host": "b"}).nodes()[0].host == "b"


def test_tls_files_must_exist_and_come_in_pairs(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigurationError, match=r"tls_ca_file=.*no such file"):
        RabbitMQConfig(tls=True, tls_ca_file=missing)
    present = tmp_path / "cert.pem"
    present.write_text("x")
    with pytest.raises(ConfigurationError, match="go together"):
        RabbitMQConfig(tls=True, tls_cert_file=present)
    with pytest.raises(ConfigurationError, match="TLS_KEY_PASSWORD"):
        RabbitMQConfig(tls=True, tls_key_password=SecretStr("k"))


def test_a_missing_tls_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITMQ__TLS_CA_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigurationError, match=r"RABBITMQ__TLS_CA_FILE=.*no such file"):
        load_config()


def test_tls_variables_are_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("RABBITMQ__TLS", "true")
    monkeypatch.setenv("RABBITMQ__TLS_CA_FILE", str(ca))
    monkeypatch.setenv("RABBITMQ__TLS_SERVER_NAME", "rabbit.internal")
    monkeypatch.setenv("RABBITMQ__QUEUE_TYPE", "quorum")
    config = load_config().rabbitmq
    assert (config.uses_tls, config.tls_ca_file, config.tls_server_name, config.queue_type) == (
        True,
        ca,
        "rabbit.internal",
        "quorum",
    )


def test_unknown_queue_type_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ__QUEUE_TYPE", "stream")
    with pytest.raises(ConfigurationError, match="RABBITMQ__QUEUE_TYPE='stream'"):
        load_config()


def test_a_queue_type_mismatch_explains_itself_and_points_to_the_recipe() -> None:
    from messaging.errors import MIGRATION_RECIPE, TopologyMismatchError

    error = TopologyMismatchError(
        "queue",
        "orders",
        {"x-queue-type": ("the value 'quorum' of type 'longstr'", "none")},
        "PRECONDITION_FAILED",
    )
    text = str(error)
    assert "exists as a classic queue and cannot be declared as a quorum queue" in text
    assert "queue_type='classic'" in text
    assert MIGRATION_RECIPE in text


def test_auth_mechanism_is_plain_unless_set_and_any_case(tmp_path: Path) -> None:
    assert RabbitMQConfig().auth_mechanism == "plain"
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("x")
    key.write_text("x")
    as_typed: dict[str, Any] = {"auth_mechanism": " EXTERNAL "}  # as an environment gives it
    config = RabbitMQConfig(tls=True, tls_cert_file=cert, tls_key_file=key, **as_typed)
    assert config.auth_mechanism == "external"
    with pytest.raises(ConfigurationError, match=r"auth_mechanism='kerberos'"):
        RabbitMQConfig(**{**as_typed, "auth_mechanism": "kerberos"})


def test_external_needs_tls_and_a_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(
        ConfigurationError, match=r"needs TLS .*RABBITMQ__TLS=true\).*RABBITMQ__TLS_CERT_FILE"
    ):
        RabbitMQConfig(auth_mechanism="external")
    with pytest.raises(ConfigurationError, match=r"needs TLS") as info:
        RabbitMQConfig(auth_mechanism="external", tls_cert_file=cert, tls_key_file=key)
    assert "RABBITMQ__TLS_CERT_FILE" not in str(info.value)
    with pytest.raises(
        ConfigurationError, match=r"needs a client certificate \(RABBITMQ__TLS_CERT"
    ):
        RabbitMQConfig(url=_secret("amqps://rabbit"), auth_mechanism="external")
    monkeypatch.setenv("RABBITMQ__AUTH_MECHANISM", "External")
    monkeypatch.setenv("RABBITMQ__TLS", "true")
    with pytest.raises(ConfigurationError, match="RABBITMQ__AUTH_MECHANISM=external"):
        load_config()
    monkeypatch.setenv("RABBITMQ__TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("RABBITMQ__TLS_KEY_FILE", str(key))
    assert load_config().rabbitmq.auth_mechanism == "external"
