"""One shutdown deadline for both APIs, and what happens when it passes.

A subscriber asked to stop (``stop()``, SIGTERM, SIGINT) finishes the message
in hand, then closes. A handler that never returns would keep the process up
for ever while it holds an unacked message; so stopping has a deadline,
``shutdown_timeout`` (:data:`DEFAULT_SHUTDOWN_TIMEOUT` seconds, settable per
subscriber or agent). The async API stops waiting for its handlers at the
deadline, hands their messages back to the queue and raises
:class:`~messaging.errors.ShutdownTimeoutError` from ``start_consuming()``.
A sync handler cannot be interrupted, and an async one that blocks the event
loop stops everything, so a watchdog thread ends the process with
:data:`EXIT_STATUS` once the deadline (plus a little grace for the async
API) has passed: the broker sees the connections close and puts every unacked
message back in its queue.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from messaging.errors import ConfigurationError

log = logging.getLogger("messaging.subscriber")

DEFAULT_SHUTDOWN_TIMEOUT = 30.0
"""Seconds a stopping subscriber waits for the handlers in hand (``shutdown_timeout``)."""
EXIT_STATUS = 70
"""The process's exit status when a handler outlives the deadline (EX_SOFTWARE)."""
ASYNC_GRACE = 5.0
"""Extra seconds the async API gets before the watchdog, for its own orderly timeout."""


def validate_shutdown_timeout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"shutdown_timeout must be seconds > 0, got {value!r}")
    return float(value)


class Watchdog:
    """Ends the process if a shutdown has not finished by its deadline.

    :meth:`arm` when consuming starts (the thread waits, doing nothing);
    :meth:`begin` when shutdown begins (safe in a signal handler: it only sets
    an event); :meth:`finished` when it is done.
    """

    def __init__(self, agent_name: str, timeout: float) -> None:
        self.agent_name = agent_name
        self.timeout = timeout
        self._begun = threading.Event()
        self._finished = threading.Event()

    def arm(self) -> None:
        self._begun.clear()
        self._finished.clear()
        threading.Thread(
            target=self._watch, name=f"shutdown-deadline-{self.agent_name}", daemon=True
        ).start()

    def begin(self, timeout: float | None = None) -> None:
        """Start the countdown (``timeout``: this once, instead of the one given at creation)."""
        if timeout is not None:
            self.timeout = timeout
        self._begun.set()

    @property
    def begun(self) -> bool:
        return self._begun.is_set() and not self._finished.is_set()

    def finished(self) -> None:
        self._finished.set()
        self._begun.set()  # wake the thread so it ends

    def _watch(self) -> None:
        self._begun.wait()
        if self._finished.wait(self.timeout):
            return
        log.critical(
            "%s: still not stopped %.0fs after shutdown began (a handler does not return); "
            "exiting with status %d: the broker puts its unacked message(s) back in the queue",
            self.agent_name,
            self.timeout,
            EXIT_STATUS,
        )
        for handler in logging.getLogger().handlers + log.handlers:
            with contextlib.suppress(Exception):  # exiting anyway
                handler.flush()
        os._exit(EXIT_STATUS)
