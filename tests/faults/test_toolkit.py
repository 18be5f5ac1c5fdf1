"""The fault toolkit itself, against the real broker: the faults must be real faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from tests import broker_env
from tests.faults.toolkit import InvariantError, Ledger, TcpProxy, broker
from tests.faults.toolkit.ledger import format_table, load_results

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

DIRECT_URL = broker_env.URL


@pytest.fixture(scope="module", autouse=True)
def _broker_left_running() -> Iterator[None]:
    """Whatever happens in this module, the broker is up and alarm-free afterwards."""
    broker.ensure_running()
    yield
    broker.ensure_running()
    if broker.alarms():
        broker.set_memory_watermark(broker.DEFAULT_WATERMARK)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy() as p:
        yield p


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"toolkit-{uuid.uuid4().hex[:12]}"
    yield name
    broker.delete_queue(name)


@pytest.fixture
async def open_connections() -> AsyncIterator[list[AbstractConnection]]:
    """Connections a test opens; closed afterwards whatever state they are in."""
    connections: list[AbstractConnection] = []
    yield connections
    for connection in connections:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)


async def connect(url: str) -> tuple[AbstractConnection, asyncio.Event]:
    """An aio-pika connection and an event set when it is lost or closed.

    aio-pika's ``closed()`` only resolves on an explicit ``close()``; a lost
    connection shows up in ``close_callbacks``.
    """
    connection = await aio_pika.connect(url)
    lost = asyncio.Event()
    connection.close_callbacks.add(lambda *_: lost.set())
    return connection, lost


async def wait_closed(lost: asyncio.Event, timeout: float) -> float:
    """Seconds until ``lost`` is set; fails the test after ``timeout``."""
    started = time.monotonic()
    await asyncio.wait_for(lost.wait(), timeout)
    return time.monotonic() - started


# -- proxy -----------------------------------------------------------------------------------


async def test_proxy_passes_amqp_traffic(
    proxy: TcpProxy, queue_name: str, open_connections: list[AbstractConnection]
) -> None:
    connection = await aio_pika.connect(proxy.url(name=f"toolkit-pass-{queue_name}"))
    open_connections.append(connection)
    channel = await connection.channel()  # publisher confirms on
    queue = await channel.declare_queue(queue_name)
    assert proxy.active_connections == 1

    await channel.default_exchange.publish(
        aio_pika.Message(b"through the proxy", message_id="m-1"), routing_key=queue_name
    )
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.body == b"through the proxy"
    assert message.message_id == "m-1"

    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    assert proxy.bytes_to_broker > 0
    assert proxy.bytes_to_client > 0
    assert proxy.bytes_forwarded == proxy.bytes_to_broker + proxy.bytes_to_client
    await _eventually(lambda: proxy.active_connections == 0, 5)


async def test_drop_all_closes_the_client_connection(
    proxy: TcpProxy, open_connections: list[AbstractConnection]
) -> None:
    connection, lost = await connect(proxy.url(name="toolkit-drop"))
    open_connections.append(connection)
    await connection.channel()

    assert proxy.drop_all() == 1
    await wait_closed(lost, 10)
    assert proxy.active_connections == 0

    # The proxy still accepts new connections afterwards.
    again = await aio_pika.connect(proxy.url(name="toolkit-drop-again"))
    open_connections.append(again)
    await again.channel()
    assert proxy.connections_total == 2


async def test_stall_makes_heartbeat_notice_a_silent_peer(
    proxy: TcpProxy, open_connections: list[AbstractConnection]
) -> None:
    connection, lost = await connect(proxy.url(heartbeat=1, name="toolkit-stall"))
    open_connections.append(connection)
    await connection.channel()

    proxy.stall(None)
    assert proxy.stalled
    assert proxy.active_connections == 1  # sockets kept open: only silence
    # aiormq gives up after (heartbeat + 1) * 3 s of silence: ~6-7 s at heartbeat=1.
    seconds = await wait_closed(lost, 15)
    proxy.unstall()
    print(f"heartbeat=1 client noticed the stall after {seconds:.2f}s")


async def test_timed_stall_resumes_forwarding(
    proxy: TcpProxy, queue_name: str, open_connections: list[AbstractConnection]
) -> None:
    connection = await aio_pika.connect(proxy.url(name="toolkit-short-stall"))
    open_connections.append(connection)
    channel = await connection.channel()
    queue = await channel.declare_queue(queue_name)

    proxy.stall(1.0)
    started = time.monotonic()
    await channel.default_exchange.publish(aio_pika.Message(b"late"), routing_key=queue_name)
    assert time.monotonic() - started >= 0.5  # the confirm waited for the stall to end
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.body == b"late"


@pytest.mark.parametrize("direction", ["to_client", "to_broker"])
async def test_cut_after_aborts_the_handshake(proxy: TcpProxy, direction: str) -> None:
    proxy.cut_after(50, direction, once=True)  # type: ignore[arg-type]
    with pytest.raises((aio_pika.exceptions.AMQPConnectionError, ConnectionError)):
        await aio_pika.connect(proxy.url(name="toolkit-cut"), timeout=10)
    if direction == "to_client":
        assert proxy.bytes_to_client == 50
    else:
        assert proxy.bytes_to_broker == 50  # the header, then Start-Ok cut mid-frame
    # once=True: the next connection is not cut.
    connection = await aio_pika.connect(proxy.url(name="toolkit-cut-after"))
    await connection.channel()
    await connection.close()


async def test_cut_after_live_connection_mid_stream(
    proxy: TcpProxy, queue_name: str, open_connections: list[AbstractConnection]
) -> None:
    connection, lost = await connect(proxy.url(name="toolkit-cut-live"))
    open_connections.append(connection)
    channel = await connection.channel()
    await channel.declare_queue(queue_name)

    before = proxy.bytes_to_broker
    proxy.cut_after(1000, "to_broker", live=True)
    with contextlib.suppress(Exception):
        await channel.default_exchange.publish(
            aio_pika.Message(b"x" * 10_000), routing_key=queue_name, timeout=5
        )
    await wait_closed(lost, 10)
    assert proxy.bytes_to_broker - before == 1000
    proxy.cut_after(None)


@pytest.mark.parametrize("how", ["close", "reset", "unlisten"])
async def test_refuse_then_accept_again(proxy: TcpProxy, how: str) -> None:
    port = proxy.port
    proxy.refuse(True, how=how)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises((aio_pika.exceptions.AMQPConnectionError, ConnectionError)):
        await aio_pika.connect(proxy.url(), timeout=10)
    assert time.monotonic() - started < 5  # refused outright, not timed out
    if how == "unlisten":
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, port), timeout=2).close()
    assert proxy.active_connections == 0

    proxy.refuse(False)
    assert proxy.port == port
    connection = await aio_pika.connect(proxy.url(), timeout=10)
    await connection.channel()
    await connection.close()


def test_proxy_from_sync_code(queue_name: str) -> None:
    """Sync clients (pika) work through it too: the proxy has its own loop thread."""
    import pika

    with TcpProxy() as proxy:
        params = pika.URLParameters(proxy.url())
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            channel.queue_declare(queue_name)
            channel.basic_publish("", queue_name, b"sync")
            method, _, body = channel.basic_get(queue_name, auto_ack=True)
            assert body == b"sync"
            assert method is not None
            proxy.drop_all()
            with pytest.raises(pika.exceptions.AMQPError):
                connection.process_data_events(time_limit=5)
            assert not connection.is_open
        finally:
            if connection.is_open:
                connection.close()


# -- broker ----------------------------------------------------------------------------------


async def test_close_connections_matching_only_closes_the_named_one(
    open_connections: list[AbstractConnection],
) -> None:
    tag = uuid.uuid4().hex[:10]
    victim, victim_lost = await connect(f"{DIRECT_URL}?name=toolkit-{tag}-victim")
    bystander, bystander_lost = await connect(f"{DIRECT_URL}?name=toolkit-{tag}-bystander")
    open_connections.extend([victim, bystander])

    names = {c.client_name for c in await asyncio.to_thread(broker.list_connections)}
    assert {f"toolkit-{tag}-victim", f"toolkit-{tag}-bystander"} <= names

    closed = await asyncio.to_thread(broker.close_connections_matching, f"{tag}-victim")
    assert closed == 1
    await wait_closed(victim_lost, 10)
    await asyncio.sleep(0.5)
    assert not bystander_lost.is_set()
    await bystander.channel()  # still usable


async def test_queue_info_reports_depth_consumers_and_arguments(
    queue_name: str, open_connections: list[AbstractConnection]
) -> None:
    assert await asyncio.to_thread(broker.queue_info, queue_name) is None
    connection = await aio_pika.connect(DIRECT_URL)
    open_connections.append(connection)
    channel = await connection.channel()
    await channel.declare_queue(
        queue_name, arguments={"x-dead-letter-exchange": "nowhere.dlx", "x-message-ttl": 60000}
    )
    for i in range(3):
        await channel.default_exchange.publish(
            aio_pika.Message(f"{i}".encode()), routing_key=queue_name
        )

    info = await asyncio.to_thread(broker.queue_info, queue_name)
    assert info is not None
    assert info["messages"] == 3
    assert info["consumers"] == 0
    assert info["arguments"] == {"x-dead-letter-exchange": "nowhere.dlx", "x-message-ttl": 60000}


def test_app_stopped_restarts_the_broker() -> None:
    """The one restart in this module: quick, and the broker is back afterwards."""
    with broker.app_stopped() as timings:
        assert not broker.port_open()
    assert broker.port_open()
    print(
        f"stop_app {timings.stop_seconds:.2f}s, down {timings.down_seconds:.2f}s,"
        f" start_app+await_startup {timings.start_seconds:.2f}s"
    )


def test_memory_alarm_is_raised_and_cleared() -> None:
    started = time.monotonic()
    with broker.memory_alarm():
        raised = time.monotonic() - started
        assert any("memory" in alarm for alarm in broker.alarms())
        left = time.monotonic()
    assert broker.alarms() == []
    print(f"memory alarm raised in {raised:.2f}s, cleared in {time.monotonic() - left:.2f}s")


# -- ledger (pure) ---------------------------------------------------------------------------


@pytest.fixture
def results_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "faults.jsonl"
    monkeypatch.setenv("CHIMERA_FAULT_RESULTS", str(path))
    return path


def _publish_all(ledger: Ledger, ids: list[str]) -> None:
    for msg_id in ids:
        ledger.published(msg_id)
        ledger.confirmed(msg_id)


def test_ledger_clean_run_passes_and_is_recorded(results_file: Path) -> None:
    ledger = Ledger("clean")
    _publish_all(ledger, ["a", "b", "c"])
    for msg_id in ["a", "b"]:
        ledger.delivered(msg_id)
    ledger.dead_lettered("c")

    result = ledger.check(work_queue_depth=0)

    assert (result.published, result.confirmed, result.consumed, result.dead_lettered) == (
        3,
        3,
        2,
        1,
    )
    assert result.missing == 0
    assert result.ok
    assert [r.scenario for r in load_results(results_file)] == ["clean"]


def test_ledger_lost_confirmed_message_fails(results_file: Path) -> None:
    ledger = Ledger("lossy")
    _publish_all(ledger, ["m1", "m2", "m3"])
    ledger.delivered("m1")
    ledger.delivered("m3")

    with pytest.raises(InvariantError, match=r"1 confirmed message\(s\) lost.*\[m2\]") as info:
        ledger.check(work_queue_depth=0)
    assert info.value.result.missing == 1
    recorded = json.loads(results_file.read_text().splitlines()[-1])
    assert recorded["ok"] is False  # failing runs are recorded too


def test_ledger_duplicate_without_fault_fails(results_file: Path) -> None:
    ledger = Ledger("dup")
    _publish_all(ledger, ["m1"])
    ledger.delivered("m1")
    ledger.delivered("m1", redelivered=True)

    with pytest.raises(InvariantError, match=r"duplicate.*no fault.*\[m1\]"):
        ledger.check(work_queue_depth=0)


def test_ledger_duplicate_explained_by_fault_passes(results_file: Path) -> None:
    ledger = Ledger("dup-after-drop")
    _publish_all(ledger, ["m1", "m2"])
    ledger.delivered("m1")
    ledger.fault("connection dropped")
    ledger.delivered("m1", redelivered=True)
    ledger.delivered("m2")
    ledger.recovered_after(1.5)

    result = ledger.check(work_queue_depth=0)
    assert (result.duplicates, result.redelivered, result.faults) == (1, 1, 1)
    assert result.recover_seconds == 1.5


def test_ledger_message_from_nowhere_fails(results_file: Path) -> None:
    ledger = Ledger("phantom")
    ledger.published("m1")
    ledger.failed("m1", RuntimeError("nacked"))
    ledger.delivered("m1")  # raised at publish, yet delivered
    ledger.delivered("ghost")  # never published

    with pytest.raises(InvariantError, match=r"never confirmed or in flight.*\[ghost, m1\]"):
        ledger.check(work_queue_depth=0)


def test_ledger_uncertain_may_arrive_or_not(results_file: Path) -> None:
    ledger = Ledger("in-flight")
    for msg_id in ["m1", "m2", "m3", "m4"]:
        ledger.published(msg_id)
    ledger.confirmed("m1")
    ledger.fault("broker restarted")
    assert ledger.mark_in_flight_uncertain() == 3
    ledger.confirmed("m4")  # a late confirm wins over uncertain
    ledger.delivered("m1")
    ledger.delivered("m2")  # uncertain and arrived: fine
    ledger.delivered("m4")  # m3 uncertain and lost: fine

    result = ledger.check(work_queue_depth=0)
    assert (result.confirmed, result.uncertain, result.consumed) == (2, 2, 3)


def test_ledger_unresolved_publish_and_leftover_queue_fail(results_file: Path) -> None:
    ledger = Ledger("sloppy")
    ledger.published("m1")

    with pytest.raises(InvariantError) as info:
        ledger.check(work_queue_depth=2)
    assert "no outcome" in str(info.value)
    assert "not drained: 2" in str(info.value)


def test_ledger_lists_at_most_twenty_ids(results_file: Path) -> None:
    ledger = Ledger("many-lost")
    _publish_all(ledger, [f"m{i:03d}" for i in range(50)])

    with pytest.raises(InvariantError, match=r"\(\+30 more\)"):
        ledger.check(work_queue_depth=0)


def test_ledger_is_thread_safe(results_file: Path) -> None:
    import threading

    ledger = Ledger("threads")

    def work(offset: int) -> None:
        for i in range(2000):
            msg_id = f"{offset}-{i}"
            ledger.published(msg_id)
            ledger.confirmed(msg_id)
            ledger.delivered(msg_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = ledger.check(work_queue_depth=0, record=False)
    assert (result.published, result.consumed, result.duplicates) == (8000, 8000, 0)
    assert not results_file.exists()


def test_report_script_prints_latest_row_per_scenario(
    results_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts.fault_report import main

    for n in (1, 2):
        ledger = Ledger("drop")
        _publish_all(ledger, [f"m{i}" for i in range(n)])
        for i in range(n):
            ledger.delivered(f"m{i}")
        ledger.check(work_queue_depth=0)
    capsys.readouterr()

    assert main(["--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| scenario")
    assert len(out) == 3  # header, separator, the latest "drop" row only
    assert "| drop " in out[2]
    assert out[2].split("|")[2].strip() == "2"
    assert "time to recover" in format_table([])


async def _eventually(condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
