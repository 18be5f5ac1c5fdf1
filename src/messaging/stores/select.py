"""Which store an agent uses when none is passed: ``STORE__REDIS_URL`` decides."""

from __future__ import annotations

from messaging.config import StoreConfig, load_config
from messaging.context import ContextStore, InMemoryContextStore
from messaging.idempotency import Deduplicator, SeenMessages


def context_store_from_config(agent_name: str, store: StoreConfig | None = None) -> ContextStore:
    """``agent_name``'s context store: Redis when ``STORE__REDIS_URL`` is set (its
    replicas share it), else process memory."""
    store = store if store is not None else load_config().store
    if store.redis_url is None:
        return InMemoryContextStore()
    from messaging.stores.redis import RedisContextStore

    return RedisContextStore(store.redis_url, namespace=agent_name, key_prefix=store.key_prefix)


def deduplicator_from_config(
    agent_name: str, ttl: float = 3600.0, store: StoreConfig | None = None
) -> SeenMessages:
    """For ``@idempotent`` on ``agent_name``'s handler: Redis when ``STORE__REDIS_URL``
    is set (its replicas share it), else process memory."""
    store = store if store is not None else load_config().store
    if store.redis_url is None:
        return Deduplicator(ttl=ttl)
    from messaging.stores.redis import RedisDeduplicator

    return RedisDeduplicator(
        store.redis_url, namespace=agent_name, ttl=ttl, key_prefix=store.key_prefix
    )
