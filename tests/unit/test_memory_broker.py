"""The in-process broker's core semantics, with RabbitMQ's behaviour as the reference.

No event loop and no sleeping: deliveries are collected by plain callbacks and
time moves with a ManualClock. tests/conformance runs the same behaviours
through the bus against both transports.
"""

from __future__ import annotations

from typing import Any

import pytest

from messaging.transport.base import Properties
from messaging.transport.memory.broker import Channel, MemoryBroker
from messaging.transport.memory.clock import ManualClock
from messaging.transport.memory.errors import (
    AccessRefusedError,
    ChannelClosedError,
    ConnectionClosedError,
    NotFoundError,
    PreconditionFailedError,
    ResourceLockedError,
)
from messaging.transport.memory.model import Delivery


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def broker(clock: ManualClock) -> MemoryBroker:
    return MemoryBroker("test", clock=clock)


@pytest.fixture
def channel(broker: MemoryBroker) -> Channel:
    return broker.connect("test").channel()


class Inbox:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.cancelled: list[str] = []

    def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    def on_cancel(self, tag: str) -> None:
        self.cancelled.append(tag)

    @property
    def bodies(self) -> list[bytes]:
        return [d.body for d in self.deliveries]


def declare_queue(channel: Channel, name: str, **arguments: Any) -> None:
    channel.queue_declare(name, durable=True, arguments=arguments)


# -- routing -----------------------------------------------------------------------


def test_topic_exchange_routes_by_pattern(channel: Channel, broker: MemoryBroker) -> None:
    channel.exchange_declare("events", "topic", durable=True)
    for queue, pattern in [("one", "query.*"), ("all", "#"), ("deep", "query.#.done")]:
        declare_queue(channel, queue)
        channel.queue_bind(queue, "events", pattern)
    channel.basic_publish(b"a", "events", "query.request")
    channel.basic_publish(b"b", "events", "query.x.y.done")
    channel.basic_publish(b"c", "events", "query.done")
    assert [m.body for m in broker.peek("one")] == [b"a", b"c"]
    assert [m.body for m in broker.peek("all")] == [b"a", b"b", b"c"]
    assert [m.body for m in broker.peek("deep")] == [b"b", b"c"]


def test_direct_and_default_exchanges(channel: Channel, broker: MemoryBroker) -> None:
    channel.exchange_declare("dx", "direct")
    declare_queue(channel, "q")
    channel.queue_bind("q", "dx", "key")
    channel.basic_publish(b"direct", "dx", "key")
    channel.basic_publish(b"miss", "dx", "other")
    channel.basic_publish(b"default", "", "q")
    assert [m.body for m in broker.peek("q")] == [b"direct", b"default"]


def test_mandatory_unroutable_is_returned_and_still_acked(channel: Channel) -> None:
    channel.exchange_declare("events", "topic")
    result = channel.basic_publish(b"x", "events", "nobody.listens", mandatory=True)
    assert result.acked
    assert result.returned is not None
    assert result.returned.reply_text == "NO_ROUTE"
    assert channel.basic_publish(b"x", "events", "nobody.listens").returned is None


def test_publish_to_a_missing_exchange_closes_the_channel(channel: Channel) -> None:
    with pytest.raises(NotFoundError, match="no exchange 'nope' in vhost '/'"):
        channel.basic_publish(b"x", "nope", "k")
    assert not channel.is_open
    with pytest.raises(ChannelClosedError):
        channel.queue_declare("q")


# -- declaring ---------------------------------------------------------------------


def test_passive_declare_of_a_missing_queue_is_not_found(channel: Channel) -> None:
    with pytest.raises(NotFoundError, match="no queue 'missing'"):
        channel.queue_declare("missing", passive=True)


def test_redeclare_with_other_arguments_is_precondition_failed(
    broker: MemoryBroker, channel: Channel
) -> None:
    declare_queue(channel, "q", **{"x-message-ttl": 1000})
    with pytest.raises(PreconditionFailedError, match="inequivalent arg 'x-message-ttl'"):
        declare_queue(channel, "q", **{"x-message-ttl": 2000})
    other = broker.connect().channel()
    with pytest.raises(PreconditionFailedError, match="inequivalent arg 'durable'"):
        other.queue_declare("q", durable=False, arguments={"x-message-ttl": 1000})
    again = broker.connect().channel()
    assert again.queue_declare("q", durable=True, arguments={"x-message-ttl": 1000}).queue == "q"


def test_reserved_names_and_exclusive_queues(broker: MemoryBroker, channel: Channel) -> None:
    with pytest.raises(AccessRefusedError):
        channel.exchange_declare("amq.mine", "topic")
    owner = broker.connect().channel()
    owner.queue_declare("mine", exclusive=True)
    with pytest.raises(ResourceLockedError):
        broker.connect().channel().queue_declare("mine", passive=True)
    owner.connection.close()
    assert "mine" not in broker.queue_names()


def test_quorum_queues_are_accepted_and_must_be_durable(
    channel: Channel, broker: MemoryBroker
) -> None:
    channel.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    with pytest.raises(PreconditionFailedError, match="non-durable"):
        broker.connect().channel().queue_declare(
            "qq2", durable=False, arguments={"x-queue-type": "quorum"}
        )


# -- consuming and settling ---------------------------------------------------------


def test_prefetch_limits_unacked_deliveries_per_consumer(channel: Channel) -> None:
    declare_queue(channel, "q")
    for i in range(5):
        channel.basic_publish(str(i).encode(), "", "q")
    channel.basic_qos(2)
    inbox = Inbox()
    channel.basic_consume("q", inbox)
    assert inbox.bodies == [b"0", b"1"]
    channel.basic_ack(inbox.deliveries[1].delivery_tag, multiple=True)
    assert inbox.bodies == [b"0", b"1", b"2", b"3"]


def test_requeue_marks_redelivered_and_keeps_the_order(channel: Channel) -> None:
    declare_queue(channel, "q")
    for body in (b"a", b"b"):
        channel.basic_publish(body, "", "q")
    inbox = Inbox()
    channel.basic_qos(2)
    channel.basic_consume("q", inbox)
    _first, second = inbox.deliveries
    channel.basic_nack(second.delivery_tag, multiple=True, requeue=True)
    redelivered = inbox.deliveries[2:]
    assert [(d.body, d.redelivered) for d in redelivered] == [(b"a", True), (b"b", True)]


def test_an_unknown_delivery_tag_closes_the_channel(channel: Channel) -> None:
    with pytest.raises(PreconditionFailedError, match="unknown delivery tag 7"):
        channel.basic_ack(7)
    assert not channel.is_open


def test_closing_a_connection_returns_its_unacked_messages(broker: MemoryBroker) -> None:
    first = broker.connect().channel()
    declare_queue(first, "q")
    first.basic_publish(b"m", "", "q")
    inbox = Inbox()
    first.basic_consume("q", inbox)
    broker.close_connection(first.connection)
    state = broker.queue_state("q")
    assert state is not None
    assert (state.ready, state.unacked, state.consumers) == (1, 0, 0)
    again = Inbox()
    broker.connect().channel().basic_consume("q", again)
    assert again.deliveries[0].redelivered
    with pytest.raises(ConnectionClosedError):
        first.basic_ack(inbox.deliveries[0].delivery_tag)


def test_deleting_a_queue_cancels_its_consumers(channel: Channel, broker: MemoryBroker) -> None:
    declare_queue(channel, "q")
    inbox = Inbox()
    tag = channel.basic_consume("q", inbox, on_cancel=inbox.on_cancel)
    broker.connect().channel().queue_delete("q")
    assert inbox.cancelled == [tag]
    assert tag not in channel.consumer_tags


# -- dead-lettering and time ---------------------------------------------------------


def dlx_setup(channel: Channel) -> None:
    channel.exchange_declare("dlx", "direct", durable=True)
    declare_queue(channel, "dlq")
    channel.queue_bind("dlq", "dlx", "work")
    declare_queue(
        channel,
        "work",
        **{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "work"},
    )


def test_reject_dead_letters_with_x_death(channel: Channel, broker: MemoryBroker) -> None:
    dlx_setup(channel)
    channel.basic_publish(b"bad", "", "work", Properties(message_id="m1"))
    inbox = Inbox()
    channel.basic_consume("work", inbox)
    channel.basic_reject(inbox.deliveries[0].delivery_tag, requeue=False)
    (dead,) = broker.peek("dlq")
    assert dead.exchange == "dlx"
    assert dead.routing_key == "work"
    assert dead.properties.message_id == "m1"
    assert dead.properties.headers is not None
    (death,) = dead.properties.headers["x-death"]
    assert death["queue"] == "work"
    assert death["reason"] == "rejected"
    assert death["count"] == 1
    assert death["routing-keys"] == ["work"]
    assert dead.properties.headers["x-first-death-reason"] == "rejected"


def test_queue_ttl_expires_on_the_clock_and_dead_letters(
    clock: ManualClock, channel: Channel, broker: MemoryBroker
) -> None:
    """The retry ladder: a delay queue holds a message for its TTL, then sends it back."""
    declare_queue(channel, "work")
    declare_queue(
        channel,
        "work.retry.1",
        **{
            "x-message-ttl": 5000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work",
        },
    )
    channel.basic_publish(b"later", "", "work.retry.1")
    clock.advance(4.9)
    assert broker.peek("work") == []
    clock.advance(0.2)
    (back,) = broker.peek("work")
    assert back.body == b"later"
    assert back.properties.headers is not None
    assert back.properties.headers["x-death"][0]["reason"] == "expired"
    assert broker.peek("work.retry.1") == []


def test_per_message_expiration(clock: ManualClock, channel: Channel, broker: MemoryBroker) -> None:
    declare_queue(channel, "q")
    channel.basic_publish(b"short", "", "q", Properties(expiration="1000"))
    clock.advance(1.0)
    assert broker.peek("q") == []


def test_an_expiry_cycle_without_rejection_drops_the_message(
    clock: ManualClock, channel: Channel, broker: MemoryBroker
) -> None:
    declare_queue(
        channel,
        "loop",
        **{"x-message-ttl": 10, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"},
    )
    channel.basic_publish(b"x", "", "loop")
    clock.advance(1)
    assert broker.peek("loop") == []


def test_max_length_drop_head_dead_letters_the_oldest(
    channel: Channel, broker: MemoryBroker
) -> None:
    dlx_setup(channel)
    declare_queue(
        channel,
        "short",
        **{"x-max-length": 2, "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "work"},
    )
    for body in (b"1", b"2", b"3"):
        channel.basic_publish(body, "", "short")
    assert [m.body for m in broker.peek("short")] == [b"2", b"3"]
    (dropped,) = broker.peek("dlq")
    assert dropped.body == b"1"
    assert dropped.properties.headers is not None
    assert dropped.properties.headers["x-death"][0]["reason"] == "maxlen"


def test_max_length_reject_publish_nacks(channel: Channel, broker: MemoryBroker) -> None:
    declare_queue(channel, "full", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    assert channel.basic_publish(b"1", "", "full").acked
    assert not channel.basic_publish(b"2", "", "full").acked
    assert [m.body for m in broker.peek("full")] == [b"1"]


def test_quorum_delivery_limit_dead_letters(channel: Channel, broker: MemoryBroker) -> None:
    dlx_setup(channel)
    channel.queue_declare(
        "qq",
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "dlx",
            "x-dead-letter-routing-key": "work",
        },
    )
    channel.basic_publish(b"poison", "", "qq")
    inbox = Inbox()
    channel.basic_consume("qq", inbox)
    channel.basic_reject(inbox.deliveries[0].delivery_tag, requeue=True)
    assert inbox.deliveries[1].properties.headers == {"x-delivery-count": 1}
    channel.basic_reject(inbox.deliveries[1].delivery_tag, requeue=True)
    assert len(inbox.deliveries) == 2
    (dead,) = broker.peek("dlq")
    assert dead.properties.headers is not None
    assert dead.properties.headers["x-death"][0]["reason"] == "delivery_limit"


# -- direct reply-to ---------------------------------------------------------------------


def test_direct_reply_to_routes_the_answer_to_the_asking_channel(
    broker: MemoryBroker, channel: Channel
) -> None:
    declare_queue(channel, "service")
    replies = Inbox()
    channel.basic_consume("amq.rabbitmq.reply-to", replies, no_ack=True)
    channel.basic_publish(b"ask", "", "service", Properties(reply_to="amq.rabbitmq.reply-to"))
    (request,) = broker.peek("service")
    address = request.properties.reply_to
    assert address is not None
    assert address.startswith("amq.rabbitmq.reply-to.")
    responder = broker.connect().channel()
    assert responder.basic_publish(b"answer", "", address, mandatory=True).returned is None
    assert replies.bodies == [b"answer"]


def test_direct_reply_to_needs_the_reply_consumer_first(channel: Channel) -> None:
    declare_queue(channel, "service")
    with pytest.raises(PreconditionFailedError, match="fast reply consumer does not exist"):
        channel.basic_publish(b"ask", "", "service", Properties(reply_to="amq.rabbitmq.reply-to"))


def test_alternate_exchange_takes_what_nothing_else_routes(
    channel: Channel, broker: MemoryBroker
) -> None:
    channel.exchange_declare("unrouted", "fanout", durable=True)
    declare_queue(channel, "catch-all")
    channel.queue_bind("catch-all", "unrouted")
    channel.exchange_declare(
        "events", "topic", durable=True, arguments={"alternate-exchange": "unrouted"}
    )
    result = channel.basic_publish(b"lost?", "events", "nobody.listens", mandatory=True)
    assert result.returned is None
    assert [m.body for m in broker.peek("catch-all")] == [b"lost?"]


def test_single_active_consumer_hands_over_when_the_active_one_goes(
    broker: MemoryBroker, channel: Channel
) -> None:
    declare_queue(channel, "sac", **{"x-single-active-consumer": True})
    first, second = Inbox(), Inbox()
    first_channel = broker.connect().channel()
    first_channel.basic_consume("sac", first)
    channel.basic_consume("sac", second)
    for body in (b"1", b"2"):
        channel.basic_publish(body, "", "sac")
    assert (first.bodies, second.bodies) == ([b"1", b"2"], [])
    first_channel.close()  # its unacked messages go back, and the second takes over
    assert [(d.body, d.redelivered) for d in second.deliveries] == [(b"1", True), (b"2", True)]
