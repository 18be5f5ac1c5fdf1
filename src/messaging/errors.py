"""Every error the bus raises, in one tree.

    MessagingError
    ├── ConfigurationError            a setting is missing or malformed (names the variable)
    ├── InvalidMessageError           bad input to publish: not protobuf, empty/invalid key, too big
    ├── ConnectionFailedError         the broker could not be reached within the retry policy
    │   ├── BrokerRefusedError        the broker said no; retrying cannot help
    │   │   ├── AuthenticationFailedError   login refused: password, certificate
    │   │   └── VirtualHostError            unknown vhost, or no access to it
    │   └── CertificateVerificationError    the broker's TLS certificate did not verify
    ├── TopologyError                 the broker refused a declaration
    │   ├── TopologyMismatchError     the entity exists with other arguments (PRECONDITION_FAILED)
    │   └── TopologyMissingError      declare=False and something the agent needs does not exist
    ├── PublishError                  a publish did not succeed; nothing was confirmed
    │   ├── PublishNackedError        the broker nacked it (publish again)
    │   ├── UnroutableMessageError    no queue is bound for its routing key (mandatory return)
    │   └── PublishTimeoutError       no confirm within the publish timeout (outcome unknown)
    ├── DecodeError                   a body that is not the protobuf it claims to be
    │   └── UnknownRoutingKeyError    no message class for the routing key that arrived
    ├── PoisonMessageError            redelivered too often without an ack (it kills its consumer)
    ├── RejectedMessageError          a handler or middleware refuses a message: DLQ, no retries
    │   └── StreamFailedError         a streaming handler raised (its caller was told at once)
    ├── RequestTimeoutError           no reply to a request within its timeout
    ├── RemoteError                   the agent answering a request gave up on it (handler failed)
    ├── ShutdownTimeoutError          handlers still running at the shutdown deadline
    ├── StoreError                    the shared store (Redis) is unreachable or failed
    └── ClosedError                   the object was closed and cannot be used

Errors of the AMQP client below are translated into these in `messaging.transport`
and nowhere else; the original is kept as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MIGRATION_RECIPE = "docs/DEPLOYMENT.md#moving-a-classic-queue-to-quorum"
"""Where the steps to move an existing classic queue to quorum are written down."""


class MessagingError(Exception):
    """Root of every error raised by this library."""


class ConfigurationError(MessagingError, ValueError):
    """A configuration value is missing or malformed."""


class InvalidMessageError(MessagingError, ValueError):
    """A message or routing key that cannot be published; nothing was sent."""


class ConnectionFailedError(MessagingError, ConnectionError):
    """The broker could not be reached within the retry policy."""


class BrokerRefusedError(ConnectionFailedError):
    """The broker refused the connection for a reason no retry can fix."""


class AuthenticationFailedError(BrokerRefusedError):
    """The broker refused the login: the user name and password, or the client certificate
    (``RABBITMQ__AUTH_MECHANISM=external``), or the mechanism itself."""


class VirtualHostError(BrokerRefusedError):
    """The virtual host does not exist, or the user has no access to it."""


class CertificateVerificationError(ConnectionFailedError):
    """The broker's TLS certificate could not be verified (chain or host name).

    Retrying cannot fix it: the CA file, the broker's certificate or
    ``RABBITMQ__TLS_SERVER_NAME`` must change.
    """


class TopologyError(MessagingError):
    """The broker refused to declare an exchange, queue or binding."""


class TopologyMismatchError(TopologyError):
    """An exchange or queue already exists with different arguments.

    The broker never changes an existing entity's arguments; the fix is to
    delete it (losing its messages) or to declare it as it is.
    """

    def __init__(
        self,
        entity: str,
        name: str,
        differences: Mapping[str, tuple[Any, Any]],
        broker_text: str,
    ) -> None:
        self.entity = entity
        self.name = name
        self.differences = dict(differences)
        self.broker_text = broker_text
        if "x-queue-type" in self.differences:
            want, have = self.differences["x-queue-type"]
            super().__init__(
                f"{entity} {name!r} exists as a {_queue_type(have)} queue and cannot be "
                f"declared as a {_queue_type(want)} queue: a queue never changes type. "
                f"Declare it as it is (queue_type={_queue_type(have)!r}), or move it to a new "
                f"{_queue_type(want)} queue as described in {MIGRATION_RECIPE}."
            )
            return
        if differences:
            diff = ", ".join(
                f"{arg}: declared {want!r}, broker has {have!r}"
                for arg, (want, have) in sorted(differences.items())
            )
        else:
            diff = broker_text
        super().__init__(
            f"{entity} {name!r} already exists with different arguments ({diff}). "
            f"The broker never changes an existing {entity}: delete it "
            f"(e.g. `rabbitmqctl delete_queue {name}`, losing its messages) or "
            f"declare it with the arguments it has."
        )


def _queue_type(broker_value: Any) -> str:
    """'quorum' from the broker's "the value 'quorum' of type 'longstr'"; 'classic' from none."""
    text = str(broker_value)
    for kind in ("quorum", "stream", "classic"):
        if kind in text:
            return kind
    return "classic"


class TopologyMissingError(TopologyError):
    """``declare=False``: an exchange or queue the component needs does not exist.

    Nothing was declared; whoever manages the broker's topology (a definitions
    file, an operator) must create it first.
    """


class StoreError(MessagingError):
    """The shared store (Redis) behind workflow context or deduplication failed.

    There is no fallback to process memory: in a replica set that would
    silently lose context and let duplicates through.
    """


class PublishError(MessagingError):
    """A publish was not confirmed by the broker."""


class PublishNackedError(PublishError):
    """The broker negatively acknowledged the message: it did not take responsibility.

    Publish it again. Usually nothing was stored, but a quorum queue whose
    leader is failing over may nack a message that it then delivers (seen on
    the cluster tests' kill -9 scenario), so a re-publish can make a duplicate.
    """


class UnroutableMessageError(PublishError):
    """The exchange had no queue bound for the routing key; the message was returned."""


class PublishTimeoutError(PublishError, TimeoutError):
    """No confirm arrived in time. The message may or may not have been stored."""


class DecodeError(MessagingError, ValueError):
    """A message body could not be decoded into the expected protobuf class."""


class UnknownRoutingKeyError(DecodeError):
    """No message class is registered for the routing key that arrived."""


class PoisonMessageError(MessagingError):
    """A message redelivered more than ``max_redeliveries`` times without being acked.

    Each redelivery means the consumer holding it crashed or lost its
    connection; the bus dead-letters it instead of letting it loop.
    """


class RejectedMessageError(MessagingError):
    """Raised by a handler or a middleware to dead-letter the message at once, without retries.

    For a message that can never succeed (it fails an authorisation check, it
    breaks a business rule); the DLQ copy carries the error's text.
    """


class StreamFailedError(RejectedMessageError):
    """A streaming handler raised: its caller got the error as the stream's last reply, and
    the request is dead-lettered at once (a retry would send its replies again)."""


class RequestTimeoutError(MessagingError, TimeoutError):
    """A request got no reply within its timeout."""


class RemoteError(MessagingError):
    """The agent answering a request gave up on it: its handler failed for good.

    Raised by ``request()`` as soon as the responder dead-letters the request
    (after its retries, or at once for a permanent error), instead of the
    caller waiting out its timeout. ``error_type`` is the remote exception's
    full name, ``remote_message`` its text, ``agent`` the responder.
    """

    def __init__(
        self, error_type: str, remote_message: str, agent: str, correlation_id: str
    ) -> None:
        super().__init__(
            f"{agent or 'the responder'} failed the request: {error_type}: {remote_message} "
            f"[correlation_id={correlation_id}]"
        )
        self.error_type = error_type
        self.remote_message = remote_message
        self.agent = agent
        self.correlation_id = correlation_id


class ClosedError(MessagingError, RuntimeError):
    """The object was closed and cannot be used any more."""


class ShutdownTimeoutError(MessagingError):
    """Handlers were still running when the shutdown deadline passed.

    Their messages went back to the queue (nothing was acked). Raised by the
    async ``start_consuming()``, so that a process that lets it propagate
    exits non-zero.
    """
