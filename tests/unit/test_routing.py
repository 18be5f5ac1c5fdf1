from __future__ import annotations

import itertools
import random

import pytest

from messaging.errors import InvalidMessageError, UnknownRoutingKeyError
from messaging.routing import (
    RoutingTable,
    topic_matches,
    validate_binding_pattern,
    validate_routing_key,
)

# Each row was checked against a RabbitMQ topic exchange: "" has no words,
# "a." has two ("a" and ""), '#' is zero or more words, '*' exactly one.
CASES = [
    # pattern, routing key, delivered
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("#.#", "", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", ".", False),
    ("*.*", ".", True),
    ("a", "a", True),
    ("a", "a.b", False),
    ("a", "", False),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "a.", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.*", "a", False),
    ("a.*", "a.b", True),
    ("a.*", "a.", True),
    ("a.*", "a.b.c", False),
    ("*.request", "query.request", True),
    ("*.request", "request", False),
    ("*.request", "a.query.request", False),
    ("query.*", "query.response", True),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    ("a.*.c", "a.b.b.c", False),
    ("a.*.c", "a..c", True),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.b", True),
    ("a.#.b", "a.b.c", False),
    ("#.x.#", "x", True),
    ("#.x.#", "q.x.w.x", True),
    ("#.x.#", "a.b", False),
    ("#.b.*", "a.b.x.b.c", True),
    ("#.b.*", "a.b", False),
    ("*.#.*", "a", False),
    ("*.#.*", "a.b", True),
    ("a.#.#", "a", True),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    ("a.", "a", False),
    (".a", ".a", True),
    ("a#", "ab", False),
    ("a*", "ab", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), CASES)
def test_topic_matches(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def _reference(pattern: list[str], words: list[str]) -> bool:
    """The definition, recursively; slow and obviously right."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_reference(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _reference(rest, words[1:])


def _split(text: str) -> list[str]:
    return text.split(".") if text else []  # as the broker splits: "" is no words at all


def test_topic_matches_agrees_with_the_definition() -> None:
    rng = random.Random(20261127)
    vocabulary = ["a", "b", ""]
    for _ in range(3000):
        pattern = [rng.choice([*vocabulary, "*", "#"]) for _ in range(rng.randint(1, 5))]
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 6))]
        pattern_text, key = ".".join(pattern), ".".join(words)
        expected = _reference(_split(pattern_text), _split(key))
        assert topic_matches(pattern_text, key) is expected, (pattern_text, key)


@pytest.mark.parametrize("key", ["query.request", "a", "x" * 255, "é" * 127, "a..b"])
def test_valid_routing_keys(key: str) -> None:
    validate_routing_key(key)


@pytest.mark.parametrize(
    ("key", "complaint"),
    [
        ("", "empty"),
        ("x" * 256, "256 bytes"),
        ("é" * 128, "256 bytes"),
        ("query.*", "wildcard"),
        ("#", "wildcard"),
        (b"query.request", "must be a str, got bytes"),
        (None, "must be a str, got NoneType"),
    ],
)
def test_invalid_routing_keys(key: object, complaint: str) -> None:
    with pytest.raises(InvalidMessageError, match=complaint):
        validate_routing_key(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("pattern", ["#", "*", "query.*", "*.request", "a.#.b", "x" * 255])
def test_valid_binding_patterns(pattern: str) -> None:
    validate_binding_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [("", "empty"), ("x" * 256, "256 bytes"), (42, "must be a str, got int")],
)
def test_invalid_binding_patterns(pattern: object, complaint: str) -> None:
    with pytest.raises(InvalidMessageError, match=complaint):
        validate_binding_pattern(pattern)  # type: ignore[arg-type]


def test_table_prefers_exact_key_then_first_pattern_in_order() -> None:
    table = RoutingTable({"*.request": "any", "query.#": "query", "query.request": "exact"})
    assert table.lookup("query.request") == "exact"
    assert table.lookup("data.request") == "any"
    assert table.lookup("query.response") == "query"
    assert table.lookup("query") == "query"
    assert table.lookup("data.response") is None
    assert table.patterns == ("*.request", "query.#", "query.request")
    assert len(table) == 3


def test_table_answers_stay_right_past_the_cache_size() -> None:
    table = RoutingTable({"a.*": 1, "#": 2}, cache_size=4)
    for key in itertools.islice(itertools.cycle(["a.x", "b", "a.y", "c.d", "a.z", ""]), 50):
        assert table.lookup(key) == (1 if key.startswith("a.") else 2)
    assert len(table._cache) <= 4


def test_table_resolve_raises_for_unknown_key() -> None:
    table = RoutingTable({"query.request": int})
    assert table.resolve("query.request") is int
    with pytest.raises(UnknownRoutingKeyError, match=r"'data\.request'.*'query\.request'"):
        table.resolve("data.request")


def test_table_rejects_invalid_patterns() -> None:
    with pytest.raises(InvalidMessageError, match="empty"):
        RoutingTable({"": 1})
