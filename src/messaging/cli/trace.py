"""`chimera-bus trace CORRELATION_ID`: one conversation from the flight recorder, as a timeline."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from messaging.cli._broker import EXIT_PROBLEM, UrlOption, broker_config, fail, run
from messaging.cli._output import JsonOption, Output, Part
from messaging.cli._since import SINCE_HELP, parse_since
from messaging.recorder.reader import Reading, read_records
from messaging.recorder.record import Record
from messaging.recorder.settings import load_recorder_settings
from messaging.recorder.timeline import Step, Timeline, build

HELP = """\
Print one conversation (every message with CORRELATION_ID) as a timeline.

Reads the flight recorder's stream (RECORDER__STREAM, default
chimera.recorder; agents record when RECORDER__ENABLED=true) from its start,
or from --since. Each line is a message sent or handled: when (ms from the
first), which agent, what type, to which routing key, who sent or handled it,
how long the hop took (sent to handler start) and the handler ran, and how it
ended. On a terminal a table, piped tab-separated lines, --json one record per
line; --export FILE writes the records as JSON lines (the recorder's own
format, which messaging.testing replays). Records that cannot be decoded are
skipped and counted. Exit 1 when the conversation has no record.
"""


def trace(
    correlation_id: Annotated[str, typer.Argument(help="The conversation's correlation id.")],
    since: Annotated[str | None, typer.Option("--since", help=SINCE_HELP)] = None,
    stream: Annotated[
        str | None,
        typer.Option("--stream", help="The recorder's stream (default: RECORDER__STREAM)."),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Also write the records to FILE, one JSON object a line."),
    ] = None,
    idle: Annotated[
        float,
        typer.Option("--idle", min=0.05, help="Seconds without a record that mean the end."),
    ] = 1.0,
    as_json: JsonOption = False,
    url: UrlOption = None,
) -> None:
    out = Output(as_json)
    try:
        offset: str | datetime = "first" if since is None else parse_since(since)
    except ValueError as exc:
        fail(str(exc))
    name = stream or load_recorder_settings().stream
    reading: Reading = run(
        read_records(broker_config(), name, offset, correlation_id=correlation_id, idle=idle)
    )
    if reading.skipped:
        out.note((f"{reading.skipped} record(s) could not be decoded and were skipped", "yellow"))
    if export is not None:
        write_export(export, reading.records)
        out.note((f"{len(reading.records)} record(s) written to {export}", "dim"))
    timeline = build(reading.records)
    if not timeline.steps:
        out.note(f"no record of conversation {correlation_id} in {name}")
        raise typer.Exit(EXIT_PROBLEM)
    if as_json:
        for step in timeline.steps:
            out.record(as_record(step))
        return
    show(out, correlation_id, timeline)


def write_export(path: Path, records: list[Record]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record.to_json(), separators=(",", ":")) + "\n")


def as_record(step: Step) -> dict[str, object]:
    data = step.record.to_json()
    data["at_ms"] = step.at_ms
    if step.sender is not None:
        data["from"] = step.sender
    if step.handlers:
        data["to"] = list(step.handlers)
    if step.hop_ms is not None:
        data["hop_ms"] = step.hop_ms
    return data


def show(out: Output, correlation_id: str, timeline: Timeline) -> None:
    failures = timeline.failures
    out.line(
        ("conversation ", "bold"),
        (correlation_id, "bold cyan"),
        f"  {len(timeline.steps)} record(s), {len(timeline.agents)} agent(s): "
        f"{' -> '.join(timeline.agents)}, {timeline.duration_ms:.1f} ms",
    )
    out.table(
        ("ms", "agent", "", "type", "routing key", "from/to", "hop ms", "ran ms", "outcome"),
        (row(step) for step in timeline.steps),
    )
    for step in failures:
        record = step.record
        out.line(
            ("failed at ", "bold red"),
            (record.agent, "bold"),
            f" ({record.instance}) on {record.type or '?'} attempt {record.attempt or 1}: ",
            (f"{record.error_type or '?'}: {record.error or ''}", "red"),
        )


def row(step: Step) -> tuple[Part, ...]:
    record = step.record
    if record.kind == "publish":
        kind = "reply" if step.is_reply else "sent"
        peers = "to " + ", ".join(step.handlers) if step.handlers else "to (not recorded)"
        key = "(reply)" if step.is_reply else (record.routing_key or "")
        outcome: Part = ""
    else:
        kind = "handled"
        peers = f"from {step.sender}" if step.sender else "from (not recorded)"
        key = record.routing_key or ""
        outcome = (
            ("ok", "green")
            if record.outcome == "ok"
            else (f"FAILED {short(record.error_type)}", "bold red")
        )
    return (
        f"{step.at_ms:.1f}",
        record.agent,
        kind,
        short(record.type),
        key,
        peers,
        "" if step.hop_ms is None else f"{step.hop_ms:.1f}",
        "" if record.duration_ms is None else f"{record.duration_ms:.1f}",
        outcome,
    )


def short(name: str | None) -> str:
    """``chimera.v1.QueryRequest`` -> ``QueryRequest``."""
    return (name or "?").rpartition(".")[2]
