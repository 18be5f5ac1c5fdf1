"""The options of a publish and of a subscriber, each written down once.

Every public ``publish`` (sync, async, ``publish_nowait``, an agent's) takes
its keywords as ``**options: Unpack[PublishOptions]``, so they cannot drift
apart; :func:`publish_options` checks a call's keywords at run time as well.
The subscriber and agent constructors keep the spec's keyword arguments and
gather them into one :class:`SubscriberOptions`, validated in one place, that
the core takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from messaging._shutdown import DEFAULT_SHUTDOWN_TIMEOUT, validate_shutdown_timeout
from messaging.aio.middleware import Middleware, validated
from messaging.errors import ConfigurationError
from messaging.routing import validate_binding_pattern
from messaging.topology import Overflow, QueueType, validate_name

DEFAULT_EXCHANGE = "chimera.events"
DEFAULT_MAX_REDELIVERIES = 10
MAX_PREFETCH = 65535
"""AMQP carries the prefetch count in 16 bits."""


class MessageOptions(TypedDict, total=False):
    """The publish keywords besides ``correlation_id`` and ``reply_to``."""

    headers: Mapping[str, Any] | None
    """Application headers (AMQP field table)."""
    message_id: str | None
    """Default: the message's metadata, else a new UUID."""
    persistent: bool
    """Written to disk by the broker (default True)."""
    timeout: float | None
    """Seconds to wait for the confirm (default: the publisher's ``publish_timeout``)."""
    exchange: str | None
    """Another exchange for this message; ``""`` is the default exchange (by queue name)."""
    mandatory: bool | None
    """False: the broker drops a message no queue is bound for instead of returning it
    (default: the publisher's ``mandatory``)."""


class PublishOptions(MessageOptions, total=False):
    """Keywords of one publish; each defaults to the publisher's setting or to none."""

    correlation_id: str | None
    """Ties a reply or a workflow together (default: the message's metadata)."""
    reply_to: str | None
    """Where the receiver should send its answer."""


PUBLISH_OPTIONS = frozenset(PublishOptions.__annotations__)


def publish_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """``options`` when every key is a publish option; a ``TypeError`` naming the others."""
    if not options.keys() <= PUBLISH_OPTIONS:
        unknown = ", ".join(sorted(set(options) - PUBLISH_OPTIONS))
        raise TypeError(
            f"publish() got unknown keyword argument(s) {unknown}; "
            f"the options are {', '.join(sorted(PUBLISH_OPTIONS))}"
        )
    return options


class SubscriberKeywords(TypedDict, total=False):
    """The keyword-only options of subscribers and agents, beyond the spec's arguments."""

    retry_delays: Sequence[float]
    """Seconds before each retry of a failed message (a broker-side delay queue each);
    after the last, it is dead-lettered. Default: none, dead-letter at once."""
    permanent_errors: tuple[type[BaseException], ...]
    """Exception types that dead-letter at once, without retries."""
    max_redeliveries: int | None
    """Redeliveries without an ack (its consumers keep dying) before a message is
    dead-lettered as poison; None turns the count off. Default 10."""
    max_length: int | None
    """Bound the work queue to this many messages
    (see :func:`~messaging.topology.queue_limit_arguments`)."""
    max_length_bytes: int | None
    """Bound the work queue to this many body bytes."""
    overflow: Overflow | None
    """What a full queue does: ``"reject-publish"`` (default) or ``"drop-head"``."""
    queue_type: QueueType | None
    """``"classic"`` or ``"quorum"`` (default: ``RABBITMQ__QUEUE_TYPE``)."""
    single_active_consumer: bool
    """Only one consumer of the queue gets messages at a time (the others wait)."""
    declare: bool
    """False: declare nothing, check that the operator-managed topology exists."""
    shutdown_timeout: float
    """Seconds handlers in hand get to finish once shutdown begins (default 30)."""
    middlewares: Sequence[Middleware]
    """Run around every message handled (and, for an agent, sent), after the pool's
    (:mod:`messaging.aio.middleware`)."""
    version: str | None
    """Announced by discovery (:mod:`messaging.discovery`); default: the version of the
    distribution that ships the agent's class, if installed, else ``""``."""


class AgentKeywords(SubscriberKeywords, total=False):
    """An agent's keyword-only options: a subscriber's, and its publisher's ``mandatory``."""

    mandatory: bool
    """False: the agent's publishes to a key no queue is bound for are dropped by the
    broker instead of raising (default True)."""


SUBSCRIBER_KEYWORDS = frozenset(SubscriberKeywords.__annotations__)


@dataclass(frozen=True)
class SubscriberOptions:
    """Everything a subscriber (or agent) was configured with, validated."""

    agent_name: str
    exchange_name: str = DEFAULT_EXCHANGE
    queue_name: str | None = None
    routing_keys: tuple[str, ...] = ("#",)
    prefetch_count: int = 1
    retry_delays: tuple[float, ...] = ()
    permanent_errors: tuple[type[BaseException], ...] = ()
    max_redeliveries: int | None = DEFAULT_MAX_REDELIVERIES
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: Overflow | None = None
    queue_type: QueueType | None = None
    single_active_consumer: bool = False
    declare: bool = True
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    middlewares: tuple[Middleware, ...] = ()
    version: str | None = None

    @classmethod
    def of(
        cls,
        agent_name: str,
        exchange_name: str,
        queue_name: str | None,
        routing_keys: Sequence[str],
        prefetch_count: int,
        keywords: SubscriberKeywords,
        *,
        send_only_allowed: bool = False,
    ) -> SubscriberOptions:
        """Validate a constructor's arguments; raises :class:`ConfigurationError`
        saying what is wrong before anything is declared."""
        unknown = set(keywords) - SUBSCRIBER_KEYWORDS
        if unknown:
            raise TypeError(
                f"unknown subscriber option(s) {', '.join(sorted(unknown))}; the options are "
                f"{', '.join(sorted(SUBSCRIBER_KEYWORDS))}"
            )
        if isinstance(routing_keys, str):
            raise ConfigurationError(
                f"routing_keys must be a list of patterns, got the string {routing_keys!r}; "
                f"write [{routing_keys!r}]"
            )
        if not routing_keys and not send_only_allowed:
            raise ConfigurationError("routing_keys is empty: give at least one pattern to bind")
        for pattern in routing_keys:
            validate_binding_pattern(pattern)
        if (
            not isinstance(prefetch_count, int)
            or isinstance(prefetch_count, bool)
            or not 1 <= prefetch_count <= MAX_PREFETCH
        ):
            raise ConfigurationError(
                f"prefetch_count must be an int from 1 to {MAX_PREFETCH} (AMQP carries it in "
                f"16 bits), got {prefetch_count!r}"
            )
        validate_name("agent", agent_name)
        return cls(
            agent_name=agent_name,
            exchange_name=exchange_name,
            queue_name=queue_name,
            routing_keys=tuple(routing_keys),
            prefetch_count=prefetch_count,
            retry_delays=tuple(keywords.get("retry_delays", ())),
            permanent_errors=tuple(keywords.get("permanent_errors", ())),
            max_redeliveries=keywords.get("max_redeliveries", DEFAULT_MAX_REDELIVERIES),
            max_length=keywords.get("max_length"),
            max_length_bytes=keywords.get("max_length_bytes"),
            overflow=keywords.get("overflow"),
            queue_type=keywords.get("queue_type"),
            single_active_consumer=keywords.get("single_active_consumer", False),
            declare=keywords.get("declare", True),
            shutdown_timeout=validate_shutdown_timeout(
                keywords.get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT)
            ),
            middlewares=tuple(validated(keywords.get("middlewares", ()))),
            version=_version(keywords.get("version")),
        )

    @property
    def queue(self) -> str:
        """The queue consumed: ``queue_name``, else the agent's name."""
        return self.queue_name or self.agent_name


def _version(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"version must be a string (or None), got {value!r}")
    return value
