"""Which dead letters a `dlq replay` or `dlq purge` acts on: by id, error type and time. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from messaging.cli._letters import deaths, headers_of, plain
from messaging.cli._since import SINCE_HELP, parse_since
from messaging.headers import ERROR_TYPE
from messaging.transport import Delivery

IdOption = Annotated[
    list[str] | None,
    typer.Option("--id", help="Only the dead letter with this message id (repeat for more)."),
]
ErrorTypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--error-type",
        help="Only dead letters whose handler raised this exception (x-chimera-error-type): "
        "the full name (builtins.ValueError) or the class name (ValueError); repeat for more.",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only dead letters that died from then on (x-death time; for the bus's own "
        "moved copies, which have none, the message's timestamp). " + SINCE_HELP,
    ),
]


@dataclass(frozen=True)
class Selection:
    """Every criterion given must hold; none given selects every dead letter."""

    ids: frozenset[str] = frozenset()
    error_types: frozenset[str] = frozenset()
    since: datetime | None = None

    @classmethod
    def of(
        cls, ids: Sequence[str] | None, error_types: Sequence[str] | None, since: str | None
    ) -> Selection:
        """From the options; ``ValueError`` for a ``--since`` that is not a time."""
        return cls(
            frozenset(ids or ()),
            frozenset(error_types or ()),
            None if since is None else parse_since(since),
        )

    @property
    def everything(self) -> bool:
        return not (self.ids or self.error_types or self.since is not None)

    def describe(self) -> str:
        parts = []
        if self.ids:
            parts.append("id " + " or ".join(sorted(self.ids)))
        if self.error_types:
            parts.append("error type " + " or ".join(sorted(self.error_types)))
        if self.since is not None:
            parts.append(f"dead since {self.since.isoformat(timespec='seconds')}")
        return ", ".join(parts) if parts else "all"

    def matches(self, letter: Delivery) -> bool:
        if self.ids and str(letter.properties.message_id) not in self.ids:
            return False
        headers = headers_of(letter)
        if self.error_types and not _error_type_matches(headers, self.error_types):
            return False
        if self.since is not None:
            died = died_at(letter, headers)
            if died is None or died < self.since:
                return False
        return True


def _error_type_matches(headers: dict[str, Any], wanted: frozenset[str]) -> bool:
    value = headers.get(ERROR_TYPE)
    if value is None:
        return False
    full = str(plain(value))
    short = full.rpartition(".")[2]
    return full in wanted or short in wanted


def died_at(letter: Delivery, headers: dict[str, Any]) -> datetime | None:
    """When it was dead-lettered: the latest x-death time, else the message's timestamp."""
    raw = headers.get("x-death")
    if isinstance(raw, list | tuple) and raw and isinstance(raw[0], dict):
        time = raw[0].get("time")
        if isinstance(time, datetime):
            return time if time.tzinfo else time.replace(tzinfo=UTC)
    entries = deaths(headers)
    if entries and isinstance(entries[0].get("time"), str):
        try:
            return datetime.fromisoformat(entries[0]["time"]).astimezone(UTC)
        except ValueError:
            pass
    stamp = letter.properties.timestamp
    if stamp is None:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
