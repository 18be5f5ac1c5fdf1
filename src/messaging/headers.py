"""Headers the bus sets on messages it retries or dead-letters.

A dead letter carries everything a person reading the DLQ, or a tool
replaying it, needs: why it failed, where, and where it was going.
"""

ERROR_TYPE = "x-chimera-error-type"
ERROR_MESSAGE = "x-chimera-error-message"
FAILED_AGENT = "x-chimera-failed-agent"
ORIGINAL_EXCHANGE = "x-chimera-original-exchange"
ORIGINAL_ROUTING_KEY = "x-chimera-original-routing-key"
ATTEMPTS = "x-chimera-attempts"
"""How many times handling has failed so far."""
REDELIVERIES = "x-chimera-redeliveries"
"""How many times the broker redelivered it unacked (its consumer died holding it)."""

MAX_ERROR_MESSAGE = 1000
