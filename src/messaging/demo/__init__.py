"""A runnable three-agent pipeline: the bus doing its main job.

- :mod:`messaging.demo.prices`: a deterministic price source (no network);
- :mod:`messaging.demo.agents`: ``DataAgent``, ``AnalysisAgent`` and ``QueryAgent``,
  each runnable alone: ``python -m messaging.demo.data_agent`` (``analysis_agent``,
  ``query_agent``);
- :mod:`messaging.demo.client`: ``AskClient``; ``python -m messaging.demo.ask`` asks
  running agents;
- :mod:`messaging.demo.pipeline`: :func:`run_demo`, all of it at once:
  ``python -m messaging.demo`` or ``chimera-bus demo``.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["run_demo"]


def run_demo(
    questions: list[str] | None = None,
    *,
    exchange: str | None = None,
    broker: Literal["rabbitmq", "memory"] | None = None,
) -> int:
    """See :func:`messaging.demo.pipeline.run_demo` (imported on first use)."""
    from messaging.demo.pipeline import run_demo as run

    return run(questions, exchange=exchange, broker=broker)
