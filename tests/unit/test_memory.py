"""The bounded, expiring memories: workflow context and deduplication."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from messaging.context import InMemoryContextStore
from messaging.idempotency import Deduplicator, idempotent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_context_is_returned_once() -> None:
    store = InMemoryContextStore()
    store.put("c1", {"step": 1}, ttl=10)
    assert store.pop("c1") == {"step": 1}
    assert store.pop("c1") is None


def test_context_expires_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = InMemoryContextStore(clock=clock)
    store.put("c1", {"step": 1}, ttl=10)
    clock.now = 10.5
    with caplog.at_level(logging.WARNING, logger="messaging.context"):
        assert store.pop("c1") is None
    assert "expired" in caplog.text
    assert "correlation_id=c1" in caplog.text
    assert len(store) == 0


def test_context_store_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    store = InMemoryContextStore(max_entries=3)
    with caplog.at_level(logging.WARNING, logger="messaging.context"):
        for i in range(5):
            store.put(f"c{i}", {"i": i}, ttl=60)
    assert len(store) == 3
    assert store.pop("c0") is None
    assert store.pop("c4") == {"i": 4}
    assert "evicted" in caplog.text


class Handler:
    dedup = Deduplicator(ttl=60)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_next = False

    @idempotent(dedup)
    def handle_message(self, message: str, properties: dict[str, Any]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("transient")
        self.calls.append(message)


def test_idempotent_handler_runs_once_per_message_id() -> None:
    handler = Handler()
    handler.handle_message("a", {"message_id": "m1"})
    handler.handle_message("a again", {"message_id": "m1"})
    handler.handle_message("b", {"message_id": "m2"})
    assert handler.calls == ["a", "b"]


def test_a_failed_attempt_is_not_remembered() -> None:
    handler = Handler()
    handler.fail_next = True
    with pytest.raises(RuntimeError):
        handler.handle_message("c", {"message_id": "m3"})
    handler.handle_message("c", {"message_id": "m3"})
    assert handler.calls == ["c"]


def test_idempotent_async_handler() -> None:
    dedup = Deduplicator()
    calls: list[str] = []

    class AsyncHandler:
        @idempotent(dedup)
        async def handle_message(self, message: str, properties: dict[str, Any]) -> None:
            calls.append(message)

    async def run() -> None:
        h = AsyncHandler()
        await h.handle_message("x", {"message_id": "m1"})
        await h.handle_message("x", {"message_id": "m1"})

    asyncio.run(run())
    assert calls == ["x"]


def test_deduplicator_forgets_after_ttl() -> None:
    clock = Clock()
    dedup = Deduplicator(ttl=5, clock=clock)
    dedup.remember("m")
    assert dedup.seen("m")
    clock.now = 6
    assert not dedup.seen("m")
