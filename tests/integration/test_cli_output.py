"""The CLI's output is safe from what senders write, and scriptable (--json, pipes).

Hostile values (Rich markup, terminal escape sequences, newlines) go in through
raw pika, as another producer on the broker would send them, and the tests
look at what reaches stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from messaging import ConnectionPool
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder, query, wait_for
from tests.integration.test_cli import ENV, cli, dead_letters, pool, put_in_dlq

__all__ = ["pool"]  # the fixture, imported so pytest finds it here

ESC = "\x1b"
HOSTILE_ID = "id[/]\x1b[2J\x1b]0;pwned\x07[bold red]x"
HOSTILE_CORR = "corr\x1b[31m\r\nFAKE LINE"
LONG_REASON = "the price feed answered 503 " + "and kept doing so " * 12 + "END-OF-REASON"


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def records(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(output)]


def hostile_dead_letter(raw: RawBroker, queue: str) -> None:
    put_in_dlq(
        raw, queue, query("hostile").SerializeToString(),
        type="chimera.v1.QueryRequest", message_id=HOSTILE_ID, correlation_id=HOSTILE_CORR,
        headers={
            "x-chimera-error-type": "ValueError",
            "x-chimera-error-message": LONG_REASON + "\x1b[8m",
            "x-evil\x1b[5m": "header\x1b[41m",
        },
    )  # fmt: skip


def test_publish_prints_an_id_with_markup_and_escapes_as_inert_text(
    pool: ConnectionPool, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["query.*"]).run_in_thread()
    try:
        body = json.dumps({"query": "q", "metadata": {"message_id": "m[/]1\x1b[31m"}})
        result = cli("publish", "QueryRequest", "query.request", body, "-e", exchange)
        wait_for(lambda: len(sub.received) == 1, what="the published message")
        as_json = cli(
            "publish", "QueryRequest", "query.request", '{"query": "j"}', "-e", exchange, "--json"
        )
        wait_for(lambda: len(sub.received) == 2, what="the second message")
    finally:
        sub.stop_and_join()
    assert result.exit_code == 0, result.output  # it used to crash on "[/]" after the confirm
    assert result.output.strip() == "m[/]1\\x1b[31m"
    assert ESC not in result.output
    assert sub.received[0][1]["message_id"] == "m[/]1\x1b[31m"
    assert as_json.exit_code == 0, as_json.output
    (sent,) = records(as_json.output)
    assert sent == {
        "message_id": sub.received[1][1]["message_id"],
        "routing_key": "query.request",
        "exchange": exchange,
    }


def test_dlq_list_and_show_escape_control_characters(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["plain"])
    hostile_dead_letter(raw, queue)

    listed = cli("dlq", "list", queue, COLUMNS="80")
    shown = cli("dlq", "show", queue, COLUMNS="80")
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert ESC not in result.output
        assert "\x07" not in result.output
        assert "\r" not in result.output
        assert "id[/]\\x1b[2J\\x1b]0;pwned\\x07[bold red]x" in result.output
        assert "corr\\x1b[31m\\x0d\\x0aFAKE LINE" in result.output
    assert "x-evil" not in listed.output  # list shows why, not every header
    assert "END-OF-REASON\\x1b[8m" in shown.output

    # Piped (not a terminal): one line per dead letter, never wrapped at 80 columns,
    # tab-separated, so grep finds the whole reason on the line with the id.
    rows = [line for line in lines(listed.output) if "\t" in line]
    header = ["#", "message_id", "correlation_id", "type", "routing key", "why"]
    assert rows[0].split("\t") == header
    (hostile_row,) = [row for row in rows if "pwned" in row]
    assert "END-OF-REASON" in hostile_row
    assert len(hostile_row.split("\t")) == 6
    assert raw.depth(f"{queue}.dlq") == 2


def test_dlq_list_and_show_json_one_object_per_line(
    pool: ConnectionPool, raw: RawBroker, names: Names
) -> None:
    exchange, queue = names.exchange, names.queue()
    dead_letters(pool, raw, exchange, queue, ["bad 0", "bad 1"])
    hostile_dead_letter(raw, queue)

    listed = cli("dlq", "list", queue, "--json")
    assert listed.exit_code == 0, listed.output
    entries = records(listed.stdout)
    assert [e["position"] for e in entries] == [1, 2, 3]
    assert entries[0]["correlation_id"] == "corr-0"
    assert entries[0]["original_routing_key"] == "query.request"
    assert entries[0]["original_exchange"] == exchange
    assert "refusing 'bad 0'" in entries[0]["why"]
    assert entries[2]["message_id"] == HOSTILE_ID  # exact, escaped only by JSON itself
    assert ESC not in listed.stdout  # JSON's \u001b, not the raw byte
    assert entries[2]["x-chimera-error-type"] == "ValueError"

    shown = cli("dlq", "show", queue, "--json", "-n", "3")
    assert shown.exit_code == 0, shown.output
    full = records(shown.stdout)
    assert len(full) == 3
    assert full[0]["body"]["query"] == "bad 0"
    assert full[2]["headers"]["x-evil\x1b[5m"] == "header\x1b[41m"
    assert full[2]["correlation_id"] == HOSTILE_CORR
    assert raw.depth(f"{queue}.dlq") == 3


def test_tail_json_and_escapes(pool: ConnectionPool, raw: RawBroker, names: Names) -> None:
    exchange, queue = names.exchange, names.queue()
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    env = {**os.environ, **{k: v for k, v in ENV.items() if v}, "PYTHONUNBUFFERED": "1"}
    try:
        outputs = []
        for extra in (["--json"], []):
            tail = subprocess.Popen(
                [sys.executable, "-c", "from messaging.cli import main; main()",
                 "tail", "query.*", "-e", exchange, "--count", "2", "--timeout", "30", *extra],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip
            try:
                # Bound and consuming once it says so: on stderr with --json (stdout
                # holds only JSON lines), on stdout otherwise.
                said = tail.stderr if extra else tail.stdout
                assert said is not None
                assert "tailing" in said.readline()
                raw.publish(
                    exchange, "query.request", query("hello").SerializeToString(),
                    type="chimera.v1.QueryRequest", message_id=HOSTILE_ID,
                    correlation_id=HOSTILE_CORR, headers={"x-evil\x1b[5m": "v\x1b[41m"},
                )  # fmt: skip
                raw.publish(exchange, "query.garbage", b"\xff\x00", type="chimera.v1.QueryRequest")
                out, err = tail.communicate(timeout=30)
            finally:
                if tail.poll() is None:
                    tail.kill()
            assert tail.returncode == 0, out + err
            outputs.append(out)
    finally:
        sub.stop_and_join()
    as_json, as_text = outputs
    first, second = records(as_json)
    assert first["message_id"] == HOSTILE_ID
    assert first["correlation_id"] == HOSTILE_CORR
    assert first["routing_key"] == "query.request"
    assert first["body"] == {"query": "hello"}
    assert first["headers"] == {"x-evil\x1b[5m": "v\x1b[41m"}
    assert second["body"] is None
    assert second["body_hex"] == "ff00"
    assert ESC not in as_json

    assert ESC not in as_text
    assert "\r" not in as_text
    assert "message_id=id[/]\\x1b[2J" in as_text
    assert "FAKE LINE" in as_text
    assert not any(line.startswith("FAKE LINE") for line in as_text.splitlines())


def test_status_json(pool: ConnectionPool, names: Names) -> None:
    exchange, queue, missing = names.exchange, names.queue(), names.queue("missing")
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    try:
        result = cli("status", "-q", queue, "-q", missing, "-e", exchange, "--json")
    finally:
        sub.stop_and_join()
    assert result.exit_code == 1, result.output
    broker, present, absent = records(result.stdout)
    assert broker["kind"] == "broker"
    assert broker["exchange_exists"] is True
    assert broker["ok"] is False
    assert "guest:guest" not in broker["broker"]
    assert present["queue"] == queue
    assert present["consumers"] == 1
    assert present["problems"] == []
    assert absent["exists"] is False
    assert "queue does not exist" in absent["problems"]


def test_configuration_errors_exit_2_with_one_line_and_no_secret() -> None:
    env = {**os.environ, **{k: v for k, v in ENV.items() if v}}
    for bad in (
        {"RABBITMQ__PORT": "not-a-port", "RABBITMQ__PASSWORD": "s3cret-pw"},
        {"RABBITMQ__PORT": "99999", "RABBITMQ__PASSWORD": "s3cret-pw"},
        {"RABBITMQ__HEARTBEAT": "-1", "RABBITMQ__PASSWORD": "s3cret-pw"},
        {"RABBITMQ__HOST": "", "RABBITMQ__PASSWORD": "s3cret-pw"},
        {"RABBITMQ__HOST": "amqp://bob:s3cret-pw@rabbit:5672/"},
        {"RABBITMQ": "{not json, s3cret-pw"},
    ):
        done = subprocess.run(
            [sys.executable, "-c", "from messaging.cli import main; main()", "status"],
            capture_output=True, text=True, env={**env, **bad}, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        (line,) = lines(done.stderr)
        assert line.startswith("error: ConfigurationError")
        name = next(iter(bad))
        assert name in line
        assert "s3cret-pw" not in line
        assert "Traceback" not in done.stderr


def test_unroutable_error_printed_once_even_with_logs_on(names: Names, raw: RawBroker) -> None:
    exchange = names.exchange
    raw.channel.exchange_declare(exchange, "topic", durable=True)
    env = {**os.environ, **{k: v for k, v in ENV.items() if v}}
    done = subprocess.run(
        [sys.executable, "-c", "from messaging.cli import main; main()", "-v",
         "publish", "QueryRequest", "nobody.listens", '{"query": "x"}', "-e", exchange],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "publish connection open" in done.stderr  # -v shows the library's lines
    assert done.stderr.count("no queue is bound") == 1, done.stderr
    assert "error: UnroutableMessageError" in done.stderr
