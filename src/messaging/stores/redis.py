"""Workflow context and seen message ids in Redis, shared by every replica of an agent.

Both stores are synchronous and thread-safe (redis-py's client keeps a
connection pool), so one object serves the sync API's worker thread and the
asyncio API alike; the async agent runs their calls in a worker thread so the
event loop never waits on Redis (they say so with ``blocking = True``).

When Redis cannot be reached the stores raise :class:`~messaging.errors.StoreError`:
there is no fallback to process memory, which in a replica set would lose
context and let duplicates through without anyone noticing.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from messaging.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    import redis as redis_lib

    from messaging.context import Context

log = logging.getLogger("messaging.stores")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class _RedisStore:
    blocking: ClassVar[bool] = True
    """Calls wait on the network: async callers run them in a worker thread."""

    kind: ClassVar[str] = "state"

    def __init__(
        self,
        url: str | SecretStr = DEFAULT_REDIS_URL,
        *,
        key_prefix: str = "chimera",
        timeout: float = 2.0,
        client: redis_lib.Redis | None = None,
    ) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the extra is part of the dev install
            raise ConfigurationError(
                "the Redis stores need the redis package: pip install 'chimera-messaging[redis]'"
            ) from None
        secret = url.get_secret_value() if isinstance(url, SecretStr) else url
        self.where = _safe_url(secret)
        if not key_prefix:
            raise ConfigurationError("key_prefix must be a non-empty string")
        self.key_prefix = key_prefix
        try:
            self._redis: redis_lib.Redis = client or redis.Redis.from_url(
                secret,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"STORE__REDIS_URL={self.where!r} is not a Redis URL: {exc}"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def _key(self, space: str, name: str) -> str:
        return f"{self.key_prefix}:{space}:{name}"

    def _failed(self, action: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"Redis at {self.where} failed while {action}: {type(exc).__name__}: {exc}. "
            f"The {self.kind} shared by this agent's replicas lives there; there is no "
            f"fallback to process memory. Check that Redis is up and STORE__REDIS_URL."
        )

    def ping(self) -> None:
        """Raise :class:`StoreError` now if Redis does not answer."""
        try:
            self._redis.ping()
        except self._errors as exc:
            raise self._failed("answering a ping", exc) from exc

    def close(self) -> None:
        self._redis.close()


class RedisContextStore(_RedisStore):
    """A :class:`~messaging.context.ContextStore` in Redis, shared by an agent's replicas.

    Each context is one JSON value under
    ``<key_prefix>:context:<namespace>:<correlation_id>`` with the TTL it was
    stored with; :meth:`pop` reads and deletes it in one step (``GETDEL``), so
    exactly one replica gets it. ``namespace`` is the agent's name: a workflow
    keeps one correlation id across agents, so without it the agent that
    receives a request would take the context its sender stored for the answer.
    """

    kind = "workflow context"

    def __init__(
        self,
        url: str | SecretStr = DEFAULT_REDIS_URL,
        *,
        namespace: str,
        key_prefix: str = "chimera",
        timeout: float = 2.0,
        client: redis_lib.Redis | None = None,
    ) -> None:
        if not namespace:
            raise ConfigurationError(
                "namespace must name the agent (one context space per agent): a workflow's "
                "correlation id is the same in every agent it passes through"
            )
        super().__init__(url, key_prefix=key_prefix, timeout=timeout, client=client)
        self.namespace = namespace

    def _context_key(self, correlation_id: str) -> str:
        return self._key("context", f"{self.namespace}:{correlation_id}")

    def put(self, correlation_id: str, context: Context, ttl: float) -> None:
        try:
            value = json.dumps(context)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"workflow context for {correlation_id} cannot be stored in Redis: it must be "
                f"JSON (dicts, lists, strings, numbers, booleans, None): {exc}"
            ) from None
        try:
            self._redis.set(self._context_key(correlation_id), value, px=max(1, int(ttl * 1000)))
        except self._errors as exc:
            raise self._failed(f"storing the context of {correlation_id}", exc) from exc

    def pop(self, correlation_id: str) -> Context | None:
        try:
            raw: Any = self._redis.getdel(self._context_key(correlation_id))
        except self._errors as exc:
            raise self._failed(f"reading the context of {correlation_id}", exc) from exc
        if raw is None:
            return None
        context: Context = json.loads(raw)
        return context


class RedisDeduplicator(_RedisStore):
    """``@idempotent``'s memory in Redis: a message id handled by one replica is
    skipped by all of them for ``ttl`` seconds.

    Ids live under ``<key_prefix>:seen:<namespace>:<message_id>``; ``namespace``
    is the agent's name, because one event routed to two agents carries one
    message id and each must handle it once.
    """

    kind = "memory of handled message ids"

    def __init__(
        self,
        url: str | SecretStr = DEFAULT_REDIS_URL,
        *,
        namespace: str,
        ttl: float = 3600.0,
        key_prefix: str = "chimera",
        timeout: float = 2.0,
        client: redis_lib.Redis | None = None,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError(f"ttl must be > 0 seconds, got {ttl!r}")
        if not namespace:
            raise ConfigurationError(
                "namespace must name the agent: one event routed to two agents has one "
                "message id, and each agent must handle it"
            )
        super().__init__(url, key_prefix=key_prefix, timeout=timeout, client=client)
        self.ttl = ttl
        self.namespace = namespace

    def seen(self, message_id: str) -> bool:
        try:
            return bool(self._redis.exists(self._key("seen", f"{self.namespace}:{message_id}")))
        except self._errors as exc:
            raise self._failed(f"checking message {message_id}", exc) from exc

    def remember(self, message_id: str) -> None:
        try:
            self._redis.set(
                self._key("seen", f"{self.namespace}:{message_id}"),
                b"1",
                px=max(1, int(self.ttl * 1000)),
            )
        except self._errors as exc:
            raise self._failed(f"remembering message {message_id}", exc) from exc


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for messages."""
    try:
        split = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = split.netloc
    if split.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:******@{hostport}"
    return f"{split.scheme}://{netloc}{split.path}"
