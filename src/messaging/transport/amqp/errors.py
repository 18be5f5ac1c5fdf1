"""The one place where the AMQP client's exceptions become ours."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiormq.exceptions as amqp_errors
from pamqp import commands as spec

from messaging.config import BrokerNode, RabbitMQConfig
from messaging.errors import (
    AuthenticationFailedError,
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

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<entity>queue|exchange) '(?P<name>[^']+)'"
    r".*?received (?P<want>.+?) but current is (?P<have>.+?)\"?$"
)


class ConnectionLostError(ConnectionError):
    """Internal: the connection under a channel turned out to be dead; retry after reconnect."""


# The exceptions that mean "the connection or channel went away", as opposed
# to "the broker refused this operation".
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    amqp_errors.ChannelClosed,
)


def translate_connect_error(
    exc: BaseException, config: RabbitMQConfig, node: BrokerNode
) -> MessagingError:
    """An error from opening a connection to ``node``, as the error a user can act on."""
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
    if isinstance(exc, amqp_errors.ProbableAuthenticationError | amqp_errors.AuthenticationError):
        return AuthenticationFailedError(
            f"the broker at {where} refused the login of user {node.username!r}: "
            f"check {credentials} (retrying cannot fix this)"
        )
    vhost_refused = isinstance(exc, amqp_errors.ConnectionNotAllowed) or (
        isinstance(exc, amqp_errors.InvalidFrameError) and "Connection.OpenOk" in str(exc)
    )
    if vhost_refused:
        return VirtualHostError(
            f"the broker at {node.address} refused virtual host {node.vhost!r} "
            f"for user {node.username!r}: it does not exist or the user has no permission "
            f"on it. Check RABBITMQ__VHOST, or create it (`rabbitmqctl add_vhost` and "
            f"`rabbitmqctl set_permissions`). Retrying cannot fix this."
        )
    return ConnectionFailedError(f"cannot reach the broker at {where}: {_describe(exc)}")


def translate_topology_error(exc: BaseException) -> MessagingError:
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed):
        text = str(exc.args[0]) if exc.args else str(exc)
        match = _INEQUIVALENT.search(text)
        if match:
            return TopologyMismatchError(
                match["entity"],
                match["name"],
                {match["arg"]: (_unquote(match["want"]), _unquote(match["have"]))},
                text,
            )
        return TopologyMismatchError("entity", "?", {}, text)
    if isinstance(exc, amqp_errors.ChannelClosed):
        return TopologyError(f"the broker refused the declaration: {_describe(exc)}")
    if isinstance(exc, CONNECTION_LOST):
        return ConnectionFailedError(f"connection lost while declaring: {_describe(exc)}")
    return TopologyError(_describe(exc))


def translate_publish_error(exc: BaseException, exchange: str, routing_key: str) -> MessagingError:
    if isinstance(exc, amqp_errors.PublishError):
        return UnroutableMessageError(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}; "
            f"the broker returned the message. Start the subscriber first (it declares and "
            f"binds its queue), or check the routing key."
        )
    if isinstance(exc, amqp_errors.DeliveryError):
        frame = exc.frame if hasattr(exc, "frame") else None
        if isinstance(frame, spec.Basic.Nack) or frame is None:
            return PublishNackedError(
                f"the broker nacked the message to {exchange!r}/{routing_key!r}: it was not "
                f"stored; publish it again"
            )
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return PublishError(
            f"exchange {exchange!r} does not exist: {_describe(exc)}. Create it by starting a "
            f"subscriber or publisher on it first."
        )
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
