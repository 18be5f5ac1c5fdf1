"""Moved to :mod:`messaging.ops.tracing`; this name stays because earlier READMEs showed it."""

from messaging.ops.tracing import disable_tracing, enable_tracing

__all__ = ["disable_tracing", "enable_tracing"]
