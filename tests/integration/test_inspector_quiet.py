"""Asking the broker about something missing is an answer, not trouble: no WARNING.

RabbitMQ answers a passive declare of a missing queue by closing the channel;
the demo asks that while its agents start, and used to print a WARNING
"inspect channel closed ... NOT_FOUND ... reopening" for every question.
"""

from __future__ import annotations

import logging

import pytest

from messaging.aio import AsyncConnectionPool
from messaging.config import RabbitMQConfig
from tests.conftest import Names


async def test_questions_about_missing_things_log_no_warning(
    config: RabbitMQConfig, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    pool = AsyncConnectionPool(config)
    inspector = pool.consuming.inspector("test:inspect")
    missing = names.queue("missing")
    with caplog.at_level(logging.WARNING, logger="messaging"):
        for _ in range(3):
            assert await inspector.queue(missing) is None
            assert await inspector.exchange_exists(f"{missing}.nowhere") is False
    await inspector.close()
    await pool.close()
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []
