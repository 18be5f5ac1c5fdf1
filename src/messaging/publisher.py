"""The README's EventPublisher, for synchronous code."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence
from typing import Unpack

from google.protobuf.message import Message as ProtoMessage

from messaging._portal import Portal
from messaging.aio.deadline import inherited_timeout
from messaging.aio.middleware import Middleware
from messaging.aio.options import MessageOptions, PublishOptions
from messaging.aio.publisher import DEFAULT_EXCHANGE, AsyncEventPublisher
from messaging.aio.rpc import Gathered, Reply
from messaging.connection import ConnectionPool
from messaging.ops import tracing


class SyncAsking:
    """``request``, ``stream`` and ``gather`` for the sync faces that ask through an
    :class:`~messaging.aio.AsyncEventPublisher` (:class:`EventPublisher`,
    :class:`~messaging.BaseAgent`): written once, each a hop to the IO thread."""

    _portal: Portal

    @property
    def _asker(self) -> AsyncEventPublisher:
        raise NotImplementedError

    def request(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 30.0,
        *,
        response_type: type[Reply] | None = None,
    ) -> Reply:
        """Send a request and block for its reply (``response_type``: the reply's type).

        Raises :class:`~messaging.errors.RemoteError` when the responder gave up on
        it, :class:`~messaging.errors.RequestTimeoutError` after ``timeout``; see
        :meth:`messaging.aio.AsyncEventPublisher.request`.
        """
        return self._portal.call(
            tracing.carry(
                self._asker.request(
                    message, routing_key, inherited_timeout(timeout), response_type=response_type
                )
            )
        )

    def stream(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 60.0,
        *,
        window: int = 16,
        response_type: type[Reply] | None = None,
    ) -> Iterator[Reply]:
        """Iterate a streaming handler's replies as they come (``for reply in ...``);
        leaving the loop early tells the responder to stop. See
        :meth:`messaging.aio.AsyncEventPublisher.stream`."""
        return self._portal.iterate(
            self._asker.stream(
                message,
                routing_key,
                inherited_timeout(timeout),
                window=window,
                response_type=response_type,
            )
        )

    def gather(
        self,
        message: ProtoMessage,
        routing_key: str,
        timeout: float = 5.0,
        *,
        max_replies: int | None = None,
        response_type: type[ProtoMessage] | None = None,
    ) -> Gathered:
        """Ask every agent bound to ``routing_key``; see :meth:`AsyncEventPublisher.gather`."""
        return self._portal.call(
            tracing.carry(
                self._asker.gather(
                    message,
                    routing_key,
                    inherited_timeout(timeout),
                    max_replies=max_replies,
                    response_type=response_type,
                )
            )
        )


class EventPublisher(SyncAsking):
    """Publishes protobuf messages to a topic exchange; see :class:`AsyncEventPublisher`.

    ``publish`` blocks until the broker confirms. ``publish_nowait`` returns a
    future instead, so that many publishes can be in flight at once with the
    same guarantee (the future fails as ``publish`` would raise).

    ``mandatory=False`` (for every publish here, or per :meth:`publish`) is for
    events nobody may listen to yet: the broker confirms and drops a message
    no queue is bound for, instead of ``publish`` raising
    :class:`~messaging.errors.UnroutableMessageError`.
    """

    def __init__(
        self,
        connection_pool: ConnectionPool,
        agent_name: str,
        exchange_name: str = DEFAULT_EXCHANGE,
        *,
        publish_timeout: float | None = None,
        mandatory: bool = True,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.aio = AsyncEventPublisher(
            connection_pool.aio,
            agent_name,
            exchange_name,
            publish_timeout=publish_timeout,
            mandatory=mandatory,
            middlewares=middlewares,
        )
        self._portal = Portal.get()

    def use(self, middleware: Middleware) -> Middleware:
        """Add a middleware to every message this publisher sends (after the pool's)."""
        return self.aio.use(middleware)

    @property
    def agent_name(self) -> str:
        return self.aio.agent_name

    @property
    def exchange_name(self) -> str:
        return self.aio.exchange_name

    def publish(
        self, message: ProtoMessage, routing_key: str, **options: Unpack[PublishOptions]
    ) -> str:
        """Publish and wait for the broker's confirm; returns the ``message_id``.

        Raises :class:`~messaging.errors.UnroutableMessageError` when no queue is
        bound for ``routing_key``, unless ``mandatory=False`` (default: the
        publisher's setting), when the broker drops such a message silently.
        Every option (``exchange=``, ``headers=``, ...):
        :class:`~messaging.aio.options.PublishOptions`.
        """
        outgoing = self.aio.prepare(message, routing_key, **options)
        return self._portal.call(self.aio.send(outgoing))

    def publish_nowait(
        self, message: ProtoMessage, routing_key: str, **options: Unpack[PublishOptions]
    ) -> concurrent.futures.Future[str]:
        """Start a publish and return at once; the future resolves on the confirm.

        Bad input raises here, as with :meth:`publish`; the future fails as
        :meth:`publish` would raise for the broker's answer.
        """
        outgoing = self.aio.prepare(message, routing_key, **options)
        return self._portal.submit(self.aio.send(outgoing))

    def publish_with_reply(
        self,
        message: ProtoMessage,
        routing_key: str,
        reply_queue: str,
        correlation_id: str,
        **options: Unpack[MessageOptions],
    ) -> str:
        publishing = self.aio.publish_with_reply(
            message, routing_key, reply_queue, correlation_id, **options
        )
        return self._portal.call(tracing.carry(publishing))

    @property
    def _asker(self) -> AsyncEventPublisher:
        return self.aio

    def close(self) -> None:
        self._portal.call(self.aio.close())

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
