"""Chimera message bus: agents talking over RabbitMQ with Protocol Buffers messages.

The synchronous classes the spec names live here; their asyncio twins are in
:mod:`messaging.aio`.
"""

from messaging.agent import BaseAgent
from messaging.aio import hooks as _hooks
from messaging.aio import pool_hooks as _pool_hooks
from messaging.aio.envelope import Envelope, Outgoing
from messaging.aio.handlers import RequestContext
from messaging.aio.middleware import Middleware
from messaging.aio.pool import PoolHealth
from messaging.aio.rpc import Answer, Gathered
from messaging.backoff import RetryPolicy
from messaging.config import RabbitMQConfig, Settings, load_config
from messaging.connection import ConnectionPool
from messaging.context import ContextStore, InMemoryContextStore
from messaging.discovery import hooks as _discovery
from messaging.errors import (
    AuthenticationFailedError,
    BrokerRefusedError,
    CertificateVerificationError,
    ClosedError,
    ConfigurationError,
    ConnectionFailedError,
    DecodeError,
    InvalidMessageError,
    MessagingError,
    PoisonMessageError,
    PublishError,
    PublishNackedError,
    PublishTimeoutError,
    RejectedMessageError,
    RemoteError,
    RequestTimeoutError,
    ShutdownTimeoutError,
    StoreError,
    TopologyError,
    TopologyMismatchError,
    TopologyMissingError,
    UnknownRoutingKeyError,
    UnroutableMessageError,
    VirtualHostError,
)
from messaging.idempotency import Deduplicator, Idempotent, idempotent
from messaging.metadata import MessageBuilder, create_metadata
from messaging.ops import health as _health
from messaging.publisher import EventPublisher
from messaging.recorder import attach_if_enabled as _attach_recorder
from messaging.recorder import close_recorders as _close_recorders
from messaging.stores import RedisContextStore, RedisDeduplicator
from messaging.subscriber import EventSubscriber
from messaging.transport import (
    AmqpTransport,
    ChannelManager,
    ConnectionHealth,
    MemoryTransport,
    Transport,
)

# Operations watch the core from above: a subscriber that starts consuming
# serves the health endpoint when MONITORING__HTTP_PORT is set.
_hooks.on_subscriber_started(_health.serve_and_watch)
# ... and announces itself on the discovery exchange when DISCOVERY__ENABLED is true.
_hooks.on_subscriber_started(_discovery.announce)
_hooks.on_subscriber_stopping(_discovery.withdraw)
# Every pool records to the flight recorder's stream when RECORDER__ENABLED=true.
_pool_hooks.on_pool_created(_attach_recorder)
_pool_hooks.on_pool_closing(_close_recorders)

__all__ = [
    "AmqpTransport",
    "Answer",
    "AuthenticationFailedError",
    "BaseAgent",
    "BrokerRefusedError",
    "CertificateVerificationError",
    "ChannelManager",
    "ClosedError",
    "ConfigurationError",
    "ConnectionFailedError",
    "ConnectionHealth",
    "ConnectionPool",
    "ContextStore",
    "DecodeError",
    "Deduplicator",
    "Envelope",
    "EventPublisher",
    "EventSubscriber",
    "Gathered",
    "Idempotent",
    "InMemoryContextStore",
    "InvalidMessageError",
    "MemoryTransport",
    "MessageBuilder",
    "MessagingError",
    "Middleware",
    "Outgoing",
    "PoisonMessageError",
    "PoolHealth",
    "PublishError",
    "PublishNackedError",
    "PublishTimeoutError",
    "RabbitMQConfig",
    "RedisContextStore",
    "RedisDeduplicator",
    "RejectedMessageError",
    "RemoteError",
    "RequestContext",
    "RequestTimeoutError",
    "RetryPolicy",
    "Settings",
    "ShutdownTimeoutError",
    "StoreError",
    "TopologyError",
    "TopologyMismatchError",
    "TopologyMissingError",
    "Transport",
    "UnknownRoutingKeyError",
    "UnroutableMessageError",
    "VirtualHostError",
    "create_metadata",
    "idempotent",
    "load_config",
]
