"""AMQP topic routing: the rules of a RabbitMQ topic exchange, in Python. Pure: no I/O.

A routing key is words separated by ``.``. In a binding pattern ``*`` stands
for exactly one word and ``#`` for zero or more, so ``query.*`` matches
``query.request``, ``*.request`` matches every request, ``a.#`` matches ``a``
and ``a.b.c``, and ``#`` matches every key, the empty one included. Words may
be empty (``a..b`` has three), as on the broker.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Generic, TypeVar

from messaging.errors import InvalidMessageError, UnknownRoutingKeyError

__all__ = [
    "MAX_KEY_BYTES",
    "RoutingTable",
    "topic_matches",
    "validate_binding_pattern",
    "validate_routing_key",
]

MAX_KEY_BYTES = 255
"""Routing keys and binding keys are AMQP short strings: at most 255 bytes of UTF-8."""

T = TypeVar("T")


def validate_routing_key(key: str) -> None:
    """InvalidMessageError unless ``key`` can be published with, e.g. ``"query.request"``."""
    _check_length("routing key", key)
    words = key.split(".")
    if "*" in words or "#" in words:
        raise InvalidMessageError(
            f"routing key {key!r} contains a wildcard word; '*' and '#' only mean something "
            f"in the patterns subscribers bind with. Publish with a concrete key such as "
            f"'query.request'."
        )


def validate_binding_pattern(pattern: str) -> None:
    """InvalidMessageError unless ``pattern`` can be bound with, e.g. ``"query.*"``."""
    _check_length("binding pattern", pattern)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange delivers ``routing_key`` to a queue bound with ``pattern``."""
    return _match(_words(pattern), _words(routing_key))


class RoutingTable(Generic[T]):
    """Values looked up by routing key through binding patterns, e.g. key -> message class.

    An exact key wins; otherwise the first matching pattern, in the mapping's
    order. Answers are cached per routing key: a consumer sees few distinct
    keys, each many times. The cache is emptied when it reaches ``cache_size``.
    """

    __slots__ = ("_cache", "_cache_size", "_exact", "_patterns", "_wildcards")

    def __init__(self, routes: Mapping[str, T], *, cache_size: int = 4096) -> None:
        for pattern in routes:
            validate_binding_pattern(pattern)
        self._patterns = tuple(routes)
        self._exact = {p: v for p, v in routes.items() if not _has_wildcard(p)}
        self._wildcards = [(_words(p), v) for p, v in routes.items() if _has_wildcard(p)]
        self._cache: dict[str, T | None] = {}
        self._cache_size = cache_size

    @property
    def patterns(self) -> tuple[str, ...]:
        """The binding patterns, in the order given."""
        return self._patterns

    def lookup(self, routing_key: str) -> T | None:
        """The value for ``routing_key``, or None when no pattern matches it."""
        try:
            return self._cache[routing_key]
        except KeyError:
            pass
        value = self._find(routing_key)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[routing_key] = value
        return value

    def resolve(self, routing_key: str) -> T:
        """Like :meth:`lookup`, but UnknownRoutingKeyError when nothing matches."""
        value = self.lookup(routing_key)
        if value is None:
            raise UnknownRoutingKeyError(
                f"no route for routing key {routing_key!r}; the table knows "
                f"{', '.join(map(repr, self._patterns)) or 'no patterns'}. Add the key "
                f"(or a pattern matching it) to the routing key map."
            )
        return value

    def __len__(self) -> int:
        return len(self._patterns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._patterns)!r})"

    def _find(self, routing_key: str) -> T | None:
        if routing_key in self._exact:
            return self._exact[routing_key]
        words = _words(routing_key)
        for pattern, value in self._wildcards:
            if _match(pattern, words):
                return value
        return None


def _check_length(what: str, key: str) -> None:
    if not isinstance(key, str):
        raise InvalidMessageError(f"{what} must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidMessageError(
            f"{what} is empty; use '<agent>.<action>' words such as 'query.request'"
        )
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise InvalidMessageError(
            f"{what} is {size} bytes of UTF-8, over the AMQP limit of {MAX_KEY_BYTES}: "
            f"{key[:40]!r}...; shorten it"
        )


def _has_wildcard(pattern: str) -> bool:
    return any(word in ("*", "#") for word in pattern.split("."))


@functools.lru_cache(maxsize=4096)
def _words(key: str) -> tuple[str, ...]:
    # As RabbitMQ splits: "" has no words, "a." has two ("a" and "").
    return tuple(key.split(".")) if key else ()


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    # Glob matching over words, with '#' as the any-run and '*' as the any-one:
    # on a mismatch, let the most recent '#' swallow one more word and retry.
    p = w = 0
    hash_p, hash_w = -1, 0
    while w < len(words):
        if p < len(pattern) and pattern[p] == "#":
            hash_p, hash_w = p, w
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == words[w]):
            p += 1
            w += 1
        elif hash_p >= 0:
            hash_w += 1
            p, w = hash_p + 1, hash_w
        else:
            return False
    while p < len(pattern) and pattern[p] == "#":
        p += 1
    return p == len(pattern)
