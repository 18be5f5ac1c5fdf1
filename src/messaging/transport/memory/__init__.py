"""The in-process broker: RabbitMQ's semantics with no socket, for tests and the demo.

``RABBITMQ__URL=memory://`` makes every pool of the process meet on one
broker; ``memory://NAME`` names a separate one. :mod:`messaging.testing` gives
each test a fresh broker with a clock the test moves.
"""

from messaging.transport.memory.broker import (
    MemoryBroker,
    QueueState,
    get_broker,
    install_broker,
    remove_broker,
)
from messaging.transport.memory.clock import Clock, ManualClock, SystemClock
from messaging.transport.memory.model import Message

__all__ = [
    "Clock",
    "ManualClock",
    "MemoryBroker",
    "Message",
    "QueueState",
    "SystemClock",
    "get_broker",
    "install_broker",
    "remove_broker",
]
