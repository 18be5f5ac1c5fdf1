"""Operations: metrics, logs, tracing and the health endpoint.

They watch the core; the core does not start them. The core only counts into
:mod:`~messaging.ops.metrics` and binds :mod:`~messaging.ops.logcontext` and
:mod:`~messaging.ops.tracing` on the hot path (leaf modules that import
nothing of the core); :mod:`~messaging.ops.health` looks at the core from
above and is attached to it through :mod:`messaging.aio.hooks` by the
``messaging`` package.
"""
