"""More of the bus under real faults: both connections at once, a 60 s outage, cut sockets,
a memory alarm, failing handlers, request/response faults and SIGTERM mid-batch.

Same rules as ``test_core_faults.py`` (whose harness this reuses): each scenario
has its own exchange, queues and connection name, every message a unique
``message_id``, and a :class:`~tests.faults.toolkit.Ledger` whose ``check``
asserts C <= D | L (nothing confirmed is lost), D | L <= C | U (nothing from
nowhere), an empty work queue and duplicates only where a fault explains them.
Only the outage scenario stops the broker for everyone (about 65 s), and
``broker.app_stopped`` always starts it again.
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.protobuf.message import Message as ProtoMessage
from prometheus_client import REGISTRY

from messaging import (
    ConnectionFailedError,
    ConnectionPool,
    EventPublisher,
    EventSubscriber,
    InvalidMessageError,
    MessagingError,
    RequestTimeoutError,
)
from messaging import headers as h
from messaging.generated import messages_pb2
from messaging.topology import retry_queue_name
from tests.conftest import BROKER, Names, RawBroker
from tests.faults.scenario_helpers import ChildAgent, ConfirmingRawPublisher, children
from tests.faults.test_core_faults import (
    ROUTING_KEY,
    Harness,
    LedgerSubscriber,
    PublisherThread,
    assert_redeliveries_after_faults,
    at_least,
    classify,
    finish,
    publish_one,
    query,
    settle_futures,
)
from tests.faults.toolkit import Ledger, TcpProxy, broker, print_table
from tests.faults.toolkit.proxy import Direction
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

SLACK = 5.0  # seconds a bounded call may overrun its timeout on 2 noisy shared cores


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _broker_left_running() -> Iterator[None]:
    """Whatever happens here, the broker is up afterwards (and was before)."""
    broker.ensure_running()
    yield
    broker.ensure_running()


@pytest.fixture
def rig(names: Names) -> Iterator[Harness]:
    h_ = Harness(names)
    yield h_
    h_.close()


@pytest.fixture
def tcp_proxy() -> Iterator[TcpProxy]:
    with TcpProxy(*BROKER) as p:
        yield p


# -- 1. both connections closed again and again, publishing and consuming at once -------------


def test_both_connections_closed_repeatedly_while_publishing_and_consuming(
    rig: Harness, names: Names, raw: RawBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger("publish+consume connections closed together x3 (prefetch 50)")
    caplog.set_level(logging.WARNING, logger="messaging")
    exchange, queue = names.exchange, names.queue()
    pool = rig.pool(
        rig.config(publish_timeout=30), max_retries=30, initial_retry_delay=0.2, max_retry_delay=1.0
    )
    sub = rig.subscriber(pool, ledger, exchange, queue, prefetch_count=50, handler_delay=0.002)
    sub.run_in_thread()
    publisher = rig.publisher(pool, exchange)
    feeder = PublisherThread(
        publisher,
        ledger,
        prefix="pc",
        minimum=600,
        maximum=6000,
        batch=25,
        pause=0.03,
        settle_timeout=35,
        paced_by=lambda: sub.count,
    ).start()

    def reconnected(n: int) -> bool:
        health = pool.health()
        return (
            health.connected
            and health.publishing.reconnects >= n
            and health.consuming.reconnects >= n
            and sub.is_consuming
        )

    first_fault: float | None = None
    for n in range(1, 4):
        wait_for(at_least(lambda: sub.count, 150 * n), 40, f"{150 * n} deliveries")
        at = ledger.fault(f"close {rig.connection_name}:publish and :consume #{n}")
        first_fault = first_fault or at
        closed = broker.close_connections_matching(f"{rig.connection_name}:")
        assert closed == 2, f"expected to close our two connections, closed {closed}"
        wait_for(lambda n=n: reconnected(n), 40, f"both connections back #{n}")  # type: ignore[misc]
        ledger.recovered()
        confirmed = feeder.confirmed
        wait_for(at_least(lambda: feeder.confirmed, confirmed + 50), 40, "confirms again")

    feeder.stop()
    feeder.join(90)
    assert feeder.published >= 600
    assert first_fault is not None
    assert raw.consumers(queue) == 1
    result = finish(ledger, sub, raw, queue)
    assert_redeliveries_after_faults(sub, first_fault)
    assert not feeder.unexpected, f"raised outside MessagingError: {feeder.unexpected[:3]!r}"
    # An ack with a delivery tag of the old channel, sent on the new one, would make the
    # broker close the channel (PRECONDITION_FAILED - unknown delivery tag).
    stale = [
        r.getMessage()
        for r in caplog.records
        if "unknown delivery tag" in r.getMessage() or "PRECONDITION" in r.getMessage()
    ]
    assert not stale, stale[:3]
    assert result.confirmed > 0


# -- 2. a 60 s outage: every publish is bounded, and nothing confirmed is lost -----------------


@dataclass
class BoundedPublisher:
    """Publishes one by one until stopped; times every call and records its outcome."""

    publisher: EventPublisher
    ledger: Ledger
    prefix: str
    pause: float = 0.05
    backoff: float = 0.5  # after a failure, as a caller would
    calls: list[tuple[float, float, str]] = field(default_factory=list)  # (start, took, outcome)
    unexpected: list[BaseException] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> BoundedPublisher:
        self._thread = threading.Thread(target=self._run, daemon=True, name="bounded-publisher")
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            n = 0
            while not self._stop.is_set():
                msg_id = f"{self.prefix}-{n:05d}"
                n += 1
                self.ledger.published(msg_id)
                started = time.monotonic()
                try:
                    self.publisher.publish(query(msg_id), ROUTING_KEY, message_id=msg_id)
                except Exception as exc:
                    classify(self.ledger, msg_id, exc, self.unexpected)
                    self.calls.append((started, time.monotonic() - started, type(exc).__name__))
                    time.sleep(self.backoff)
                else:
                    self.ledger.confirmed(msg_id)
                    self.calls.append((started, time.monotonic() - started, "confirmed"))
                    time.sleep(self.pause)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def confirmed_since(self, since: float) -> int:
        return sum(
            1 for at, _, outcome in list(self.calls) if at >= since and outcome == "confirmed"
        )

    def stop_and_join(self, timeout: float) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the publisher hung ({timeout}s)"
        if self.error is not None:
            raise self.error


@pytest.mark.timeout(240)
def test_a_60s_outage_bounds_every_publish_and_loses_nothing_confirmed(
    rig: Harness, names: Names
) -> None:
    ledger = Ledger("broker app stopped 60 s (publish_timeout 10 s)")
    publish_timeout = 10.0
    exchange, queue = names.exchange, names.queue()
    # A retry policy that outlives the outage: each publish waits for the connection
    # up to its publish_timeout, then raises PublishTimeoutError. (Once a policy is
    # spent, publish spins instead of failing fast:
    # test_publish_fails_fast_once_the_retry_policy_is_spent pins that bug.)
    pool = rig.pool(
        rig.config(publish_timeout=publish_timeout, connect_timeout=3),
        max_retries=1000,
        initial_retry_delay=0.3,
        max_retry_delay=2.0,
    )
    sub = rig.subscriber(pool, ledger, exchange, queue, prefetch_count=50)
    sub.run_in_thread()
    feeder = BoundedPublisher(rig.publisher(pool, exchange), ledger, prefix="o").start()
    wait_for(lambda: sub.count >= 30, 30, "30 deliveries before the outage")

    ledger.fault("rabbitmqctl stop_app; 60 s; start_app")
    disconnected_seen = False
    with broker.app_stopped(seconds=60) as timings:
        deadline = time.monotonic() + 58
        while time.monotonic() < deadline:
            disconnected_seen = disconnected_seen or not pool.health().connected
            time.sleep(0.5)
    back_at = time.monotonic()
    print(f"outage timings: {timings}", flush=True)
    wait_for(
        lambda: pool.health().connected and sub.is_consuming,
        60,
        "both connections back and consuming again",
    )
    # Time to recover: from start_app being called (the broker boots in it) to consuming.
    down_until = timings.stopped_at + timings.down_seconds
    ledger.recovered_after(time.monotonic() - down_until)
    wait_for(lambda: feeder.confirmed_since(back_at) >= 30, 40, "30 confirms after the outage")
    feeder.stop_and_join(publish_timeout + 2 * SLACK)

    raw = RawBroker()  # made after the restart
    try:
        result = finish(ledger, sub, raw, queue)
    finally:
        raw.close()

    calls = list(feeder.calls)
    # Started while the app was stopped (stop_app returned .. start_app called): each
    # must have raised, or been confirmed only after the broker was back.
    during = [c for c in calls if timings.stopped_at <= c[0] < down_until]
    outcomes: dict[str, int] = {}
    for _, _, outcome in during:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    confirmed_while_down = [
        c for c in calls if c[2] == "confirmed" and timings.stopped_at < c[0] + c[1] < down_until
    ]
    slowest = max(took for _, took, _ in calls)
    print(
        f"{len(calls)} publishes, {len(during)} during the outage {outcomes}; slowest "
        f"{slowest:.2f}s; disconnected seen: {disconnected_seen}",
        flush=True,
    )
    assert disconnected_seen
    assert during, "no publish was attempted during the outage"
    assert not confirmed_while_down, f"publish reported success while down: {confirmed_while_down}"
    assert set(outcomes) <= {"PublishTimeoutError", "ConnectionFailedError", "confirmed"}, outcomes
    assert outcomes.get("PublishTimeoutError", 0) + outcomes.get("ConnectionFailedError", 0) >= 3
    assert slowest <= publish_timeout + SLACK, f"a publish took {slowest:.1f}s"
    assert not feeder.unexpected, f"raised outside MessagingError: {feeder.unexpected[:3]!r}"
    assert result.confirmed >= 60


def test_publish_fails_fast_once_the_retry_policy_is_spent(
    rig: Harness, tcp_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="messaging.publisher")
    publish_timeout = 2.0
    pool = rig.pool(
        rig.config(
            host=tcp_proxy.host,
            port=tcp_proxy.port,
            connect_timeout=2,
            publish_timeout=publish_timeout,
        ),
        max_retries=2,
        initial_retry_delay=0.1,
        max_retry_delay=0.2,
    )
    publisher = rig.publisher(pool, "chimera.faults.spent")  # never reaches the broker
    pool.connect()
    tcp_proxy.refuse(True, how="unlisten")
    try:
        tcp_proxy.drop_all()
        publishing = pool.aio.publishing
        wait_for(lambda: publishing.health().last_error is not None, 10, "the drop noticed")
        time.sleep(2.0)  # several failed reconnects: more than max_retries
        started = time.monotonic()
        with pytest.raises(MessagingError) as raised:
            publisher.publish(query("spent-0"), ROUTING_KEY, message_id="spent-0")
        took = time.monotonic() - started
    finally:
        tcp_proxy.refuse(False)
    interrupted = [r for r in caplog.records if "interrupted" in r.getMessage()]
    print(f"raised {raised.value!r} after {took:.2f}s; {len(interrupted)} warnings", flush=True)
    assert isinstance(raised.value, ConnectionFailedError), raised.value
    assert took < publish_timeout / 2
    assert len(interrupted) <= 5


# -- 3. sockets cut by the network after N bytes, each direction ---------------------------------


def test_connections_cut_mid_stream_after_n_bytes_recover_without_loss(
    rig: Harness, names: Names, raw: RawBroker, tcp_proxy: TcpProxy
) -> None:
    ledger = Ledger("proxy cuts live connections after N bytes, both directions x2")
    exchange, queue = names.exchange, names.queue()
    pool = rig.pool(
        rig.config(host=tcp_proxy.host, port=tcp_proxy.port, connect_timeout=3, publish_timeout=30),
        max_retries=30,
        initial_retry_delay=0.2,
        max_retry_delay=1.0,
    )
    sub = rig.subscriber(pool, ledger, exchange, queue, prefetch_count=50, handler_delay=0.002)
    sub.run_in_thread()
    feeder = PublisherThread(
        rig.publisher(pool, exchange),
        ledger,
        prefix="cut",
        minimum=400,
        maximum=8000,
        batch=10,
        pause=0.02,
        settle_timeout=35,
        paced_by=lambda: sub.count,
    ).start()

    def reconnects() -> int:
        health = pool.health()
        return health.publishing.reconnects + health.consuming.reconnects

    first_fault: float | None = None
    rounds: list[tuple[Direction, int]] = [
        ("to_broker", 600),
        ("to_client", 600),
        ("to_broker", 4000),
        ("to_client", 4000),
    ]
    for n, (direction, n_bytes) in enumerate(rounds, start=1):
        wait_for(at_least(lambda: sub.count, 100 * n), 40, f"{100 * n} deliveries")
        before = reconnects()
        at = ledger.fault(f"cut after {n_bytes} bytes {direction} #{n}")
        first_fault = first_fault or at
        # Every live connection, and the next one to open (a reconnect may be cut too).
        tcp_proxy.cut_after(n_bytes, direction, once=True, live=True)
        wait_for(lambda b=before: reconnects() >= b + 2, 40, f"both connections cut #{n}")  # type: ignore[misc]
        tcp_proxy.cut_after(None)
        wait_for(lambda: pool.health().connected and sub.is_consuming, 40, "consuming again")
        ledger.recovered()
        confirmed = feeder.confirmed
        wait_for(at_least(lambda: feeder.confirmed, confirmed + 30), 40, "confirms again")

    feeder.stop()
    feeder.join(90)
    assert first_fault is not None
    print(f"proxy: {tcp_proxy.connections_total} connections; {pool.health()}", flush=True)
    result = finish(ledger, sub, raw, queue)
    assert_redeliveries_after_faults(sub, first_fault)
    assert not feeder.unexpected, f"raised outside MessagingError: {feeder.unexpected[:3]!r}"
    assert result.confirmed >= 400


# -- 4. a memory alarm: publishing blocked (and said so), consuming goes on ------------------


class GatedSubscriber(LedgerSubscriber):
    """A LedgerSubscriber whose handler waits until ``gate`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gate = threading.Event()
        super().__init__(*args, **kwargs)

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        self.gate.wait(60)
        super().handle_message(message, properties)


def _blocked_metric(connection: str) -> float | None:
    return REGISTRY.get_sample_value("chimera_connection_blocked", {"connection": connection})


def test_memory_alarm_blocks_publishing_boundedly_while_consuming_goes_on(
    rig: Harness, names: Names, raw: RawBroker
) -> None:
    ledger = Ledger("memory alarm (watermark 0): publish blocked, consume on")
    publish_timeout = 5.0
    exchange, queue = names.exchange, names.queue()
    pool = rig.pool(rig.config(publish_timeout=publish_timeout))
    sub = GatedSubscriber(pool, ledger, exchange=exchange, queue=queue, prefetch_count=10)
    rig.subscribers.append(sub)
    sub.run_in_thread()
    publisher = rig.publisher(pool, exchange)
    for i in range(100):
        publish_one(publisher, ledger, f"before-{i:03d}")
    assert ledger.result().confirmed == 100
    metric_name = f"{rig.connection_name}:publish"
    assert _blocked_metric(metric_name) == 0.0

    unexpected: list[BaseException] = []
    durations: list[float] = []
    with broker.memory_alarm():
        ledger.fault("memory alarm raised")
        sub.gate.set()  # the 100 queued before the alarm are consumed during it
        wait_for(lambda: sub.count >= 100, 30, "the queued messages consumed during the alarm")
        started = time.monotonic()
        blocked: dict[str, concurrent.futures.Future[str]] = {}
        for i in range(3):
            ledger.published(f"during-{i}")
            blocked[f"during-{i}"] = publisher.publish_nowait(
                query(f"during-{i}"), ROUTING_KEY, message_id=f"during-{i}"
            )
        for msg_id, future in blocked.items():
            settle_futures(ledger, {msg_id: future}, publish_timeout + SLACK + 5, unexpected)
            durations.append(time.monotonic() - started)
        health = pool.health()
        blocked_metric = _blocked_metric(metric_name)
        consume_metric = _blocked_metric(f"{rig.connection_name}:consume")
        consuming_during = sub.is_consuming
    cleared_at = time.monotonic()  # memory_alarm() returns once the broker cleared it
    wait_for(lambda: not pool.health().publishing.blocked, 30, "publishing unblocked")
    after = _blocked_metric(metric_name)
    for i in range(20):
        publish_one(publisher, ledger, f"after-{i:02d}", unexpected)
        if i == 0:
            ledger.recovered_after(time.monotonic() - cleared_at)
    result = finish(ledger, sub, raw, queue)

    print(f"publishes during the alarm took {[f'{d:.2f}' for d in durations]}s", flush=True)
    assert health.publishing.blocked, health
    assert not health.consuming.blocked, health
    assert health.connected, health
    assert blocked_metric == 1.0
    assert consume_metric == 0.0
    assert after == 0.0
    assert consuming_during
    assert not unexpected, unexpected
    assert all(d <= publish_timeout + SLACK for d in durations), durations
    # A publish the broker did not read cannot have been confirmed: each raised
    # (timeout: uncertain, and it may arrive once the alarm clears).
    assert result.confirmed == 120, result
    assert result.failed + result.uncertain == 3, result


# -- 5. handlers that fail, bodies that do not decode, and a message too big -------------------


class TransientError(RuntimeError):
    pass


class NotMineError(Exception):
    """Marked permanent: dead-lettered on the first failure."""


RETRY_DELAYS = (0.2, 0.5)


class FailingSubscriber(EventSubscriber):
    """Fails by message id prefix: ``t2-``/``t3-`` succeed on attempt 2/3, ``always-``
    never does, ``perm-`` raises a permanent error; ``work.unknown`` has no class."""

    def __init__(self, pool: ConnectionPool, ledger: Ledger, exchange: str, queue: str) -> None:
        self.ledger = ledger
        self.lock = threading.Lock()
        self.attempts: dict[str, list[int]] = {}
        super().__init__(
            pool,
            "faults-failing",
            exchange,
            queue,
            ["work.#"],
            prefetch_count=20,
            retry_delays=RETRY_DELAYS,
            permanent_errors=(NotMineError,),
        )

    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        if routing_key == "work.unknown":
            raise KeyError(routing_key)
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        msg_id = str(properties["message_id"])
        attempt = int(properties["attempt"])
        with self.lock:
            self.attempts.setdefault(msg_id, []).append(attempt)
        kind = msg_id.split("-")[0]
        if (kind == "t2" and attempt < 2) or (kind == "t3" and attempt < 3):
            raise TransientError(f"{msg_id} not yet (attempt {attempt})")
        if kind == "always":
            raise TransientError(f"{msg_id} never works")
        if kind == "perm":
            raise NotMineError(f"{msg_id} is not for me")
        self.ledger.delivered(msg_id, bool(properties["redelivered"]))


def test_failing_handlers_and_bad_input_end_retried_or_dead_lettered_with_why(
    rig: Harness, names: Names, raw: RawBroker
) -> None:
    ledger = Ledger("handler failures, bad bodies, unknown keys, oversized")
    exchange, queue = names.exchange, names.queue()
    retry_queues = [retry_queue_name(queue, n) for n in range(1, len(RETRY_DELAYS) + 1)]
    names.queues.update(retry_queues)
    pool = rig.pool(rig.config())
    sub = FailingSubscriber(pool, ledger, exchange, queue)
    thread = threading.Thread(target=sub.start_consuming, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sub.is_consuming, 20, "the consumer to attach")
        publisher = rig.publisher(pool, exchange)
        plan = {"ok": 20, "t2": 10, "t3": 10, "always": 5, "perm": 5}
        for kind, count in plan.items():
            for i in range(count):
                publish_one(publisher, ledger, f"{kind}-{i:02d}")

        bad = ConfirmingRawPublisher()
        good_body = query("raw").SerializeToString()
        raw_sent = {
            "malformed": ("work.item", b"\xff\xfe\x00garbage", "application/x-protobuf"),
            "json": ("work.item", b'{"query": "hi"}', "application/json"),
            "unknown": ("work.unknown", good_body, "application/x-protobuf"),
        }
        try:
            for kind, (key, body, content_type) in raw_sent.items():
                for i in range(3):
                    msg_id = f"{kind}-{i}"
                    ledger.published(msg_id)
                    bad.publish(exchange, key, body, message_id=msg_id, content_type=content_type)
                    ledger.confirmed(msg_id)
        finally:
            bad.close()

        # Over the size limit: refused before anything is sent (no connection is even opened).
        small = rig.pool(rig.config(max_message_bytes=64, connection_name="faults-small"))
        oversized = rig.publisher(small, exchange)
        ledger.published("oversized-0")
        with pytest.raises(InvalidMessageError, match="over the broker's limit") as refused:
            oversized.publish(query("x" * 200), ROUTING_KEY, message_id="oversized-0")
        ledger.failed("oversized-0", refused.value)
        assert not small.health().publishing.connected, "the oversized publish opened a connection"

        expected_dead = plan["always"] + plan["perm"] + 9
        expected_ok = plan["ok"] + plan["t2"] + plan["t3"]
        wait_for(lambda: raw.depth(f"{queue}.dlq") == expected_dead, 30, "the dead letters")
        wait_for(lambda: len(ledger.delivered_ids) == expected_ok, 30, "the successes")
        wait_for(lambda: all(raw.depth(q) == 0 for q in [queue, *retry_queues]), 20, "empty queues")
    finally:
        sub.stop()
        thread.join(30)
    assert not thread.is_alive()

    dead: dict[str, dict[str, Any]] = {}
    while (got := raw.get(f"{queue}.dlq")) is not None:
        _, props, _ = got
        msg_id = str(props.message_id)  # type: ignore[attr-defined]
        ledger.dead_lettered(msg_id)
        dead[msg_id] = dict(props.headers)  # type: ignore[attr-defined]
    result = ledger.check(work_queue_depth=raw.depth(queue))
    print_table([result])

    for q in retry_queues:
        assert raw.depth(q) == 0, f"{q} not empty"
    attempts = dict(sub.attempts)
    for i in range(plan["t2"]):
        assert attempts[f"t2-{i:02d}"] == [1, 2]
    for i in range(plan["t3"]):
        assert attempts[f"t3-{i:02d}"] == [1, 2, 3]
    for i in range(plan["ok"]):
        assert attempts[f"ok-{i:02d}"] == [1]
    assert result.duplicates == 0
    assert result.consumed == expected_ok
    assert result.dead_lettered == expected_dead
    assert result.failed == 1  # the oversized one, which went nowhere

    def expect(msg_id: str, error_type: str, n: int, key: str = ROUTING_KEY) -> dict[str, Any]:
        headers = dead[msg_id]
        assert headers[h.ERROR_TYPE] == error_type, (msg_id, headers)
        assert headers[h.ATTEMPTS] == n, (msg_id, headers)
        assert headers[h.FAILED_AGENT] == "faults-failing", (msg_id, headers)
        assert headers[h.ORIGINAL_EXCHANGE] == exchange, (msg_id, headers)
        assert headers[h.ORIGINAL_ROUTING_KEY] == key, (msg_id, headers)
        assert headers[h.ERROR_MESSAGE], (msg_id, headers)
        return headers

    this = __name__
    for i in range(plan["always"]):
        headers = expect(f"always-{i:02d}", f"{this}.TransientError", len(RETRY_DELAYS) + 1)
        assert headers[h.ERROR_MESSAGE] == f"always-{i:02d} never works"
        assert attempts[f"always-{i:02d}"] == [1, 2, 3]
    for i in range(plan["perm"]):
        expect(f"perm-{i:02d}", f"{this}.NotMineError", 1)
        assert attempts[f"perm-{i:02d}"] == [1]
    for i in range(3):
        expect(f"malformed-{i}", "messaging.errors.DecodeError", 1)
        json_headers = expect(f"json-{i}", "messaging.errors.DecodeError", 1)
        assert "application/json" in json_headers[h.ERROR_MESSAGE]
        expect(f"unknown-{i}", "messaging.errors.UnknownRoutingKeyError", 1, key="work.unknown")
    assert not any(msg_id.split("-")[0] in {"malformed", "json", "unknown"} for msg_id in attempts)


# -- 6. request/response: a dying responder, late replies, a restart under load --------------

RPC_KEY = "rpc.request"


def rpc_request(text: str, msg_id: str, correlation_id: str | None = None) -> ProtoMessage:
    return messages_pb2.MyRequest(
        text=text,
        metadata=messages_pb2.Metadata(message_id=msg_id, correlation_id=correlation_id or ""),
    )


def reply_text(reply: ProtoMessage) -> str:
    assert isinstance(reply, messages_pb2.MyResponse), type(reply)
    return reply.text


def record_responders(ledger: Ledger, agents: list[ChildAgent]) -> None:
    for agent in agents:
        for msg_id in agent.words("received"):
            ledger.delivered(msg_id)


def stop_responder(agent: ChildAgent) -> None:
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0, agent.lines()[-20:]


def check_rpc(ledger: Ledger, raw: RawBroker, queue: str, agents: list[ChildAgent]) -> Any:
    record_responders(ledger, agents)
    dlq = f"{queue}.dlq"
    while (got := raw.get(dlq)) is not None:
        ledger.dead_lettered(str(got[1].message_id))  # type: ignore[attr-defined]
    result = ledger.check(work_queue_depth=raw.depth(queue))
    print_table([result])
    return result


def test_request_times_out_promptly_when_the_responder_is_killed_before_answering(
    rig: Harness, names: Names, raw: RawBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger("rpc: responder SIGKILLed holding the request")
    caplog.set_level(logging.WARNING, logger="messaging.rpc")
    exchange, queue = names.exchange, names.queue("rpc")
    conn = f"{rig.connection_name}-responder"
    with children() as agents:
        first = ChildAgent("responder", exchange, queue, conn)
        agents.append(first)
        first.wait_line("consuming", 30)
        caller = rig.publisher(rig.pool(rig.config()), exchange)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ledger.published("stall-0")
            started = time.monotonic()
            pending = pool.submit(
                lambda: caller.request(rpc_request("stall", "stall-0", "corr-stall-0"), RPC_KEY, 2)
            )
            first.wait_line("received stall-0", 10)
            ledger.fault("responder SIGKILLed after receiving, before answering")
            first.kill()
            with pytest.raises(RequestTimeoutError, match="corr-stall-0"):
                pending.result(timeout=2 + SLACK + 5)
            took = time.monotonic() - started
        ledger.uncertain("stall-0")
        print(f"request raised RequestTimeoutError after {took:.2f}s", flush=True)
        assert took <= 2 + SLACK, f"the timeout took {took:.1f}s"

        # The request carried expiration = the caller's 2 s timeout: back in the
        # queue after the kill, it expires there (dead-lettered, reason
        # "expired") instead of being processed for a caller that gave up.
        wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, 15, "stall-0 to expire into the DLQ")
        second = ChildAgent("responder", exchange, queue, conn)
        agents.append(second)
        second.wait_line("consuming", 30)
        ledger.recovered()
        ledger.published("after-0")
        reply = caller.request(rpc_request("after", "after-0"), RPC_KEY, 20)
        ledger.confirmed("after-0")
        assert reply_text(reply) == "AFTER"
        stop_responder(second)
        assert "stall-0" not in second.words("answered"), "an expired request was processed"
    result = check_rpc(ledger, raw, queue, agents)
    assert result.dead_lettered == 1, "stall-0 should have expired into the DLQ"


def test_a_late_reply_never_reaches_the_next_caller(
    rig: Harness, names: Names, raw: RawBroker, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger("rpc: replies after the caller timed out x3")
    caplog.set_level(logging.WARNING, logger="messaging.rpc")
    exchange, queue = names.exchange, names.queue("rpc")
    with children() as agents:
        responder = ChildAgent("responder", exchange, queue, f"{rig.connection_name}-responder")
        agents.append(responder)
        responder.wait_line("consuming", 30)
        caller = rig.publisher(rig.pool(rig.config()), exchange)
        for i in range(3):
            late, following = f"late-{i}", f"next-{i}"
            ledger.published(late)
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                caller.request(rpc_request(f"sleep:2.5:{late}", late, f"corr-{late}"), RPC_KEY, 1)
            took = time.monotonic() - started
            assert took <= 1 + SLACK, f"the timeout took {took:.1f}s"
            ledger.uncertain(late)
            ledger.fault(f"{late} timed out; its reply comes while {following} waits")
            # The responder (prefetch 1) answers `late` first, while this caller waits.
            ledger.published(following)
            reply = caller.request(
                rpc_request(following, following, f"corr-{following}"), RPC_KEY, 20
            )
            ledger.confirmed(following)
            ledger.recovered()
            assert reply_text(reply) == following.upper(), "got another request's reply"
            responder.wait_line(f"answered {following}", 10)  # printed after its confirm
            assert responder.words("answered").index(late) < responder.words("answered").index(
                following
            ), "the late reply did not come while the next caller waited"
            wait_for(
                lambda late=late: any(  # type: ignore[misc]
                    "after its caller stopped waiting" in r.getMessage()
                    and f"corr-{late}" in r.getMessage()
                    for r in caplog.records
                ),
                10,
                f"the late reply to {late} dropped with a warning",
            )
        stop_responder(responder)
    result = check_rpc(ledger, raw, queue, agents)
    assert result.duplicates == 0


def test_concurrent_requests_while_the_responder_restarts_get_their_own_reply_or_an_error(
    rig: Harness, names: Names, raw: RawBroker
) -> None:
    ledger = Ledger("rpc: 64 concurrent requests, responder SIGKILLed and restarted")
    exchange, queue = names.exchange, names.queue("rpc")
    conn = f"{rig.connection_name}-responder"
    callers, per_caller = 8, 8
    with children() as agents:
        first = ChildAgent("responder", exchange, queue, conn)
        agents.append(first)
        first.wait_line("consuming", 30)
        caller = rig.publisher(rig.pool(rig.config()), exchange)
        outcomes: dict[str, str] = {}  # msg_id -> "ok" | error type
        wrong: list[tuple[str, str]] = []
        lock = threading.Lock()

        def call_many(c: int) -> None:
            for i in range(per_caller):
                msg_id = f"c{c}-{i}"
                text = f"sleep:0.03:{msg_id}"  # the responder takes 30 ms per request
                ledger.published(msg_id)
                try:
                    reply = caller.request(rpc_request(text, msg_id), RPC_KEY, 10)
                except MessagingError as exc:  # the request may or may not have been handled
                    ledger.uncertain(msg_id)
                    with lock:
                        outcomes[msg_id] = type(exc).__name__
                    continue
                ledger.confirmed(msg_id)
                with lock:
                    outcomes[msg_id] = "ok"
                    if reply_text(reply) != text.upper():
                        wrong.append((msg_id, reply_text(reply)))

        with concurrent.futures.ThreadPoolExecutor(callers) as threads:
            running = [threads.submit(call_many, c) for c in range(callers)]
            first.wait_count("answered", 12, 30)
            ledger.fault("responder SIGKILLed mid-stream, then restarted")
            first.kill()
            second = ChildAgent("responder", exchange, queue, conn)
            agents.append(second)
            second.wait_line("consuming", 30)
            ledger.recovered()
            for future in running:
                future.result(timeout=per_caller * (10 + SLACK))
        stop_responder(second)

    tally: dict[str, int] = {}
    for outcome in outcomes.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    before, after = len(first.words("received")), len(second.words("received"))
    print(
        f"request outcomes: {tally}; received {before} before the kill, {after} after", flush=True
    )
    assert after > 0, "the first responder answered everything before it was killed"
    assert not wrong, f"callers got someone else's reply: {wrong[:5]}"
    assert len(outcomes) == callers * per_caller
    assert set(tally) <= {"ok", "RequestTimeoutError", "ConnectionFailedError"}, tally
    assert tally.get("ok", 0) >= callers * per_caller - callers, tally
    check_rpc(ledger, raw, queue, agents)


# -- 7. SIGTERM to an agent process in the middle of a batch ---------------------------------


def test_sigterm_mid_batch_finishes_the_message_in_hand_and_loses_nothing(
    rig: Harness, names: Names, raw: RawBroker
) -> None:
    ledger = Ledger("SIGTERM to a worker process mid-batch (prefetch 20)")
    exchange, queue = names.exchange, names.queue()
    total = 200
    with children() as agents:
        worker = ChildAgent("worker", exchange, queue, f"{rig.connection_name}-worker")
        agents.append(worker)
        worker.wait_line("consuming", 30)
        pool = rig.pool(rig.config())
        publisher = rig.publisher(pool, exchange)
        futures: dict[str, concurrent.futures.Future[str]] = {}
        for i in range(total):
            msg_id = f"job-{i:03d}"
            ledger.published(msg_id)
            futures[msg_id] = publisher.publish_nowait(
                query(msg_id), ROUTING_KEY, message_id=msg_id
            )
        unexpected: list[BaseException] = []
        assert settle_futures(ledger, futures, 30, unexpected) == total, unexpected

        worker.wait_count("handled", 40, 30)
        ledger.fault("SIGTERM to the worker")
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        code = worker.wait(30)
        took = time.monotonic() - started
        handled = worker.words("handled")
    print(f"worker exited {code} {took:.2f}s after SIGTERM, {len(handled)} handled", flush=True)
    assert code == 0, worker.lines()[-20:]
    assert "stopped" in worker.lines()
    assert took <= 10, f"the worker took {took:.1f}s to stop"
    assert len(handled) < total, "the worker finished everything before the signal"
    assert len(set(handled)) == len(handled)
    for msg_id in handled:
        ledger.delivered(msg_id)
    # Everything it handled was acked, and the rest is back in the queue, unacked by no one.
    wait_for(lambda: raw.consumers(queue) == 0, 10, "the worker's consumer to go")
    left = raw.depth(queue)
    assert left == total - len(handled), f"{left} left in the queue, {len(handled)} handled"

    sub = rig.subscriber(rig.pool(rig.config()), ledger, exchange, queue, prefetch_count=50)
    sub.run_in_thread()
    ledger.recovered()
    result = finish(ledger, sub, raw, queue)
    assert result.duplicates == 0
    assert result.consumed == total
