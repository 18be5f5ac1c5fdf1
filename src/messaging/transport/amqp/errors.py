"""The one place where the AMQP client's exceptions become ours.

The broker says why it refused something with an AMQP reply code; the client
raises a class per code. :data:`REPLY_CODES` maps each code to the error a
user gets, once, and :func:`translate` is the only function that turns a
client exception into one of ours (connecting, declaring, publishing or
inspecting: the wording says what was being done and what to do about it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import aiormq.exceptions as amqp_errors
from pamqp import commands as spec

from messaging.config import BrokerNode, RabbitMQConfig
from messaging.errors import (
    AuthenticationFailedError,
    BrokerRefusedError,
    CertificateVerificationError,
    ConnectionFailedError,
    MessagingError,
    PublishError,
    PublishNackedError,
    TopologyError,
    TopologyMismatchError,
    UnroutableMessageError,
    VirtualHostError,
)
from messaging.transport.amqp.tls import verification_failure
from messaging.transport.base import ConnectionLost

Doing = Literal["connect", "declare", "publish", "inspect"]


@dataclass(frozen=True)
class Reply:
    name: str
    """The AMQP constant, as RabbitMQ's logs and docs spell it."""
    error: type[MessagingError]
    """What a user gets when the broker answers with this code."""


REPLY_CODES: Mapping[int, Reply] = MappingProxyType(
    {
        312: Reply("NO_ROUTE", UnroutableMessageError),
        403: Reply("ACCESS_REFUSED", BrokerRefusedError),
        404: Reply("NOT_FOUND", TopologyError),
        405: Reply("RESOURCE_LOCKED", TopologyError),
        406: Reply("PRECONDITION_FAILED", TopologyMismatchError),
        530: Reply("NOT_ALLOWED", VirtualHostError),
    }
)
"""Reply codes (AMQP 0-9-1 and RabbitMQ) mapped to the bus's errors."""

_CODE_OF: Mapping[type[BaseException], int] = MappingProxyType(
    {
        amqp_errors.PublishError: 312,
        amqp_errors.ChannelAccessRefused: 403,
        amqp_errors.ProbableAuthenticationError: 403,
        amqp_errors.AuthenticationError: 403,
        amqp_errors.ChannelNotFoundEntity: 404,
        amqp_errors.ChannelLockedResource: 405,
        amqp_errors.ChannelPreconditionFailed: 406,
        amqp_errors.ConnectionNotAllowed: 530,
    }
)
"""The client's exception classes, back to the reply code they stand for."""

CONNECTION_LOST: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    amqp_errors.ChannelClosed,
)
"""The client's ways of saying "the connection or channel went away" (not "refused")."""

REFUSED: tuple[type[BaseException], ...] = (
    amqp_errors.DeliveryError,
    amqp_errors.ChannelAccessRefused,
    amqp_errors.ChannelNotFoundEntity,
    amqp_errors.ChannelPreconditionFailed,
    amqp_errors.ChannelLockedResource,
)
"""The broker refused a publish (returned, nacked, or closed the channel for it)."""

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<entity>queue|exchange) '(?P<name>[^']+)'"
    r".*?received (?P<want>.+?) but current is (?P<have>.+?)\"?$"
)


def reply_code(exc: BaseException) -> int | None:
    """The AMQP reply code behind a client exception, when it stands for one."""
    for cls in type(exc).__mro__:
        code = _CODE_OF.get(cls)
        if code is not None:
            return code
    if isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.OpenOk" in str(exc):
        return 530  # RabbitMQ closes the socket instead of answering a refused vhost
    return None


def translate(
    exc: BaseException,
    doing: Doing,
    *,
    config: RabbitMQConfig | None = None,
    node: BrokerNode | None = None,
    exchange: str = "",
    routing_key: str = "",
) -> BaseException:
    """A client exception as the error the caller should see.

    A refusal becomes the :class:`~messaging.errors.MessagingError` of its
    reply code, worded for what was being done. A lost connection becomes
    :class:`~messaging.transport.base.ConnectionLost` while publishing (the
    publisher sends again after the reconnect) and
    :class:`~messaging.errors.ConnectionFailedError` otherwise.
    """
    if isinstance(exc, MessagingError | ConnectionLost):
        return exc
    code = reply_code(exc)
    if doing == "connect":
        return _connect_error(exc, code, config, node)
    if doing == "publish":
        return _publish_error(exc, code, exchange, routing_key)
    if code is not None:
        return _refusal(exc, code)
    if isinstance(exc, amqp_errors.ChannelClosed):
        return TopologyError(f"the broker refused the declaration: {_describe(exc)}")
    if isinstance(exc, CONNECTION_LOST):
        what = "declaring" if doing == "declare" else "asking the broker"
        return ConnectionFailedError(f"lost the connection while {what}: {_describe(exc)}")
    return TopologyError(_describe(exc))


def _refusal(exc: BaseException, code: int) -> MessagingError:
    """A declaration or inspection the broker refused with ``code``."""
    reply = REPLY_CODES.get(code)
    text = str(exc.args[0]) if exc.args else str(exc)
    if code == 406:
        match = _INEQUIVALENT.search(text)
        if match:
            return TopologyMismatchError(
                match["entity"],
                match["name"],
                {match["arg"]: (_unquote(match["want"]), _unquote(match["have"]))},
                text,
            )
        return TopologyMismatchError("entity", "?", {}, text)
    name = reply.name if reply is not None else str(code)
    return TopologyError(f"the broker refused the declaration ({name}): {_describe(exc)}")


def _connect_error(
    exc: BaseException, code: int | None, config: RabbitMQConfig | None, node: BrokerNode | None
) -> MessagingError:
    """An error from opening a connection to ``node``, as the error a user can act on."""
    if config is None or node is None:
        return ConnectionFailedError(f"cannot reach the broker: {_describe(exc)}")
    where = f"{node.address} vhost {node.vhost!r}"
    credentials = (
        "the credentials in RABBITMQ__URL"
        if config.url is not None
        else "RABBITMQ__USERNAME and RABBITMQ__PASSWORD"
    )
    failure = verification_failure(exc) if node.tls else None
    if failure is not None:
        ca = (
            f"the CA file {str(config.tls_ca_file)!r} (RABBITMQ__TLS_CA_FILE)"
            if config.tls_ca_file is not None
            else "the system's trust store (RABBITMQ__TLS_CA_FILE is not set)"
        )
        name = config.tls_server_name or node.host
        reason = getattr(failure, "verify_message", None) or str(failure)
        return CertificateVerificationError(
            f"the TLS certificate of the broker at {node.address} could not be verified "
            f"against {ca} for host name {name!r}: {reason}. Give the CA that signed the "
            f"broker's certificate in RABBITMQ__TLS_CA_FILE, or the name the certificate "
            f"carries in RABBITMQ__TLS_SERVER_NAME (retrying cannot fix this)"
        )
    if isinstance(exc, amqp_errors.AuthenticationError) and exc.args:
        return AuthenticationFailedError(
            f"the broker at {where} does not offer the SASL mechanism "
            f"{config.auth_mechanism.upper()} (RABBITMQ__AUTH_MECHANISM={config.auth_mechanism}); "
            f"it offers only {exc.args[0]!r}. Set RABBITMQ__AUTH_MECHANISM to one it offers, or "
            f"enable the mechanism on the broker (auth_mechanisms in rabbitmq.conf; EXTERNAL "
            f"needs the rabbitmq_auth_mechanism_ssl plugin). Retrying cannot fix this."
        )
    if code == 403 and config.auth_mechanism == "external":
        return AuthenticationFailedError(
            f"the broker at {where} refused the certificate login (SASL mechanism EXTERNAL, "
            f"RABBITMQ__AUTH_MECHANISM=external) with the client certificate "
            f"{str(config.tls_cert_file)!r} (RABBITMQ__TLS_CERT_FILE): {_describe(exc)}. The "
            f"broker needs the rabbitmq_auth_mechanism_ssl plugin, EXTERNAL in its "
            f"auth_mechanisms, and a user named after the certificate (its CN with "
            f"ssl_cert_login_from = common_name) with permissions on the vhost "
            f"(retrying cannot fix this)"
        )
    if code == 403:
        return AuthenticationFailedError(
            f"the broker at {where} refused the login of user {node.username!r}: "
            f"check {credentials} (retrying cannot fix this)"
        )
    if code == 530:
        return VirtualHostError(
            f"the broker at {node.address} refused virtual host {node.vhost!r} "
            f"for user {node.username!r}: it does not exist or the user has no permission "
            f"on it. Check RABBITMQ__VHOST, or create it (`rabbitmqctl add_vhost` and "
            f"`rabbitmqctl set_permissions`). Retrying cannot fix this."
        )
    return ConnectionFailedError(f"cannot reach the broker at {where}: {_describe(exc)}")


def _publish_error(
    exc: BaseException, code: int | None, exchange: str, routing_key: str
) -> BaseException:
    if code == 312:
        return UnroutableMessageError(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
            f"the broker returned the message. Start the subscriber first (it declares and "
            f"binds its queue), or check the routing key."
        )
    if isinstance(exc, amqp_errors.DeliveryError):
        frame = getattr(exc, "frame", None)
        if isinstance(frame, spec.Basic.Nack) or frame is None:
            return PublishNackedError(
                f"the broker nacked the message to {exchange!r}/{routing_key!r}: it did not "
                f"take responsibility for it; publish it again (a quorum queue changing "
                f"leader can nack a message it still delivers: expect a duplicate then)"
            )
    if code == 404:
        return PublishError(
            f"exchange {exchange!r} does not exist: {_describe(exc)}. Create it by starting a "
            f"subscriber or publisher on it first."
        )
    if code is None and isinstance(exc, CONNECTION_LOST):
        return ConnectionLost(f"lost the connection while publishing: {exc!r}")
    return PublishError(f"publish to {exchange!r}/{routing_key!r} failed: {_describe(exc)}")


def _unquote(value: str) -> Any:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if exc.args:
        return f"{type(exc).__name__}: {exc.args[-1] if len(exc.args) > 1 else exc.args[0]}"
    return type(exc).__name__
