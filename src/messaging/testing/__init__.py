"""Test your agents without RabbitMQ: an in-process broker per test, and helpers.

Installed with the package as a pytest plugin (the ``pytest11`` entry point),
so its fixtures are there in any project that depends on ``chimera-messaging``:

- ``memory_bus``: a :class:`MemoryBus` on a fresh in-memory broker (its own
  name, its own clock), with a :class:`~messaging.ConnectionPool` on it, and
  the helpers below; everything is closed and forgotten after the test;
- ``memory_broker``: that test's :class:`~messaging.transport.memory.MemoryBroker`.

BASE_AGENT.md, "Testing your agents", has a worked example for a sync and an
async agent.
"""

from messaging.testing.bus import DeadLetter, MemoryBus, Stored
from messaging.testing.replay import Conversation, Hop, HopWatcher

__all__ = ["Conversation", "DeadLetter", "Hop", "HopWatcher", "MemoryBus", "Stored"]
