"""Names and arguments of what the bus declares on the broker. Pure: no I/O.

One place decides them so that every declarer (subscriber, CLI, tests) agrees,
and a mismatch with what already exists on the broker can be explained.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from messaging.errors import ConfigurationError

DLQ_TTL_MS = 24 * 60 * 60 * 1000
"""Dead letters are kept 24 hours, then the broker deletes them."""

ExchangeType = Literal["topic", "direct", "fanout", "headers"]
QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = ("classic", "quorum")


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: ExchangeType = "topic"
    durable: bool = True
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BindingSpec:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Everything one component declares, in the order it must be declared."""

    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = ()
    bindings: tuple[BindingSpec, ...] = ()

    def __add__(self, other: Topology) -> Topology:
        return Topology(
            self.exchanges + other.exchanges,
            self.queues + other.queues,
            self.bindings + other.bindings,
        )


def control_exchange(exchange: str) -> str:
    """The topic exchange that reaches the agents of ``exchange`` working on a request
    (cancel, stream credit: :mod:`messaging.aio.control`)."""
    return f"{exchange}.control"


def dlx_name(exchange: str) -> str:
    return f"{exchange}.dlx"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


_NAME_CHARACTERS = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]*")
"""What AMQP 0-9-1 allows in exchange and queue names (the client refuses the rest)."""


def validate_name(kind: str, name: str) -> None:
    """Reject a name the broker would refuse, before anything is declared."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{kind} name must be a non-empty string, got {name!r}")
    if len(name.encode()) > 255:
        raise ConfigurationError(f"{kind} name {name[:40]!r}... is over 255 bytes; shorten it")
    if not _NAME_CHARACTERS.fullmatch(name):
        bad = sorted({c for c in name if not _NAME_CHARACTERS.fullmatch(c)})
        raise ConfigurationError(
            f"{kind} name {name!r} has characters AMQP does not allow in exchange and queue "
            f"names ({' '.join(repr(c) for c in bad)}); use ASCII letters, digits and - _ . : "
            f"@ # , / + or space"
        )
    if name.startswith("amq."):
        raise ConfigurationError(
            f"{kind} name {name!r} starts with 'amq.', which the broker reserves; pick another"
        )


Overflow = Literal["reject-publish", "drop-head"]
OVERFLOW_MODES: tuple[Overflow, ...] = ("reject-publish", "drop-head")
DEFAULT_OVERFLOW: Overflow = "reject-publish"


def queue_limit_arguments(
    max_length: int | None = None,
    max_length_bytes: int | None = None,
    overflow: str | None = None,
    *,
    queue_type: str = "classic",
) -> dict[str, Any]:
    """The work queue's ``x-max-length``/``x-max-length-bytes``/``x-overflow``, checked.

    With a limit, ``overflow`` says what happens when the queue is full:

    - ``"reject-publish"`` (the default here): the broker refuses new messages
      and the publisher gets a nack (``publish()`` raises
      :class:`~messaging.errors.PublishNackedError`). Nothing already queued
      is lost; the publisher must retry or give up.
    - ``"drop-head"`` (the broker's own default): the oldest message makes
      room. On a classic queue it is dead-lettered to ``<queue>.dlq``
      (at-most-once: if that fails it is gone); the publisher is never told.

    Quorum queues dead-letter at-least-once only with ``reject-publish``, so
    anything else is refused there.
    """
    arguments: dict[str, Any] = {}
    for name, value, key in (
        ("max_length", max_length, "x-max-length"),
        ("max_length_bytes", max_length_bytes, "x-max-length-bytes"),
    ):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"{name} must be an int >= 1 (or None), got {value!r}")
        arguments[key] = value
    if not arguments:
        if overflow is not None:
            raise ConfigurationError(
                f"overflow={overflow!r} needs max_length or max_length_bytes: without a limit "
                f"the queue never overflows"
            )
        return arguments
    mode = DEFAULT_OVERFLOW if overflow is None else overflow
    if mode not in OVERFLOW_MODES:
        raise ConfigurationError(
            f"overflow must be one of {', '.join(map(repr, OVERFLOW_MODES))}, got {overflow!r}"
        )
    if queue_type == "quorum" and mode != "reject-publish":
        raise ConfigurationError(
            f"overflow={mode!r} on a quorum queue would drop messages or dead-letter them "
            f"at-most-once; quorum queues here take only overflow='reject-publish'"
        )
    arguments["x-overflow"] = mode
    return arguments


def retry_queue_name(queue: str, attempt: int) -> str:
    return f"{queue}.retry.{attempt}"


def events_exchange(name: str) -> ExchangeSpec:
    return ExchangeSpec(name=name, type="topic")


def subscriber_topology(
    exchange: str,
    queue: str,
    patterns: Iterable[str],
    *,
    retry_delays: Sequence[float] = (),
    queue_arguments: Mapping[str, Any] | None = None,
    queue_type: QueueType = "classic",
    delivery_limit: int | None = None,
    single_active_consumer: bool = False,
) -> Topology:
    """The events exchange, the work queue bound to each pattern, its DLX and DLQ.

    With ``retry_delays``, one delay queue per retry: ``<queue>.retry.<n>``
    holds a failed message for the n-th delay (its TTL), then the broker
    dead-letters it through the default exchange straight back to the work
    queue. Waiting happens in the broker, not in the consumer.

    With ``queue_type="quorum"`` the work queue, its DLQ and the retry queues
    are quorum queues (replicated, Raft). The broker then counts deliveries
    itself: ``delivery_limit`` becomes the work queue's ``x-delivery-limit``
    (on the work queue only: reading the DLQ must not count), and
    dead-lettering is ``at-least-once``, which RabbitMQ allows only with
    ``x-overflow=reject-publish``. ``single_active_consumer`` lets one
    consumer at a time take messages, the others standing by (ordered
    processing across replicas).
    """
    if queue_type not in QUEUE_TYPES:
        raise ConfigurationError(
            f"queue_type must be one of {', '.join(QUEUE_TYPES)}, got {queue_type!r}"
        )
    limit_ok = isinstance(delivery_limit, int) and not isinstance(delivery_limit, bool)
    if delivery_limit is not None and not (limit_ok and delivery_limit >= 0):
        raise ConfigurationError(
            f"max_redeliveries must be an int >= 0 or None, got {delivery_limit!r}"
        )
    validate_name("exchange", exchange)
    validate_name("queue", queue)
    for delay in retry_delays:
        if delay <= 0:
            raise ConfigurationError(f"retry delays must be > 0 seconds, got {delay!r}")
    dlx = dlx_name(exchange)
    work_args: dict[str, Any] = {
        "x-dead-letter-exchange": dlx,
        "x-dead-letter-routing-key": queue,
    }
    quorum = queue_type == "quorum"
    typed: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    safe_dead_lettering: dict[str, Any] = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if quorum
        else {}
    )
    work_args.update(typed)
    work_args.update(safe_dead_lettering)
    if quorum and delivery_limit is not None:
        work_args["x-delivery-limit"] = delivery_limit
    if single_active_consumer:
        work_args["x-single-active-consumer"] = True
    work_args.update(queue_arguments or {})
    retry_queues = tuple(
        QueueSpec(
            name=retry_queue_name(queue, attempt),
            arguments={
                **typed,
                "x-message-ttl": int(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                **safe_dead_lettering,
            },
        )
        for attempt, delay in enumerate(retry_delays, start=1)
    )
    return Topology(
        exchanges=(events_exchange(exchange), ExchangeSpec(name=dlx, type="direct")),
        queues=(
            QueueSpec(name=queue, arguments=work_args),
            QueueSpec(name=dlq_name(queue), arguments={**typed, "x-message-ttl": DLQ_TTL_MS}),
            *retry_queues,
        ),
        bindings=(
            *(BindingSpec(queue=queue, exchange=exchange, routing_key=p) for p in patterns),
            BindingSpec(queue=dlq_name(queue), exchange=dlx, routing_key=queue),
        ),
    )
