"""The flight recorder's record format and buffer, with no broker."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from messaging.errors import ConfigurationError
from messaging.recorder import Record, decode, encode
from messaging.recorder.buffer import Buffer
from messaging.recorder.record import safe_error_text, safe_headers
from messaging.recorder.settings import RecorderSettings, load_recorder_settings


def test_records_travel_as_json_lines_without_empty_fields() -> None:
    sent = Record(kind="handle", ts=1.5, agent="a", message_id="m", outcome="ok", duration_ms=2.0)
    body = encode([sent, Record(kind="publish", ts=2.0, agent="b")])
    lines = body.splitlines()
    assert json.loads(lines[0]) == {
        "v": 1,
        "kind": "handle",
        "ts": 1.5,
        "agent": "a",
        "message_id": "m",
        "outcome": "ok",
        "duration_ms": 2.0,
    }
    decoded = decode(body, offset=7)
    assert decoded.skipped == 0
    assert [r.agent for r in decoded.records] == ["a", "b"]
    assert decoded.records[0].offset == 7
    assert decoded.records[0].duration_ms == 2.0


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"kind": "handle", "agent": "a"}',
        b'{"kind": "dance", "ts": 1, "agent": "a"}',
        b'{"kind": "handle", "ts": 1, "agent": "a", "attempt": "two"}',
        b'{"kind": "handle", "ts": true, "agent": "a"}',
    ],
)
def test_an_undecodable_line_is_counted_and_the_rest_kept(line: bytes) -> None:
    good = encode([Record(kind="publish", ts=1.0, agent="a")])
    decoded = decode(good + line + b"\n" + good)
    assert (len(decoded.records), decoded.skipped) == (2, 1)


def test_unknown_keys_from_a_newer_writer_are_ignored() -> None:
    decoded = decode(b'{"v": 2, "kind": "publish", "ts": 1, "agent": "a", "later": 1}\n')
    assert decoded.skipped == 0
    assert decoded.records[0].agent == "a"


def test_error_text_loses_credentials_and_is_capped() -> None:
    text = safe_error_text("failed on amqps://user:pa55@host:5671/vh and redis://:pw@r/0 " * 20)
    assert "pa55" not in text
    assert ":pw@" not in text
    assert len(text) <= 500


def test_headers_named_like_secrets_are_never_kept() -> None:
    kept = safe_headers(
        {
            "x-tenant": "acme",
            "Authorization": "Bearer x",
            "x-api-key": "k",
            "password": "p",
            "X-Auth-Token": "t",
            "x-db": "postgres://u:secret@db/x",
            "x-raw": b"bytes",
        }
    )
    assert kept == {"x-tenant": "acme", "x-db": "<url>", "x-raw": "bytes"}


def lost_total() -> float:
    value = REGISTRY.get_sample_value("chimera_recorder_records_dropped_total", {"reason": "full"})
    return value or 0.0


def test_a_full_buffer_drops_the_oldest_counts_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "messaging.recorder")
    before = lost_total()
    buffer = Buffer(2)
    for n in range(5):
        buffer.add(Record(kind="publish", ts=float(n), agent="a"))
    assert [r.ts for r in buffer.take(10)] == [3.0, 4.0]
    assert lost_total() - before == 3
    warnings = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: one line, not one per record


def test_settings_come_from_recorder_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDER__ENABLED", "true")
    monkeypatch.setenv("RECORDER__MAX_AGE_SECONDS", "600")
    monkeypatch.setenv("RECORDER__BODIES", "query-agent, data-agent")
    settings = load_recorder_settings()
    assert settings.enabled
    assert settings.stream_arguments()["x-max-age"] == "600s"
    assert settings.records_bodies_of("data-agent")
    assert not settings.records_bodies_of("x")
    assert RecorderSettings(bodies=("*",)).records_bodies_of("anyone")
    monkeypatch.setenv("RECORDER__BUFFER", "-1")
    with pytest.raises(ConfigurationError, match="RECORDER__BUFFER"):
        load_recorder_settings()


def test_the_fast_encoder_writes_what_to_json_says() -> None:
    record = Record(
        kind="handle",
        ts=1796401621.935216,
        agent='q\u00e9ry "agent"\n',
        instance="vm:1",
        correlation_id="c\x1b[2J",
        message_id="m",
        cause_id="c0",
        exchange="chimera.events",
        routing_key="query.request",
        type="chimera.v1.QueryRequest",
        reply_to="amq.rabbitmq.reply-to",
        outcome="error",
        duration_ms=1.5,
        attempt=2,
        error_type="builtins.KeyError",
        error="'ZEC' \u202e",
        body="AAEC",
        body_truncated=False,
        headers={"x-tenant": "acme", "n": 3},
    )
    body = encode([record, Record(kind="publish", ts=2, agent="a")])
    first, second = body.decode("ascii").splitlines()
    assert json.loads(first) == record.to_json()
    assert json.loads(second) == {"v": 1, "kind": "publish", "ts": 2.0, "agent": "a"}
