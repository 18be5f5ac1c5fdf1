"""Where a dead letter may be replayed to, decided from what the bus and the broker recorded.

A message in ``<queue>.dlq`` got there one of two ways:

- **The bus moved it** (the usual way): a confirmed copy with the bus's own
  ``x-chimera-*`` headers, among them the exchange and routing key it was
  delivered with. The bus drops ``x-death`` from such copies, and drops a
  sender's ``x-chimera-*`` headers from a message that did not come through
  its own retry path, so these headers are the bus's.
- **The broker dead-lettered it** (a reject when the copy could not be made,
  an expired TTL, a full queue): the broker wrote ``x-death``, whose entry for
  the work queue names the exchange and routing key it arrived with. Any
  ``x-chimera-*`` headers on it are the ones it carried when it reached the
  queue: believed only if it came through the default exchange (the bus's
  own retry path, as for a delivery), otherwise a sender's, and ignored.

A message with neither (someone published into the DLX or the DLQ directly)
has no recorded route, and replaying it is refused: its headers could send it
anywhere, with the operator's credentials. Vhost permissions keep other
producers from writing there in the first place (README, "Who may write where").

Pure: no I/O. ``chimera-bus dlq replay`` uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from messaging.headers import ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY, without_bus_headers

BROKER_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")
"""Headers RabbitMQ adds when it dead-letters a message (prefixes)."""


@dataclass(frozen=True)
class Route:
    """The exchange and routing key a dead letter was delivered with."""

    exchange: str
    routing_key: str
    recorded_by: str
    """``"bus"`` (its x-chimera-original-* headers) or ``"broker"`` (its x-death)."""


def recorded_route(headers: Mapping[Any, Any], work_queue: str) -> Route | None:
    """The route recorded when the message was dead-lettered from ``work_queue``; None if none."""
    death = _death_at(headers, work_queue)
    if death is None:
        return _bus_route(headers)  # a copy the bus made (it never carries x-death)
    exchange = _text(death.get("exchange"))
    keys = death.get("routing-keys")
    routing_key = _text(keys[0]) if isinstance(keys, Sequence) and keys else None
    if exchange == "":
        # Reached the queue through the default exchange: the bus's own retry
        # path, whose headers say where it was first published.
        through_the_bus = _bus_route(headers)
        if through_the_bus is not None:
            return through_the_bus
    if exchange is None or routing_key is None:
        return None
    return Route(exchange, routing_key, "broker")


def replay_headers(headers: Mapping[Any, Any], work_queue: str) -> dict[Any, Any]:
    """The headers a replayed copy carries.

    The broker's death headers go. On a broker dead letter that did not come
    through the bus, a sender's ``x-chimera-*`` headers go too, and the
    recorded route is written in their place, so that a copy replayed
    straight into the work queue is handled with the key it really had.
    """
    kept = {
        key: value
        for key, value in headers.items()
        if not (isinstance(key, str) and key.startswith(BROKER_DEATH_HEADERS))
    }
    death = _death_at(headers, work_queue)
    if death is None or _text(death.get("exchange")) == "":
        return kept
    kept = without_bus_headers(kept)
    route = recorded_route(headers, work_queue)
    if route is not None:
        kept[ORIGINAL_EXCHANGE] = route.exchange
        kept[ORIGINAL_ROUTING_KEY] = route.routing_key
    return kept


def _death_at(headers: Mapping[Any, Any], work_queue: str) -> Mapping[str, Any] | None:
    """The ``x-death`` entry for ``work_queue`` (else the oldest one), if the broker wrote any."""
    entries = headers.get("x-death")
    if not isinstance(entries, Sequence) or isinstance(entries, str | bytes) or not entries:
        return None
    tables = [e for e in entries if isinstance(e, Mapping)]
    if not tables:
        return None
    mine = [e for e in tables if _text(e.get("queue")) == work_queue]
    return mine[0] if mine else tables[-1]


def _bus_route(headers: Mapping[Any, Any]) -> Route | None:
    exchange = _text(headers.get(ORIGINAL_EXCHANGE))
    routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY))
    if exchange is None or routing_key is None:
        return None
    return Route(exchange, routing_key, "bus")


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "surrogateescape")
    return None
