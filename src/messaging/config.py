"""Configuration from ``RABBITMQ__*``, ``STORE__*`` and ``MONITORING__*`` environment variables.

``load_config().rabbitmq`` is what :class:`messaging.ConnectionPool` takes;
``load_config().monitoring`` turns on the health/metrics endpoint and picks
the log format (:mod:`messaging.ops.health`, :mod:`messaging.ops.logs`);
``load_config().store`` says where agents keep state shared between replicas.

The broker is named either by ``RABBITMQ__URL`` (one ``amqp://``/``amqps://``
URL, or several separated by commas, one per cluster node, tried in order) or
by ``RABBITMQ__HOST``/``PORT``/``USERNAME``/``PASSWORD``/``VHOST``; the URL
wins when both are set. :meth:`RabbitMQConfig.nodes` gives the parsed list.
Passwords (``RABBITMQ__PASSWORD``, the password inside a URL,
``RABBITMQ__TLS_KEY_PASSWORD``) are :class:`pydantic.SecretStr`: they show as
``**********`` in reprs and logs, and only the transport reads their value.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, quote, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from messaging.errors import ConfigurationError
from messaging.topology import QueueType

ENV_PREFIX = "RABBITMQ__"

AMQP_PORT = 5672
AMQPS_PORT = 5671
MEMORY_SCHEME = "memory"

AuthMechanism = Literal["plain", "external"]
"""How the bus logs in: ``plain`` (user name and password) or ``external`` (the
client certificate, RabbitMQ's ``rabbitmq_auth_mechanism_ssl`` plugin)."""


@dataclass(frozen=True)
class BrokerNode:
    """One broker node to connect to: where, how (TLS or not) and as whom."""

    host: str
    port: int
    tls: bool
    username: str
    password: SecretStr
    vhost: str

    @property
    def address(self) -> str:
        """``host:port``, what health reports and logs show (never the credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self) -> str:
        """The AMQP URL with the real password. Never log it; use :meth:`safe_url`."""
        return self._url(quote(self.password.get_secret_value(), safe=""))

    def safe_url(self) -> str:
        return self._url("******")

    def _url(self, quoted_password: str) -> str:
        scheme = "amqps" if self.tls else "amqp"
        user = quote(self.username, safe="")
        vhost = quote(self.vhost, safe="")
        return f"{scheme}://{user}:{quoted_password}@{self.address}/{vhost}"


class _Checked(BaseModel):
    """A config model whose bad arguments raise :class:`ConfigurationError`, naming them."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = ConfigurationError(
                f"invalid {type(self).__name__} argument: " + _describe(exc.errors(), env=False)
            )
            # Kept so that load_config, which builds these models from the
            # environment, can name the variables instead of the arguments.
            error.__dict__[_FIELD_ERRORS] = exc.errors()
            raise error from None


_FIELD_ERRORS = "_chimera_field_errors"


class RabbitMQConfig(_Checked):
    """Where the broker is and how to talk to it. Immutable.

    A malformed ``url`` (mixed schemes or vhosts, ``memory://`` among AMQP
    URLs, a query string) or a TLS file that does not exist is refused here,
    before anything connects.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: SecretStr | None = Field(
        default=None,
        description=(
            "RABBITMQ__URL: one amqp:// or amqps:// URL, or several separated by commas "
            "(one per cluster node, tried in order). Takes precedence over host, port, "
            "username, password and vhost. memory:// selects the in-process broker."
        ),
    )
    host: str = "localhost"
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default 5672, or 5671 with TLS."
    )
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    vhost: str = "/"
    tls: bool = Field(
        default=False,
        description="Use TLS with host/port (an amqps:// URL turns it on by itself).",
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker's certificate; "
        "unset: the system's trust store.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM), for brokers that ask for one."
    )
    tls_key_file: Path | None = Field(default=None, description="Key of tls_cert_file (PEM).")
    tls_key_password: SecretStr | None = Field(
        default=None, description="Password of tls_key_file, if it is encrypted."
    )
    tls_server_name: str | None = Field(
        default=None,
        description="Host name to verify in the broker's certificate; unset: each "
        "node's own host name.",
    )
    auth_mechanism: AuthMechanism = Field(
        default="plain",
        description="RABBITMQ__AUTH_MECHANISM: plain (user name and password) or external "
        "(the client certificate of RABBITMQ__TLS_CERT_FILE; the broker takes the user name "
        "from it and no password is sent).",
    )
    queue_type: QueueType = Field(
        default="classic",
        description="RABBITMQ__QUEUE_TYPE: what subscribers declare unless told otherwise "
        "(classic, or quorum: replicated across a cluster).",
    )
    heartbeat: int = Field(
        default=60,
        ge=0,
        description="Seconds between heartbeats; a dead peer is noticed after about two.",
    )
    connection_name: str = Field(
        default="chimera",
        description="Shown in the management UI and `rabbitmqctl list_connections`.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds for one TCP+AMQP handshake."
    )
    max_message_bytes: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description=(
            "Largest body publish accepts; match the broker's max_message_size (128 MiB "
            "by default) so an oversized message is refused before it is sent."
        ),
    )
    publish_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Longest a publish waits, reconnects included, before raising PublishTimeoutError."
        ),
    )

    @field_validator("host")
    @classmethod
    def _a_host_name(cls, value: str) -> str:
        host = value.strip()
        if not host:
            raise ValueError("is empty: give the broker's host name or address, e.g. localhost")
        if "://" in host or "@" in host or "/" in host:
            # Never echo it: a URL here usually carries a password.
            raise ValueError(
                "must be a host name or address alone, and this looks like a URL; give the "
                "port, user name and password in their own settings"
            )
        return host

    @field_validator("url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("auth_mechanism", mode="before")
    @classmethod
    def _mechanism_in_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {str(value)!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> RabbitMQConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "RABBITMQ__TLS_CERT_FILE and RABBITMQ__TLS_KEY_FILE go together: a client "
                "certificate needs its key; set both or neither"
            )
        if self.tls_key_password is not None and self.tls_key_file is None:
            raise ValueError("RABBITMQ__TLS_KEY_PASSWORD is set but RABBITMQ__TLS_KEY_FILE is not")
        memory, _ = self._resolve()  # a malformed RABBITMQ__URL is refused now
        if self.auth_mechanism == "external" and memory is None:
            self._check_certificate_login()
        return self

    def _check_certificate_login(self) -> None:
        """EXTERNAL logs in with the client certificate: there must be TLS and a certificate."""
        missing = []
        if not self.uses_tls:
            missing.append("TLS (an amqps:// RABBITMQ__URL, or RABBITMQ__TLS=true)")
        if self.tls_cert_file is None:
            missing.append(
                "a client certificate (RABBITMQ__TLS_CERT_FILE and RABBITMQ__TLS_KEY_FILE)"
            )
        if missing:
            raise ValueError(
                "RABBITMQ__AUTH_MECHANISM=external logs in with the client certificate, so it "
                "needs " + " and ".join(missing) + "; set them, or use "
                "RABBITMQ__AUTH_MECHANISM=plain"
            )

    def _resolve(self) -> tuple[str | None, tuple[BrokerNode, ...]]:
        """(the memory broker's name or None, the AMQP nodes), from the settings as they are.

        Computed on each call rather than cached, so a ``model_copy(update=...)``
        (which skips validation) cannot leave a stale node list behind.
        """
        if self.url is None:
            tls = self.tls
            port = self.port if self.port is not None else (AMQPS_PORT if tls else AMQP_PORT)
            return None, (
                BrokerNode(self.host, port, tls, self.username, self.password, self.vhost),
            )
        memory, nodes = _parse_urls(self.url.get_secret_value(), self)
        if nodes and self.tls and not nodes[0].tls:
            raise ValueError(
                "RABBITMQ__TLS=true but RABBITMQ__URL uses amqp:// (plaintext); "
                "write amqps:// URLs to use TLS"
            )
        return memory, nodes

    # -- what the settings resolve to ------------------------------------

    def nodes(self) -> tuple[BrokerNode, ...]:
        """The nodes to try, in order (one unless ``RABBITMQ__URL`` lists several)."""
        try:
            memory, nodes = self._resolve()
        except ValueError as exc:  # only after a model_copy that skipped validation
            raise ConfigurationError(str(exc)) from None
        if memory is not None:
            raise ConfigurationError(
                "RABBITMQ__URL names the in-process broker (memory://); it has no AMQP nodes"
            )
        return nodes

    @property
    def memory_broker(self) -> str | None:
        """The in-process broker's name when ``RABBITMQ__URL`` is ``memory://[NAME]``
        ("" for the process-wide default one), else None."""
        return self._resolve()[0]

    @property
    def uses_tls(self) -> bool:
        return any(node.tls for node in self._resolve()[1])

    def safe_url(self) -> str:
        """The broker URL(s) with every password masked: safe for logs and CLI output."""
        memory, nodes = self._resolve()
        if memory is not None:
            return f"{MEMORY_SCHEME}://{memory}"
        return ",".join(node.safe_url() for node in nodes)


def _parse_urls(text: str, defaults: RabbitMQConfig) -> tuple[str | None, tuple[BrokerNode, ...]]:
    """Parse ``RABBITMQ__URL``: (memory broker name or None, AMQP nodes).

    Error messages show each URL with its password masked: the input is secret.
    """
    parts = [part.strip() for part in text.split(",")]
    if any(not part for part in parts):
        raise ValueError("RABBITMQ__URL has an empty entry; separate URLs with single commas")
    parsed = [_split(part, index) for index, part in enumerate(parts, start=1)]
    schemes = {scheme for scheme, _ in parsed}
    if MEMORY_SCHEME in schemes:
        if len(parts) > 1:
            raise ValueError(
                "RABBITMQ__URL mixes memory:// with other URLs; memory:// (the in-process "
                "broker) stands alone"
            )
        split = parsed[0][1]
        if split.username or split.password or split.port or split.query:
            raise ValueError("RABBITMQ__URL: memory:// takes only a name: memory://NAME")
        name = split.netloc + split.path.rstrip("/")
        return name, ()
    if len(schemes) > 1:
        raise ValueError(
            "RABBITMQ__URL mixes amqp:// and amqps://; every node of one cluster is reached "
            "the same way: use amqps:// for all of them (or amqp:// for all)"
        )
    nodes = tuple(
        _node(split, scheme, defaults, index)
        for index, (scheme, split) in enumerate(parsed, start=1)
    )
    vhosts = {node.vhost for node in nodes}
    if len(vhosts) > 1:
        shown = ", ".join(sorted(repr(v) for v in vhosts))
        raise ValueError(
            f"RABBITMQ__URL names different vhosts ({shown}); the URLs are nodes of one "
            f"cluster and must name the same vhost"
        )
    return None, nodes


def _split(part: str, index: int) -> tuple[str, SplitResult]:
    split = urlsplit(part)
    scheme = split.scheme.lower()
    if scheme not in ("amqp", "amqps", MEMORY_SCHEME):
        raise ValueError(
            f"RABBITMQ__URL entry {index} ({_masked(split)}) is not an amqp://, amqps:// or "
            f"memory:// URL"
        )
    return scheme, split


def _node(split: SplitResult, scheme: str, defaults: RabbitMQConfig, index: int) -> BrokerNode:
    tls = scheme == "amqps"
    if split.query or split.fragment:
        raise ValueError(
            f"RABBITMQ__URL entry {index} ({_masked(split)}) has a query string; set options "
            f"with their own RABBITMQ__* variables (RABBITMQ__HEARTBEAT, RABBITMQ__TLS_CA_FILE...)"
        )
    try:
        host, port = split.hostname, split.port
    except ValueError:
        raise ValueError(
            f"RABBITMQ__URL entry {index} ({_masked(split)}) has a port that is not a number "
            f"from 1 to 65535"
        ) from None
    if not host:
        raise ValueError(f"RABBITMQ__URL entry {index} ({_masked(split)}) has no host")
    path = split.path
    vhost = "/" if path in ("", "/") else unquote(path[1:])
    username = unquote(split.username) if split.username is not None else defaults.username
    password = (
        SecretStr(unquote(split.password)) if split.password is not None else defaults.password
    )
    return BrokerNode(
        host=host,
        port=port or (AMQPS_PORT if tls else AMQP_PORT),
        tls=tls,
        username=username,
        password=password,
        vhost=vhost,
    )


def _masked(split: SplitResult) -> str:
    """A URL as the user wrote it, minus its password."""
    netloc = split.netloc
    if split.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:******@{hostport}"
    return f"{split.scheme}://{netloc}{split.path}"


class StoreConfig(_Checked):
    """Where agents keep state that replicas share (``STORE__*``). Immutable.

    Unset, each process keeps workflow context and seen message ids in its own
    memory: right for one replica, wrong for several.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    redis_url: SecretStr | None = Field(
        default=None,
        description="STORE__REDIS_URL, e.g. redis://127.0.0.1:6379/0: workflow context and "
        "@idempotent's memory live in Redis, shared by every replica.",
    )
    key_prefix: str = Field(
        default="chimera",
        min_length=1,
        description="STORE__KEY_PREFIX: prefix of every key the bus writes in Redis.",
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class MonitoringConfig(_Checked):
    """The optional HTTP endpoint and the log format. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics, /healthz, /readyz on this port; unset: no endpoint.",
    )
    http_host: str = Field(
        default="127.0.0.1", description="Address the endpoint listens on (0.0.0.0: all)."
    )
    http_max_connections: int = Field(
        default=32, ge=1, description="Clients the endpoint serves at once; more get a 503."
    )
    http_request_timeout: float = Field(
        default=5.0, gt=0, description="Seconds a client has to send its request and read."
    )
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("http_port", mode="before")
    @classmethod
    def _empty_port_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if not isinstance(logging.getLevelName(level), int):
            raise ValueError(f"unknown log level {value!r}; use DEBUG, INFO, WARNING or ERROR")
        return level


class DiscoveryConfig(_Checked):
    """Agents announcing themselves on the broker (``DISCOVERY__*``). Immutable.

    :mod:`messaging.discovery` says what is announced, where, and why it is off
    by default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=False,
        description="DISCOVERY__ENABLED: every subscriber and agent announces itself.",
    )
    interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="DISCOVERY__INTERVAL: seconds between heartbeats; a listener forgets an "
        "instance after 3 intervals without one.",
    )
    exchange: str = Field(
        default="chimera.discovery",
        min_length=1,
        description="DISCOVERY__EXCHANGE: the topic exchange announcements travel on "
        "(durable, shared by every agent of the vhost).",
    )


class Settings(BaseSettings):
    """Everything the bus reads from the environment."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", env_file=None, extra="ignore", frozen=True
    )

    rabbitmq: RabbitMQConfig = RabbitMQConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    store: StoreConfig = StoreConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()


def load_config() -> Settings:
    """Read the configuration from the environment (``RABBITMQ__URL``, ``MONITORING__…``).

    Raises :class:`ConfigurationError` naming the variable when a value is malformed.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(
            "invalid configuration in the environment: " + _describe(exc.errors(), env=True)
        ) from None
    except SettingsError as exc:
        # A whole section given as JSON (``RABBITMQ='{...}'``) that does not parse.
        match = re.search(r'field "(\w+)"', str(exc))
        name = match[1].upper() if match else "RABBITMQ or MONITORING"
        raise ConfigurationError(
            f"invalid configuration in the environment: {name} is not valid JSON "
            f"(it sets the whole section at once; set {name}__HOST, {name}__PORT, ... instead, "
            f"or give a JSON object)"
        ) from None


def _describe(errors: list[Any], *, env: bool, where: tuple[str, ...] = ()) -> str:
    """Each problem as ``NAME=value: why``, with no secret in it.

    ``env``: name the environment variable (``RABBITMQ__HOST``), else the
    argument (``host``).
    """
    problems = []
    for err in errors:
        parts = (*where, *(str(part) for part in err["loc"]))
        inner = getattr(err.get("ctx", {}).get("error"), _FIELD_ERRORS, None)
        if inner is not None:  # a section built from its variables
            problems.append(_describe(inner, env=env, where=parts))
            continue
        if not err["loc"]:  # a check across the model's settings: its message says it all
            problems.append(_reason(err["msg"]))
            continue
        name = "__".join(parts).upper() if env else ".".join(parts)
        problems.append(f"{name}{_shown(name, err.get('input'))}: {_reason(err['msg'])}")
    return "; ".join(problems)


def _shown(name: str, value: object) -> str:
    """``=<value>`` for the message, unless it may hold a secret."""
    if "PASSWORD" in name.upper() or isinstance(value, dict | SecretStr):
        return ""
    text = str(value)
    if "@" in text or "://" in text or len(text) > 100:
        return ""  # a URL with credentials, or something long: name it, do not echo it
    return f"={value!r}"


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")
