"""``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``1d``) or an ISO time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

SINCE_HELP = (
    "Only from this point on: a duration back from now (90s, 15m, 2h, 1d) or an ISO 8601 "
    "time (2026-12-04T15:30:00Z; without a zone, local time)."
)


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """The point in time ``value`` names (aware, UTC); ``ValueError`` saying what is accepted."""
    now = now if now is not None else datetime.now(UTC)
    match = _DURATION.match(value)
    if match is not None:
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        point = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {value!r} is neither a duration (90s, 15m, 2h, 1d) nor an ISO time "
            f"(2026-12-04T15:30:00Z)"
        ) from None
    if point.tzinfo is None:
        point = point.astimezone()  # local time, as a person typing it means it
    return point.astimezone(UTC)
