"""README "What it guarantees" and "What it declares", row by row, on both transports.

Rows about the network (reconnects after a cut socket, heartbeats, TLS,
clusters, resource alarms) are RabbitMQ's alone and live in tests/faults and
tests/integration; a broker closing the connections is here, as both do it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage

from messaging import (
    BaseAgent,
    ConnectionPool,
    EventPublisher,
    EventSubscriber,
    InvalidMessageError,
    PublishNackedError,
    TopologyMismatchError,
    UnroutableMessageError,
)
from messaging import headers as h
from messaging.generated import messages_pb2 as pb
from messaging.topology import DLQ_TTL_MS
from tests.conformance.conftest import Target


class PermanentError(Exception):
    """A failure no retry can fix."""


class Recorder(EventSubscriber):
    """Records what it handles; 'fail' always raises, 'fail-once' the first time,
    'permanent' raises a permanent error, 'slow' takes ``slow`` seconds (or until
    ``release`` is set)."""

    def __init__(
        self,
        pool: ConnectionPool,
        exchange: str,
        queue: str,
        routing_keys: Sequence[str] = ("work.#",),
        *,
        retry_delays: Sequence[float] = (),
        prefetch_count: int = 1,
        slow: float = 0.0,
        max_redeliveries: int | None = 10,
        **options: Any,
    ) -> None:
        self.handled: list[tuple[str, dict[str, Any]]] = []
        self.started = threading.Event()
        self.release = threading.Event()  # set: a "slow" handler returns at once
        self.slow = slow
        self.lock = threading.Lock()
        super().__init__(
            pool,
            "recorder",
            exchange,
            queue,
            list(routing_keys),
            prefetch_count,
            retry_delays=retry_delays,
            permanent_errors=(PermanentError,),
            max_redeliveries=max_redeliveries,
            **options,
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        if routing_key.startswith("unknown."):
            raise KeyError(routing_key)
        return pb.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        text = message.query
        self.started.set()
        if text == "slow":
            self.release.wait(self.slow)
        if text == "fail" or (text == "fail-once" and properties["attempt"] == 1):
            raise RuntimeError(f"refusing {text!r}")
        if text == "permanent":
            raise PermanentError("not my job")
        with self.lock:
            self.handled.append((text, properties))

    def texts(self) -> list[str]:
        with self.lock:
            return [text for text, _ in self.handled]


@pytest.fixture
def pool(target: Target) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(target.config)
    yield pool
    pool.close()


def ask(text: str, correlation_id: str = "") -> pb.QueryRequest:
    request = pb.QueryRequest(query=text)
    if correlation_id:
        request.metadata.correlation_id = correlation_id
    return request


# -- publishing never loses silently ---------------------------------------------------


def test_a_confirmed_publish_arrives_with_every_documented_property(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue)
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    message_id = publisher.publish(ask("hello", "corr-1"), "work.item", reply_to="back")
    target.wait_for(lambda: recorder.texts() == ["hello"], what="the message")
    _, props = recorder.handled[0]
    assert props["message_id"] == message_id
    assert props["correlation_id"] == "corr-1"
    assert props["reply_to"] == "back"
    assert props["routing_key"] == "work.item"
    assert props["exchange"] == exchange
    assert props["type"] == "chimera.v1.QueryRequest"
    assert props["content_type"] == "application/x-protobuf"
    assert props["app_id"] == "sender"
    assert props["timestamp"] is not None
    assert props["redelivered"] is False
    assert props["attempt"] == 1
    publisher.close()


def test_a_persistent_message_is_stored_with_delivery_mode_2(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue)
    target.start(recorder)
    target.stop(recorder)  # the queue stays, bound, with nobody consuming
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("keep"), "work.keep")
    (taken,) = target.take_all(queue)
    assert taken.properties["delivery_mode"] == 2
    assert taken.properties["content_type"] == "application/x-protobuf"
    publisher.close()


def test_publishing_with_no_queue_bound_raises_unroutable(
    target: Target, pool: ConnectionPool
) -> None:
    publisher = EventPublisher(pool, "sender", target.exchange())
    with pytest.raises(UnroutableMessageError):
        publisher.publish(ask("lost?"), "nobody.listens")
    publisher.close()


def test_a_message_the_broker_refuses_raises_nacked(target: Target, pool: ConnectionPool) -> None:
    exchange, full = target.exchange(), target.queue("full")
    arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
    assert target.declare_raw(full, arguments, bind=(exchange, "work.#")) is None
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("first"), "work.1")
    with pytest.raises(PublishNackedError):
        publisher.publish(ask("second"), "work.2")
    assert target.depth(full) == 1
    publisher.close()


def test_bad_input_is_refused_before_anything_is_sent(target: Target, pool: ConnectionPool) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue)
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    with pytest.raises(InvalidMessageError):
        publisher.publish("not protobuf", "work.x")  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError):
        publisher.publish(ask("x"), "")
    with pytest.raises(InvalidMessageError):
        publisher.publish(ask("x"), "work." + "k" * 300)
    publisher.publish(ask("after"), "work.after")
    target.wait_for(lambda: recorder.texts() == ["after"], what="the good message")
    publisher.close()


# -- routing -------------------------------------------------------------------------


def test_topic_patterns_star_and_hash(target: Target, pool: ConnectionPool) -> None:
    exchange = target.exchange()
    star = Recorder(pool, exchange, target.queue("star"), ["order.*"])
    hash_ = Recorder(pool, exchange, target.queue("hash"), ["order.#"])
    target.start(star)
    target.start(hash_)
    publisher = EventPublisher(pool, "sender", exchange)
    for key in ("order", "order.new", "order.new.eu"):
        publisher.publish(ask(key), key)
    target.wait_for(lambda: len(hash_.texts()) == 3, what="the # subscriber")
    target.wait_for(lambda: star.texts() == ["order.new"], what="the * subscriber")
    assert sorted(hash_.texts()) == ["order", "order.new", "order.new.eu"]
    publisher.close()


# -- consuming is at-least-once ----------------------------------------------------------


def test_a_message_in_hand_when_the_connections_drop_comes_back(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, slow=60)
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("slow"), "work.slow")
    assert recorder.started.wait(10)
    target.close_all_connections()
    recorder.release.set()
    # Its ack would belong to the closed channel: the broker gives it back, and the
    # bus counts the redelivery in the copy it handles again.
    target.wait_for(
        lambda: recorder.texts().count("slow") == 2, timeout=30, what="the message handled again"
    )
    assert recorder.handled[-1][1]["headers"][h.REDELIVERIES] == 1
    target.wait_for(lambda: target.depth(queue) == 0, what="the queue to empty")
    publisher.close()


def test_stop_finishes_the_message_in_hand_and_returns_the_rest(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, slow=0.5, prefetch_count=5)
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("slow"), "work.1")
    for n in range(4):
        publisher.publish(ask(f"later-{n}"), "work.2")
    assert recorder.started.wait(10)
    target.stop(recorder)
    assert "slow" in recorder.texts()
    handled = len(recorder.texts())
    target.wait_for(lambda: target.depth(queue) == 5 - handled, what="the rest back in the queue")
    publisher.close()


def test_prefetch_bounds_the_unacked_messages(target: Target, pool: ConnectionPool) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, slow=0.3, prefetch_count=2)
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    for _ in range(5):
        publisher.publish(ask("slow"), "work.x")
    target.wait_for(lambda: target.depth(queue) == 3, what="two messages taken")
    time.sleep(0.1)
    assert (target.depth(queue) or 0) >= 2  # never more than the prefetch in hand
    target.wait_for(lambda: len(recorder.texts()) == 5, what="all handled")
    publisher.close()


# -- failures go to the DLQ, saying why ------------------------------------------------------


def test_retries_wait_in_the_broker_then_the_dlq_says_why(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue(retries=2)
    recorder = Recorder(pool, exchange, queue, retry_delays=(0.2, 0.2))
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("fail-once"), "work.flaky")
    publisher.publish(ask("fail"), "work.broken")
    target.wait_for(
        lambda: target.depth(f"{queue}.dlq") == 1,
        advancing=0.05,  # the memory broker's clock; RabbitMQ's runs by itself
        what="the dead letter after two retries",
    )
    target.wait_for(lambda: "fail-once" in recorder.texts(), what="the retried success")
    (_, props) = next(item for item in recorder.handled if item[0] == "fail-once")
    assert props["attempt"] == 2
    assert props["routing_key"] == "work.flaky"
    (dead,) = target.take_all(f"{queue}.dlq")
    assert dead.headers[h.ERROR_TYPE] == "builtins.RuntimeError"
    assert "refusing 'fail'" in str(dead.headers[h.ERROR_MESSAGE])
    assert dead.headers[h.FAILED_AGENT] == "recorder"
    assert dead.headers[h.ATTEMPTS] == 3
    assert dead.headers[h.ORIGINAL_EXCHANGE] == exchange
    assert dead.headers[h.ORIGINAL_ROUTING_KEY] == "work.broken"
    publisher.close()


def test_undecodable_unknown_and_permanent_go_to_the_dlq_at_once(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue(retries=1)
    recorder = Recorder(pool, exchange, queue, ["work.#", "unknown.#"], retry_delays=(30,))
    target.start(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("permanent"), "work.p")
    publisher.publish(ask("x"), "unknown.key")
    target.publish_raw(
        exchange, "work.bad", b"\xff\xfe not protobuf", content_type="application/x-protobuf"
    )
    target.publish_raw(exchange, "work.json", b"{}", content_type="application/json")
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 4, what="four dead letters")
    dead = target.take_all(f"{queue}.dlq")
    kinds = sorted(str(d.headers[h.ERROR_TYPE]).rsplit(".", 1)[-1] for d in dead)
    assert kinds == ["DecodeError", "DecodeError", "PermanentError", "UnknownRoutingKeyError"]
    assert target.depth(f"{queue}.retry.1") == 0
    publisher.close()


def test_poison_messages_cannot_loop(target: Target, pool: ConnectionPool) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, max_redeliveries=0)
    target.start(recorder)
    target.stop(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("crashes"), "work.poison")
    assert target.take_without_ack_then_close(queue)  # its consumer "died" holding it
    recorder = Recorder(pool, exchange, queue, max_redeliveries=0)
    target.start(recorder)
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the poison message in the DLQ")
    (dead,) = target.take_all(f"{queue}.dlq")
    assert str(dead.headers[h.ERROR_TYPE]).endswith("PoisonMessageError")
    assert recorder.texts() == []
    publisher.close()


# -- request/response -------------------------------------------------------------------


class Echo(BaseAgent):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str) -> None:
        super().__init__(pool, "echo", ["echo.request"], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"echo.request": pb.QueryRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.QueryRequest)
        reply = pb.QueryResponse(answer=message.query.upper())
        self.publish_response(reply, "echo.response", properties["correlation_id"])


def test_request_gets_its_own_reply_over_direct_reply_to(
    target: Target, pool: ConnectionPool
) -> None:
    exchange = target.exchange()
    echo = Echo(pool, exchange, target.queue("echo"))
    target.start(echo)
    publisher = EventPublisher(pool, "asker", exchange)
    answers: dict[str, str] = {}

    def one(text: str) -> None:
        reply = publisher.request(ask(text), "echo.request", timeout=10)
        assert isinstance(reply, pb.QueryResponse)
        answers[text] = reply.answer

    threads = [threading.Thread(target=one, args=(f"q{n}",)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert answers == {f"q{n}": f"Q{n}" for n in range(5)}
    publisher.close()


# -- topology ------------------------------------------------------------------------------


def test_the_declared_topology_is_the_documented_one(target: Target, pool: ConnectionPool) -> None:
    exchange, queue = target.exchange(), target.queue(retries=2)
    recorder = Recorder(pool, exchange, queue, retry_delays=(1, 10))
    target.start(recorder)
    assert target.consumers(queue) == 1
    expected: dict[str, dict[str, Any]] = {
        queue: {"x-dead-letter-exchange": f"{exchange}.dlx", "x-dead-letter-routing-key": queue},
        f"{queue}.dlq": {"x-message-ttl": DLQ_TTL_MS},
        f"{queue}.retry.1": {
            "x-message-ttl": 1000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        },
        f"{queue}.retry.2": {
            "x-message-ttl": 10000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        },
    }
    for name, arguments in expected.items():
        assert target.declare_raw(name, arguments) is None, name  # equivalent: accepted
    refusal = target.declare_raw(f"{queue}.dlq", {"x-message-ttl": 5})
    assert refusal is not None
    assert "PRECONDITION_FAILED" in refusal
    assert "x-message-ttl" in refusal


def test_a_queue_with_other_arguments_is_a_clear_error_that_changes_nothing(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    assert target.declare_raw(f"{queue}.dlq", {"x-message-ttl": 5}) is None
    recorder = Recorder(pool, exchange, queue)
    with pytest.raises(TopologyMismatchError) as caught:
        recorder.start_consuming()
    assert f"{queue}.dlq" in str(caught.value)
    assert "x-message-ttl" in str(caught.value)
    assert target.depth(queue) is None  # the work queue it had created is gone again


def test_a_deleted_queue_is_declared_again_and_consumed(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue)
    target.start(recorder)
    target.delete_queue(queue)
    target.wait_for(lambda: target.consumers(queue) == 1, timeout=20, what="the consumer back")
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("again"), "work.again")
    target.wait_for(lambda: recorder.texts() == ["again"], what="the message after re-declaring")
    publisher.close()


def test_a_single_active_consumer_has_the_queue_to_itself(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    first = Recorder(pool, exchange, queue, single_active_consumer=True)
    second = Recorder(pool, exchange, queue, single_active_consumer=True)
    target.start(first)
    target.start(second)
    publisher = EventPublisher(pool, "sender", exchange)
    for n in range(4):
        publisher.publish(ask(f"m{n}"), "work.x")
    target.wait_for(lambda: len(first.texts()) == 4, what="the active consumer to take all")
    assert second.texts() == []
    target.stop(first)  # the other one takes over
    publisher.publish(ask("after"), "work.x")
    target.wait_for(lambda: second.texts() == ["after"], what="the second to take over")
    publisher.close()


def test_a_quorum_queue_dead_letters_past_its_delivery_limit(
    target: Target, pool: ConnectionPool
) -> None:
    exchange, queue = target.exchange(), target.queue()
    recorder = Recorder(pool, exchange, queue, queue_type="quorum", max_redeliveries=1)
    target.start(recorder)
    target.stop(recorder)
    publisher = EventPublisher(pool, "sender", exchange)
    publisher.publish(ask("crashes"), "work.poison")
    for _ in range(2):  # two consumers "die" holding it: past the limit of 1
        target.wait_for(lambda: target.depth(queue) == 1, what="the message back in the queue")
        assert target.take_without_ack_then_close(queue)
    target.wait_for(lambda: target.depth(f"{queue}.dlq") == 1, what="the dead letter")
    assert target.depth(queue) == 0
    publisher.close()
