"""State that agent replicas share: workflow context and the ids of handled messages.

One process keeps both in its own memory (:class:`messaging.InMemoryContextStore`,
:class:`messaging.Deduplicator`). Several replicas of an agent share a queue,
so the answer to a request one replica sent may land on another, and a
redelivered message may reach a replica that never saw it: they need the
Redis-backed stores here, chosen with ``STORE__REDIS_URL`` or passed in.
"""

from messaging.stores.redis import RedisContextStore, RedisDeduplicator
from messaging.stores.select import context_store_from_config, deduplicator_from_config

__all__ = [
    "RedisContextStore",
    "RedisDeduplicator",
    "context_store_from_config",
    "deduplicator_from_config",
]
