"""A queue's ``x-`` arguments, checked and refused the way RabbitMQ does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from messaging.transport.memory.errors import NotImplementedFeatureError, PreconditionFailedError
from messaging.transport.memory.streamlog import parse_max_age

OVERFLOW_MODES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_TYPES = ("classic", "quorum", "stream")


@dataclass(frozen=True)
class QueueSettings:
    """A queue's ``x-`` arguments, checked the way RabbitMQ checks them."""

    message_ttl: float | None = None
    """Seconds."""
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    queue_type: str = "classic"
    delivery_limit: int | None = None
    single_active_consumer: bool = False
    """Only the oldest consumer gets messages; the next takes over when it goes."""
    dead_letter_strategy: str = "at-most-once"
    max_age: float | None = None
    """Streams: seconds (``x-max-age``)."""
    segment_bytes: int | None = None
    """Streams: ``x-stream-max-segment-size-bytes``."""

    @classmethod
    def parse(
        cls, name: str, arguments: Mapping[str, Any], durable: bool, exclusive: bool, auto: bool
    ) -> QueueSettings:
        def invalid(arg: str, why: str) -> PreconditionFailedError:
            return PreconditionFailedError(
                f"invalid arg '{arg}' for queue '{name}' in vhost '/': {why}"
            )

        def non_negative_int(arg: str) -> int | None:
            value = arguments.get(arg)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise invalid(arg, f"{{unacceptable_type,{type(value).__name__}}}")
            if value < 0:
                raise invalid(arg, f"{{value_negative,{value}}}")
            return value

        def text(arg: str) -> str | None:
            value = arguments.get(arg)
            if value is None:
                return None
            if isinstance(value, bytes):
                value = value.decode()
            if not isinstance(value, str):
                raise invalid(arg, f"{{unacceptable_type,{type(value).__name__}}}")
            return value

        for arg in ("x-max-priority", "x-expires"):
            if arg in arguments:
                raise NotImplementedFeatureError(
                    f"queue argument '{arg}' (queue '{name}') is not supported by the in-memory "
                    f"broker; test this queue against RabbitMQ"
                )
        ttl = non_negative_int("x-message-ttl")
        dlx = text("x-dead-letter-exchange")
        dlrk = text("x-dead-letter-routing-key")
        if dlrk is not None and dlx is None:
            raise PreconditionFailedError(
                f"invalid arg 'x-dead-letter-routing-key' for queue '{name}' in vhost '/': "
                f"Key x-dead-letter-routing-key should be specified together with "
                f"x-dead-letter-exchange"
            )
        overflow = text("x-overflow") or "drop-head"
        if overflow not in OVERFLOW_MODES:
            raise invalid("x-overflow", f'{{unacceptable_value,<<"{overflow}">>}}')
        queue_type = text("x-queue-type") or "classic"
        if queue_type not in QUEUE_TYPES:
            raise invalid("x-queue-type", f'{{unacceptable_value,<<"{queue_type}">>}}')
        max_age: float | None = None
        if queue_type == "stream":
            if "x-message-ttl" in arguments:
                raise PreconditionFailedError(
                    f"invalid arg 'x-message-ttl' for queue '{name}' in vhost '/' of queue type "
                    f"rabbit_stream_queue"
                )
            age = text("x-max-age")
            if age is not None:
                max_age = parse_max_age(age)
                if max_age is None:
                    raise invalid("x-max-age", "invalid_max_age")
        if queue_type in ("quorum", "stream"):
            for prop, bad in (("non-durable", not durable), ("exclusive-owner", exclusive)):
                if bad:
                    raise PreconditionFailedError(
                        f"invalid property '{prop}' for queue '{name}' in vhost '/'"
                    )
            if auto:
                raise PreconditionFailedError(
                    f"invalid property 'auto-delete' for queue '{name}' in vhost '/'"
                )
        limit = non_negative_int("x-delivery-limit")
        single = arguments.get("x-single-active-consumer", False)
        if not isinstance(single, bool):
            raise invalid(
                "x-single-active-consumer", f"{{unacceptable_type,{type(single).__name__}}}"
            )
        strategy = text("x-dead-letter-strategy") or "at-most-once"
        if strategy not in ("at-most-once", "at-least-once"):
            raise invalid("x-dead-letter-strategy", f'{{unacceptable_value,<<"{strategy}">>}}')
        return cls(
            message_ttl=None if ttl is None else ttl / 1000.0,
            dead_letter_exchange=dlx,
            dead_letter_routing_key=dlrk,
            max_length=non_negative_int("x-max-length"),
            max_length_bytes=non_negative_int("x-max-length-bytes"),
            overflow=overflow,
            queue_type=queue_type,
            delivery_limit=limit if queue_type == "quorum" else None,
            single_active_consumer=single,
            dead_letter_strategy=strategy,
            max_age=max_age,
            segment_bytes=non_negative_int("x-stream-max-segment-size-bytes"),
        )
