"""The flight recorder: every publish and every handled delivery, on a RabbitMQ stream.

Off unless asked for: ``RECORDER__ENABLED=true`` (every pool records), or
``pool.use(FlightRecorder(pool))``. ``chimera-bus trace`` reads it back;
:mod:`messaging.recorder.record` documents the record's schema.
"""

from __future__ import annotations

import logging

from messaging.aio.pool_hooks import NewPool
from messaging.recorder.record import Decoded, Record, decode, encode
from messaging.recorder.recorder import FlightRecorder
from messaging.recorder.settings import RecorderSettings, load_recorder_settings

log = logging.getLogger("messaging.recorder")


def attach_if_enabled(pool: NewPool) -> None:
    """Give ``pool`` a :class:`FlightRecorder` when ``RECORDER__ENABLED`` is true."""
    settings = load_recorder_settings()
    if not settings.enabled:
        return
    if any(isinstance(m, FlightRecorder) for m in pool.middlewares):
        return
    pool.use(FlightRecorder(pool, settings))


async def close_recorders(pool: NewPool) -> None:
    """Before ``pool`` closes: its recorders write what they hold (bounded) and stop."""
    for middleware in pool.middlewares:
        if isinstance(middleware, FlightRecorder):
            try:
                await middleware.close(timeout=2.0)
            except Exception:  # recording must never stop a pool from closing
                log.exception("flight recorder: could not write its last records")


__all__ = [
    "Decoded",
    "FlightRecorder",
    "Record",
    "RecorderSettings",
    "attach_if_enabled",
    "close_recorders",
    "decode",
    "encode",
    "load_recorder_settings",
]
