"""A small deterministic price source, so the demo needs no network.

Every symbol has a daily closing price that is a pure function of the symbol
and the date: a base price shaped by two slow waves and a little hashed
noise. Any window of days therefore gives the same numbers on every machine
and every run, and overlapping windows agree with each other.

>>> points = series("ZEC", 3, end=date(2024, 1, 31))
>>> [t.date().isoformat() for t, _ in points]
['2024-01-29', '2024-01-30', '2024-01-31']
>>> series("NOPE", 3)
[]
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

__all__ = ["CURRENCY", "MAX_DAYS", "known_symbols", "series"]

CURRENCY = "USD"
MAX_DAYS = 365


@dataclass(frozen=True)
class _Shape:
    base: float
    wave: float  # amplitude of the slow wave, as a fraction of base
    period: float  # days
    noise: float  # amplitude of the daily noise, as a fraction of base


_SYMBOLS: dict[str, _Shape] = {
    "BTC": _Shape(base=64_000.0, wave=0.12, period=97.0, noise=0.02),
    "ETH": _Shape(base=3_100.0, wave=0.15, period=71.0, noise=0.03),
    "ZEC": _Shape(base=38.0, wave=0.20, period=53.0, noise=0.04),
}


def known_symbols() -> list[str]:
    """The symbols this source has prices for, sorted."""
    return sorted(_SYMBOLS)


def series(symbol: str, days: int, *, end: date | None = None) -> list[tuple[datetime, float]]:
    """Daily closes of ``symbol`` for the ``days`` days ending on ``end`` (today, UTC).

    Oldest first, each stamped at midnight UTC. An unknown symbol gives an
    empty list; ``days`` is clamped to 1..:data:`MAX_DAYS`.
    """
    shape = _SYMBOLS.get(symbol.upper())
    if shape is None:
        return []
    last = end if end is not None else datetime.now(UTC).date()
    count = max(1, min(days, MAX_DAYS))
    points = []
    for back in range(count - 1, -1, -1):
        day = last - timedelta(days=back)
        points.append((datetime.combine(day, time(), UTC), _price(symbol.upper(), shape, day)))
    return points


def _price(symbol: str, shape: _Shape, day: date) -> float:
    n = day.toordinal()
    slow = shape.wave * math.sin(2 * math.pi * n / shape.period)
    fast = 0.5 * shape.wave * math.sin(2 * math.pi * n / (shape.period / 3.7) + 1.0)
    digest = hashlib.blake2b(f"{symbol}:{n}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    noise = shape.noise * (2 * unit - 1)
    return round(shape.base * (1 + slow + fast + noise), 2)
