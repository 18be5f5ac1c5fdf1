"""The pytest fixtures of :mod:`messaging.testing` (registered as the ``messaging`` plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from messaging.testing.bus import MemoryBus
from messaging.transport.memory import MemoryBroker


@pytest.fixture
def memory_bus(request: pytest.FixtureRequest) -> Iterator[MemoryBus]:
    """A fresh in-memory broker for this test, a pool on it, and helpers to drive it.

    Time on this broker only moves with :meth:`MemoryBus.advance`, so retry
    delays and TTLs are tested without sleeping.
    """
    bus = MemoryBus.fresh(label=request.node.name)
    try:
        yield bus
    finally:
        bus.close()


@pytest.fixture
def memory_broker(memory_bus: MemoryBus) -> MemoryBroker:
    """The in-memory broker of ``memory_bus``: for looking inside it directly."""
    return memory_bus.broker
