"""Moved to :mod:`messaging.ops.logs`; this name stays because earlier READMEs showed it."""

from messaging.ops.logs import (
    JSONFormatter,
    TextFormatter,
    configure_from_config,
    configure_logging,
)

__all__ = ["JSONFormatter", "TextFormatter", "configure_from_config", "configure_logging"]
