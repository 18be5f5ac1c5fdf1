"""Publish and subscriber options are written once, and every entry point takes all of them."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from messaging import BaseAgent, ConfigurationError, EventPublisher, EventSubscriber
from messaging.aio import (
    AsyncBaseAgent,
    AsyncConnectionPool,
    AsyncEventPublisher,
    AsyncEventSubscriber,
)
from messaging.aio.options import (
    PUBLISH_OPTIONS,
    SUBSCRIBER_KEYWORDS,
    AgentKeywords,
    PublishOptions,
    SubscriberKeywords,
    SubscriberOptions,
)
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2


def unpacked(function: Callable[..., Any]) -> object:
    """The TypedDict a function's ``**kwargs`` is annotated with (``Unpack[...]``)."""
    hints = typing.get_type_hints(function, include_extras=True)
    kwargs = next(
        p for p in inspect.signature(function).parameters.values() if p.kind is p.VAR_KEYWORD
    )
    (inner,) = typing.get_args(hints[kwargs.name])
    return inner


@pytest.mark.parametrize(
    "function",
    [
        EventPublisher.publish,
        EventPublisher.publish_nowait,
        AsyncEventPublisher.publish,
        AsyncEventPublisher.prepare,
        BaseAgent.publish,
        AsyncBaseAgent.publish,
    ],
)
def test_every_publish_takes_the_one_set_of_options(function: Callable[..., Any]) -> None:
    assert unpacked(function) is PublishOptions


@pytest.mark.parametrize(
    ("init", "keywords"),
    [
        (EventSubscriber.__init__, SubscriberKeywords),
        (AsyncEventSubscriber.__init__, SubscriberKeywords),
        (BaseAgent.__init__, AgentKeywords),
        (AsyncBaseAgent.__init__, AgentKeywords),
    ],
)
def test_every_subscriber_takes_the_one_set_of_options(
    init: Callable[..., None], keywords: type
) -> None:
    assert unpacked(init) is keywords
    assert set(SubscriberKeywords.__annotations__) <= set(keywords.__annotations__)


def test_the_option_names_are_the_typed_ones() -> None:
    assert {"exchange", "mandatory", "correlation_id", "headers"} <= PUBLISH_OPTIONS
    assert {"retry_delays", "max_redeliveries", "queue_type", "declare"} <= SUBSCRIBER_KEYWORDS
    assert set(SubscriberKeywords.__annotations__) <= {
        f.name for f in SubscriberOptions.__dataclass_fields__.values()
    }


def publisher() -> AsyncEventPublisher:
    # prepare() is pure CPU: no connection is opened.
    return AsyncEventPublisher(AsyncConnectionPool(RabbitMQConfig()), "tester", "ex.events")


def test_prepare_honours_the_exchange_option() -> None:
    message = messages_pb2.QueryRequest(query="q")
    assert publisher().prepare(message, "a.b").exchange == "ex.events"
    assert publisher().prepare(message, "a.b", exchange="").exchange == ""


def test_an_unknown_publish_option_is_named() -> None:
    with pytest.raises(TypeError, match="excange"):
        publisher().prepare(messages_pb2.QueryRequest(), "a.b", excange="x")  # type: ignore[call-arg]


def options(routing_keys: Any = ("a.*",), prefetch: Any = 1, **keywords: Any) -> SubscriberOptions:
    return SubscriberOptions.of("agent", "ex", None, routing_keys, prefetch, keywords)  # type: ignore[arg-type]


def test_subscriber_options_are_validated_once() -> None:
    built = options(retry_delays=[1, 2], max_length=10)
    assert built.queue == "agent"
    assert built.retry_delays == (1, 2)
    assert built.max_length == 10
    with pytest.raises(ConfigurationError, match=r"write \['a.b'\]"):
        options("a.b")
    with pytest.raises(ConfigurationError, match="routing_keys is empty"):
        options([])
    with pytest.raises(ConfigurationError, match="prefetch_count"):
        options(prefetch=0)
    with pytest.raises(TypeError, match=r"retry_delay\b"):
        options(retry_delay=[1])
