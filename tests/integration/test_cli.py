"""The chimera-bus CLI against the real broker, through typer's test runner."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pika
import pika.exceptions
import pytest
from typer.testing import CliRunner, Result

from messaging import ConnectionPool, EventPublisher
from messaging.cli import app
from messaging.config import RabbitMQConfig
from tests import broker_env
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for

ENV = {
    "RABBITMQ__HOST": broker_env.HOST,
    "RABBITMQ__PORT": str(broker_env.PORT),
    "RABBITMQ__USERNAME": "guest",
    "RABBITMQ__PASSWORD": "guest",
    "RABBITMQ__VHOST": "/",
    "COLUMNS": "250",  # rich wraps tables at the terminal width
    "CHIMERA_EXCHANGE": None,
}


def cli(*args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner(env={**ENV, **env}).invoke(app, list(args), input=input)


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def dead_letters(
    pool: ConnectionPool, raw: RawBroker, exchange: str, queue: str, texts: list[str]
) -> None:
    """Make ``texts`` dead letters of ``queue``: its subscriber refuses each of them."""
    sub = Recorder(
        pool, exchange=exchange, queue=queue, routing_keys=["query.*"], fail_on=texts
    ).run_in_thread()
    publisher = EventPublisher(pool, "asker", exchange)
    try:
        for n, text in enumerate(texts):
            publisher.publish(query(text, correlation_id=f"corr-{n}"), "query.request")
        wait_for(lambda: raw.depth(f"{queue}.dlq") == len(texts), what="the dead letters")
    finally:
        publisher.close()
        sub.stop_and_join()


def rejected_by_broker(raw: RawBroker, exchange: str, queue: str, texts: list[str]) -> None:
    """Dead letters the broker makes itself (reject without requeue): they carry ``x-death``.

    The queue must exist already (its subscriber declared it).
    """
    dlq_before = raw.depth(f"{queue}.dlq")
    for n, text in enumerate(texts):
        raw.publish(
            exchange, "query.request", query(text).SerializeToString(),
            type="chimera.v1.QueryRequest", message_id=f"rejected-{n}",
            correlation_id=f"corr-r{n}",
        )  # fmt: skip
        method, _, _ = raw.channel.basic_get(queue)
        assert method is not None
        raw.channel.basic_reject(method.delivery_tag, requeue=False)
    wait_for(lambda: raw.depth(f"{queue}.dlq") == dlq_before + len(texts), what="x-death letters")


def put_in_dlq(raw: RawBroker, queue: str, body: bytes, **props: object) -> None:
    """A dead letter placed by hand; waits until the DLQ counts it (pika sends unconfirmed)."""
    dlq = f"{queue}.dlq"
    before = raw.depth(dlq)
    raw.publish("", dlq, body, **props)
    wait_for(lambda: raw.depth(dlq) == before + 1, what="the hand-made dead letter")


# -- status -------------------------------------------------------------------


def test_status_ok_when_consumed_and_no_dead_letters(pool: ConnectionPool, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    try:
        result = cli("status", "--queue", queue, "--exchange", exchange)
    finally:
        sub.stop_and_join()
    assert result.exit_code == 0, result.output
    assert queue in result.output
    assert "OK" in result.output


def test_status_exit_1_names_each_problem(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue, missing = names.exchange, names.queue(), names.queue("missing")
    dead_letters(pool, raw, exchange, queue, ["bad"])  # and its subscriber is gone
    result = cli("status", "-q", queue, "-q", missing, "-e", exchange)
    assert result.exit_code == 1, result.output
    assert "no consumers" in result.output
    assert "1 dead letter(s)" in result.output
    assert "queue does not exist" in result.output
    assert "WRONG" in result.output

    no_exchange = cli("status", "-e", names.new_exchange("absent"))
    assert no_exchange.exit_code == 1
    assert "MISSING" in no_exchange.output


def test_status_exit_2_with_one_clear_line_when_the_broker_is_unreachable() -> None:
    down = cli("status", RABBITMQ__PORT="1")
    assert down.exit_code == 2
    assert "ConnectionFailedError" in down.output
    assert "Traceback" not in down.output

    refused = cli("status", RABBITMQ__PASSWORD="wrong")
    assert refused.exit_code == 2
    assert "AuthenticationFailedError" in refused.output
    assert "Traceback" not in refused.output


# -- publish and tail -----------------------------------------------------------


def test_publish_reaches_the_subscriber_with_its_ids(pool: ConnectionPool, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.*"]).run_in_thread()
    try:
        short = cli(
            "publish", "QueryRequest", "query.request", '{"query": "short"}',
            "-e", exchange, "--correlation-id", "corr-cli", "--agent", "ops",
        )  # fmt: skip
        full = cli(
            "publish", "chimera.v1.QueryRequest", "query.request", '{"query": "full"}',
            "-e", exchange,
        )  # fmt: skip
        assert short.exit_code == 0, short.output
        assert full.exit_code == 0, full.output
        wait_for(lambda: len(sub.received) == 2, what="both messages")
    finally:
        sub.stop_and_join()
    by_text = {getattr(m, "query", ""): props for m, props in sub.received}
    assert by_text["short"]["correlation_id"] == "corr-cli"
    assert by_text["short"]["app_id"] == "ops"
    assert by_text["short"]["message_id"] == short.output.strip()
    assert by_text["full"]["message_id"] == full.output.strip()
    assert by_text["full"]["correlation_id"]  # filled in from the metadata


def test_publish_errors_exit_2(pool: ConnectionPool, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.*"]).run_in_thread()
    sub.stop_and_join()  # the exchange stays, bound for query.* only

    unroutable = cli("publish", "QueryRequest", "nobody.listens", '{"query": "x"}', "-e", exchange)
    assert unroutable.exit_code == 2
    assert "UnroutableMessageError" in unroutable.output

    bad_json = cli("publish", "QueryRequest", "query.request", '{"qury": "x"}', "-e", exchange)
    assert bad_json.exit_code == 2
    assert "InvalidMessageError" in bad_json.output

    bad_type = cli("publish", "NoSuchMessage", "query.request", "{}", "-e", exchange)
    assert bad_type.exit_code == 2
    assert "unknown message type" in bad_type.output

    no_exchange = cli(
        "publish", "QueryRequest", "query.request", "{}", "-e", names.new_exchange("absent")
    )
    assert no_exchange.exit_code == 2
    assert "does not exist" in no_exchange.output
    assert "Traceback" not in unroutable.output + bad_json.output + no_exchange.output


def test_tail_prints_published_messages_decoded(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    # A subscriber declares the exchange (and gives the CLI's publish a bound queue).
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    # tail in its own process (the real entry point): the runner captures one command at a time.
    tail = subprocess.Popen(
        [sys.executable, "-c", "from messaging.cli import main; main()",
         "tail", "query.*", "-e", exchange, "--count", "2", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **{k: v for k, v in ENV.items() if v}, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert tail.stdout is not None
        first = tail.stdout.readline()
        assert "tailing" in first, first  # bound and consuming from here on
        published = cli(
            "publish", "QueryRequest", "query.request", '{"query": "What is the ZEC price?"}',
            "-e", exchange, "-c", "corr-tail",
        )  # fmt: skip
        assert published.exit_code == 0, published.output
        raw.publish(
            exchange, "query.garbage", b"\xff\x00not protobuf", type="chimera.v1.QueryRequest"
        )
        out, _ = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
        sub.stop_and_join()
    assert tail.returncode == 0, out
    assert "What is the ZEC price?" in out
    assert "corr-tail" in out
    assert published.output.strip() in out  # the message id
    assert "query.garbage" in out
    assert "undecodable" in out
    assert "ff 00" in out
    assert "2 message(s)" in out


def test_tail_stops_at_its_timeout(names: Names, raw: RawBroker) -> None:
    exchange = names.exchange
    raw.channel.exchange_declare(exchange, "topic", durable=True)
    result = cli("tail", "#", "-e", exchange, "--timeout", "0.5")
    assert result.exit_code == 0, result.output
    assert "0 message(s)" in result.output


# -- dead letters --------------------------------------------------------------


def test_dlq_list_and_show_read_without_losing(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    texts = [f"bad {n}" for n in range(3)]
    dead_letters(pool, raw, exchange, queue, texts)
    rejected_by_broker(raw, exchange, queue, ["rejected"])
    texts.append("rejected")
    put_in_dlq(
        raw, queue, query("annotated").SerializeToString(),
        type="chimera.v1.QueryRequest", message_id="annotated-1",
        headers={
            "x-chimera-error-type": "ValueError",
            "x-chimera-error-message": "price feed down",
            "x-chimera-failed-agent": "data",
            "x-chimera-original-exchange": exchange,
            "x-chimera-original-routing-key": "query.request",
            "x-chimera-attempts": 3,
        },
    )  # fmt: skip

    listed = cli("dlq", "list", queue)
    assert listed.exit_code == 0, listed.output
    assert "rejected from " + queue in listed.output  # from x-death
    assert "refusing 'bad 0'" in listed.output  # from the subscriber
    assert "ValueError" in listed.output
    assert "corr-0" in listed.output
    assert "corr-r0" in listed.output
    assert "5 dead letter(s), 5 shown" in listed.output
    assert raw.depth(f"{queue}.dlq") == 5

    shown = cli("dlq", "show", f"{queue}.dlq", "--limit", "10")
    assert shown.exit_code == 0, shown.output
    for text in [*texts, "annotated"]:
        assert text in shown.output
    assert "x-death: reason=rejected" in shown.output
    assert f"exchange={exchange}" in shown.output
    assert "x-chimera-error-message: price feed down" in shown.output
    assert "x-chimera-attempts: 3" in shown.output

    limited = cli("dlq", "show", queue, "-n", "1")
    assert "5 dead letter(s), 1 shown" in limited.output
    assert raw.depth(f"{queue}.dlq") == 5  # every one put back


def test_dlq_replay_puts_every_dead_letter_back_and_they_are_handled(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    texts = [f"retry me {n}" for n in range(25)]
    dead_letters(pool, raw, exchange, queue, texts)
    rejected = [f"rejected {n}" for n in range(5)]
    rejected_by_broker(raw, exchange, queue, rejected)  # only x-death says where from
    # One that says where it came from in the bus's own headers, with no x-death.
    put_in_dlq(
        raw, queue, query("by header").SerializeToString(),
        type="chimera.v1.QueryRequest", message_id="by-header", correlation_id="corr-h",
        headers={
            "x-chimera-original-exchange": exchange,
            "x-chimera-original-routing-key": "query.request",
        },
    )  # fmt: skip
    before = raw.depth(f"{queue}.dlq")
    assert before == 31

    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.*"]).run_in_thread()
    try:
        result = cli("dlq", "replay", queue, "--yes")
        assert result.exit_code == 0, result.output
        assert f"replayed {before} of {before}" in result.output
        wait_for(lambda: len(sub.received) == before, what="every replayed message")
    finally:
        sub.stop_and_join()
    assert raw.depth(f"{queue}.dlq") == 0
    assert sorted(sub.texts()) == sorted([*texts, *rejected, "by header"])
    props = {getattr(m, "query", ""): p for m, p in sub.received}
    assert props["retry me 0"]["correlation_id"] == "corr-0"
    assert props["by header"]["message_id"] == "by-header"
    assert props["by header"]["correlation_id"] == "corr-h"
    assert props["retry me 0"]["type"] == "chimera.v1.QueryRequest"
    assert props["rejected 0"]["message_id"] == "rejected-0"
    assert props["rejected 0"]["correlation_id"] == "corr-r0"
    assert not any(k.startswith("x-death") for k in props["rejected 0"]["headers"])


def test_dlq_replay_leaves_what_it_cannot_deliver(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["ok to replay"])
    put_in_dlq(
        raw, queue, b"\x01", message_id="stuck",
        headers={
            "x-chimera-original-exchange": exchange,
            "x-chimera-original-routing-key": "nobody.binds.this",
        },
    )  # fmt: skip
    put_in_dlq(raw, queue, b"\x02", message_id="from-nowhere")

    result = cli("dlq", "replay", queue, "--yes")
    assert result.exit_code == 1, result.output
    assert "replayed 1 of 3" in result.output
    assert "UnroutableMessageError" in result.output
    assert "from-nowhere" in result.output
    assert raw.depth(f"{queue}.dlq") == 2  # both still there
    assert raw.depth(queue) == 1  # the replayed one, waiting for a subscriber


def test_dlq_replay_respects_limit_and_confirmation(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["a", "b", "c"])

    declined = cli("dlq", "replay", queue, input="n\n")
    assert declined.exit_code != 0
    assert raw.depth(f"{queue}.dlq") == 3

    result = cli("dlq", "replay", queue, "--limit", "2", input="y\n")
    assert result.exit_code == 0, result.output
    assert "replayed 2 of 2" in result.output
    assert raw.depth(f"{queue}.dlq") == 1
    assert raw.depth(queue) == 2


def test_dlq_purge_asks_unless_yes(pool: ConnectionPool, raw: RawBroker, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["x", "y"])

    declined = cli("dlq", "purge", queue, input="n\n")
    assert declined.exit_code != 0
    assert raw.depth(f"{queue}.dlq") == 2

    purged = cli("dlq", "purge", f"{queue}.dlq", "--yes")
    assert purged.exit_code == 0, purged.output
    assert "purged 2 dead letter(s)" in purged.output
    assert raw.depth(f"{queue}.dlq") == 0


def test_dlq_of_a_missing_queue_exit_2(names: Names) -> None:
    result = cli("dlq", "list", names.queue("absent"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


# -- demo ------------------------------------------------------------------------


def _demo_installed() -> bool:
    try:
        return importlib.util.find_spec("messaging.demo.pipeline") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _demo_installed(), reason="messaging.demo.pipeline is not written yet")
def test_demo_runs_the_pipeline() -> None:
    result = cli("demo", "--questions", "What is the ZEC price?")
    assert result.exit_code == 0, result.output


# -- queue delete -----------------------------------------------------------------


def queue_exists(name: str) -> bool:
    """A passive declare on a connection of its own (a miss closes the channel)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters(*broker_env.BROKER))
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def test_queue_delete_removes_the_family_after_asking(raw: RawBroker, names: Names) -> None:
    queue, neighbour = names.queue("old_name"), names.queue("old_name2")
    family = [queue, f"{queue}.dlq", f"{queue}.retry.1", f"{queue}.retry.2"]
    names.queues.update(family)
    for name in [*family, neighbour, f"{queue}.retry.4"]:  # .retry.4: not in the ladder
        names.queues.add(name)
        raw.channel.queue_declare(name, durable=True)
    raw.publish("", queue, b"old work")
    raw.publish("", f"{queue}.dlq", b"old dead letter")
    wait_for(lambda: raw.depth(queue) == 1 and raw.depth(f"{queue}.dlq") == 1, what="messages")

    declined = cli("queue", "delete", queue, input="n\n")
    assert declined.exit_code != 0
    assert "Delete these 4 queue(s) and the 2 message(s)" in declined.output
    for name in family:
        assert name in declined.output
    assert raw.depth(queue) == 1  # nothing deleted

    deleted = cli("queue", "delete", queue, input="y\n")
    assert deleted.exit_code == 0, deleted.output
    assert f"deleted {queue} (1 message(s))" in deleted.output
    assert f"deleted {queue}.dlq (1 message(s))" in deleted.output
    remaining = {name for name in [*family, neighbour, f"{queue}.retry.4"] if queue_exists(name)}
    assert remaining == {neighbour, f"{queue}.retry.4"}

    again = cli("queue", "delete", queue, "--yes")
    assert again.exit_code == 2
    assert "does not exist" in again.output


def test_queue_delete_refuses_a_queue_in_use_and_a_dlq_name(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    try:
        busy = cli("queue", "delete", queue, "--yes")
    finally:
        sub.stop_and_join()
    assert busy.exit_code == 2
    assert "still has consumers" in busy.output
    assert queue_exists(queue)

    by_dlq = cli("queue", "delete", f"{queue}.dlq", "--yes")
    assert by_dlq.exit_code == 2
    assert "give the work queue's name" in by_dlq.output

    gone = cli("queue", "delete", queue, "--yes")  # its subscriber has stopped
    assert gone.exit_code == 0, gone.output
    assert not queue_exists(queue)
    assert not queue_exists(f"{queue}.dlq")


def test_status_names_each_consumers_connection_or_says_it_cannot(
    pool: ConnectionPool, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    try:
        # This broker runs here (a private node, RABBITMQ_NODENAME), and has no
        # management plugin: rabbitmqctl answers.
        told = cli("status", "-q", queue, "-e", exchange, "--management-url", "http://127.0.0.1:1")
        as_json = cli("status", "-q", queue, "-e", exchange, "--json")
        # Without rabbitmqctl on PATH and no management API, it says it cannot tell.
        blind = cli(
            "status", "-q", queue, "-e", exchange, "--management-url", "http://127.0.0.1:1",
            PATH="/nonexistent",
        )  # fmt: skip
    finally:
        sub.stop_and_join()
    assert told.exit_code == 0, told.output
    assert "consumers  from rabbitmqctl" in told.output
    (line,) = [line for line in told.output.splitlines() if line.startswith(f"  {queue}: ")]
    assert pool.config.connection_name in line  # the subscriber's connection, by name
    assert "127.0.0.1:" in line

    broker_line, queue_line = (json.loads(line) for line in as_json.stdout.splitlines())
    assert broker_line["consumers_from"].startswith("rabbitmqctl")
    (consumer,) = queue_line["consumer_details"]
    assert pool.config.connection_name in consumer["connection_name"]

    assert blind.exit_code == 0, blind.output
    assert "connection names unknown" in blind.output
    assert "no management API at http://127.0.0.1:1" in blind.output
    assert "rabbitmqctl is not installed here" in blind.output


# -- --url -------------------------------------------------------------------------


def test_url_wins_over_the_variables_and_fails_over_in_order(names: Names) -> None:
    here = f"amqp://guest:guest@{broker_env.HOST}:{broker_env.PORT}/"
    down = "amqp://guest:guest@127.0.0.1:1/"
    result = cli("status", "--url", f"{down},{here}", "--json", RABBITMQ__PORT="1")
    assert result.exit_code in (0, 1), result.output  # reachable; the exchange may be missing
    broker = json.loads(result.stdout.splitlines()[0])
    assert broker["node"] == f"{broker_env.HOST}:{broker_env.PORT}"  # the second, after the first
    assert "guest:guest" not in result.output

    for command in (["dlq", "list", names.queue()], ["top", "--once", "-q", names.queue()]):
        reached = cli(*command, "--url", here, RABBITMQ__PORT="1")
        assert "ConnectionFailedError" not in reached.output, reached.output

    bad = cli("status", "--url", "http://bob:s3cret-pw@somewhere/")
    assert bad.exit_code == 2
    assert "error: ConfigurationError: --url:" in bad.output
    assert "s3cret-pw" not in bad.output
    assert "Traceback" not in bad.output
