"""Running one demo agent as a process: arguments, logging, connection, consume."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from messaging import ConnectionPool, MessagingError, load_config
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.demo.agents import DemoAgent

__all__ = ["configure_logging", "run_agent"]

log = logging.getLogger("messaging.demo")


def configure_logging() -> None:
    """INFO for the demo's steps and the consumers starting; WARNING for the rest of the bus."""
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name in ("messaging.demo", "messaging.subscriber"):
        logging.getLogger(name).setLevel(logging.INFO)


def run_agent(agent_class: type[DemoAgent], argv: Sequence[str] | None = None) -> int:
    """Consume as ``agent_class`` until SIGINT or SIGTERM; the exit status."""
    parser = argparse.ArgumentParser(
        prog=f"python -m messaging.demo.{agent_class.AGENT_NAME}",
        description=(agent_class.__doc__ or "").strip().splitlines()[0],
    )
    parser.add_argument(
        "--exchange",
        default=DEFAULT_EXCHANGE,
        help=f"topic exchange to use (default {DEFAULT_EXCHANGE})",
    )
    parser.add_argument(
        "--queue",
        default=None,
        help="queue to consume (default: the agent name, prefixed by any other exchange)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_config()
        rabbitmq = settings.rabbitmq.model_copy(update={"connection_name": agent_class.AGENT_NAME})
        with ConnectionPool(rabbitmq) as pool:
            agent = agent_class(pool, args.exchange, args.queue)
            try:
                agent.start_consuming()
            finally:
                agent.close()
    except MessagingError as exc:
        log.error("%s: %s", agent_class.AGENT_NAME, exc)
        return 1
    return 0
