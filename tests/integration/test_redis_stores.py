"""The Redis stores against the Redis on 127.0.0.1:6379 (each test under its own key prefix)."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from messaging import (
    ConfigurationError,
    Deduplicator,
    InMemoryContextStore,
    RedisContextStore,
    RedisDeduplicator,
    StoreError,
    idempotent,
)
from messaging.config import StoreConfig
from messaging.stores import context_store_from_config, deduplicator_from_config

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:hunter2-secret@127.0.0.1:{port}/0"


def test_context_written_by_one_replica_is_popped_once_by_another(prefix: str) -> None:
    one = RedisContextStore(REDIS_URL, namespace="agent", key_prefix=prefix)
    other = RedisContextStore(REDIS_URL, namespace="agent", key_prefix=prefix)
    one.put("corr-1", {"asked": "ZEC price", "steps": [1, 2], "user": None}, ttl=30)
    assert other.pop("corr-1") == {"asked": "ZEC price", "steps": [1, 2], "user": None}
    assert one.pop("corr-1") is None  # gone: exactly one replica gets it


def test_context_expires_with_its_ttl(prefix: str) -> None:
    store = RedisContextStore(REDIS_URL, namespace="agent", key_prefix=prefix)
    store.put("corr-2", {"a": 1}, ttl=0.05)
    client = redis.Redis.from_url(REDIS_URL)
    ttl_ms = client.pttl(f"{prefix}:context:agent:corr-2")
    client.close()
    assert 0 < ttl_ms <= 50


def test_context_that_is_not_json_is_refused_before_anything_is_stored(prefix: str) -> None:
    store = RedisContextStore(REDIS_URL, namespace="agent", key_prefix=prefix)
    with pytest.raises(ConfigurationError, match="JSON"):
        store.put("corr-3", {"when": object()}, ttl=30)
    assert store.pop("corr-3") is None


def test_redis_down_is_a_store_error_saying_so_without_the_password() -> None:
    url = dead_redis_url()
    store = RedisContextStore(url, namespace="agent", timeout=0.5)
    with pytest.raises(StoreError, match="no fallback to process memory") as info:
        store.put("corr", {"a": 1}, ttl=30)
    assert "hunter2-secret" not in str(info.value)
    assert "127.0.0.1" in str(info.value)
    with pytest.raises(StoreError):
        store.pop("corr")
    dedup = RedisDeduplicator(url, namespace="agent", timeout=0.5)
    with pytest.raises(StoreError):
        dedup.seen("m")
    with pytest.raises(StoreError):
        store.ping()


def test_deduplicator_is_shared_across_instances(prefix: str) -> None:
    one = RedisDeduplicator(REDIS_URL, namespace="agent", ttl=30, key_prefix=prefix)
    other = RedisDeduplicator(REDIS_URL, namespace="agent", ttl=30, key_prefix=prefix)
    assert not other.seen("msg-1")
    one.remember("msg-1")
    assert other.seen("msg-1")


def test_idempotent_holds_across_replicas_sync_and_async(prefix: str) -> None:
    handled: list[str] = []

    class SyncReplica:
        @idempotent(RedisDeduplicator(REDIS_URL, namespace="agent", ttl=30, key_prefix=prefix))
        def handle_message(self, message: Any, properties: dict[str, Any]) -> None:
            handled.append(f"sync:{message}")

    class AsyncReplica:
        @idempotent(RedisDeduplicator(REDIS_URL, namespace="agent", ttl=30, key_prefix=prefix))
        async def handle_message(self, message: Any, properties: dict[str, Any]) -> None:
            handled.append(f"async:{message}")

    SyncReplica().handle_message("a", {"message_id": "id-a"})
    asyncio.run(AsyncReplica().handle_message("a", {"message_id": "id-a"}))
    asyncio.run(AsyncReplica().handle_message("b", {"message_id": "id-b"}))
    SyncReplica().handle_message("b", {"message_id": "id-b"})
    assert handled == ["sync:a", "async:b"]


def test_store_works_from_threads_and_the_event_loop_at_once(prefix: str) -> None:
    store = RedisContextStore(REDIS_URL, namespace="agent", key_prefix=prefix)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                store.put(f"t{n}-{i}", {"i": i}, ttl=30)
                assert store.pop(f"t{n}-{i}") == {"i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()

    async def on_loop() -> None:
        for i in range(50):
            await asyncio.to_thread(store.put, f"loop-{i}", {"i": i}, 30)
            assert await asyncio.to_thread(store.pop, f"loop-{i}") == {"i": i}

    asyncio.run(on_loop())
    for thread in threads:
        thread.join()
    assert errors == []


def test_configuration_selects_the_store(prefix: str) -> None:
    assert isinstance(context_store_from_config("agent", StoreConfig()), InMemoryContextStore)
    assert isinstance(deduplicator_from_config("agent", store=StoreConfig()), Deduplicator)
    shared = StoreConfig(redis_url=REDIS_URL, key_prefix=prefix)  # type: ignore[arg-type]
    assert isinstance(context_store_from_config("agent", shared), RedisContextStore)
    dedup = deduplicator_from_config("agent", ttl=5, store=shared)
    assert isinstance(dedup, RedisDeduplicator)
    assert dedup.ttl == 5


def test_store_variables_are_read_from_the_environment(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE__REDIS_URL", REDIS_URL)
    monkeypatch.setenv("STORE__KEY_PREFIX", prefix)
    store = context_store_from_config("agent")
    assert isinstance(store, RedisContextStore)
    assert store.key_prefix == prefix


def test_agents_sharing_a_correlation_id_keep_separate_contexts(prefix: str) -> None:
    """A workflow keeps one correlation id across agents: the agent that receives the
    request must not take the context its sender stored for the answer."""
    asker = RedisContextStore(REDIS_URL, namespace="query_agent", key_prefix=prefix)
    answerer = RedisContextStore(REDIS_URL, namespace="data_agent", key_prefix=prefix)
    asker.put("corr-9", {"question": "ZEC?"}, ttl=30)
    assert answerer.pop("corr-9") is None
    assert asker.pop("corr-9") == {"question": "ZEC?"}


def test_a_context_store_needs_a_namespace() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        RedisContextStore(REDIS_URL, namespace="")


def test_one_event_for_two_agents_is_handled_by_each(prefix: str) -> None:
    pricing = RedisDeduplicator(REDIS_URL, namespace="pricing", ttl=30, key_prefix=prefix)
    audit = RedisDeduplicator(REDIS_URL, namespace="audit", ttl=30, key_prefix=prefix)
    pricing.remember("event-1")
    assert not audit.seen("event-1")
    assert pricing.seen("event-1")
