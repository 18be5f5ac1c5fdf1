"""Configuration from ``RABBITMQ__*`` and ``MONITORING__*`` environment variables.

``load_config().rabbitmq`` is what :class:`messaging.ConnectionPool` takes;
``load_config().monitoring`` turns on the health/metrics endpoint and picks
the log format (:mod:`messaging.health`, :mod:`messaging.logs`).
The password is a :class:`pydantic.SecretStr`: it shows as ``**********`` in
reprs and logs, and only the transport reads its value.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from messaging.errors import ConfigurationError

ENV_PREFIX = "RABBITMQ__"


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
    """Where the broker is and how to talk to it. Immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "localhost"
    port: int = Field(default=5672, ge=1, le=65535)
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    vhost: str = "/"
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

    def url(self) -> str:
        """The AMQP URL with the real password. Never log it; use :meth:`safe_url`."""
        return self._url(quote(self.password.get_secret_value(), safe=""))

    def safe_url(self) -> str:
        return self._url("******")

    def _url(self, quoted_password: str) -> str:
        user = quote(self.username, safe="")
        vhost = quote(self.vhost, safe="")
        return f"amqp://{user}:{quoted_password}@{self.host}:{self.port}/{vhost}"


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


class Settings(BaseSettings):
    """Everything the bus reads from the environment."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", env_file=None, extra="ignore", frozen=True
    )

    rabbitmq: RabbitMQConfig = RabbitMQConfig()
    monitoring: MonitoringConfig = MonitoringConfig()


def load_config() -> Settings:
    """Read the configuration from the environment (``RABBITMQ__HOST``, ``MONITORING__…``).

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
