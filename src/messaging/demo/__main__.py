"""``python -m messaging.demo [--exchange NAME] [QUESTION ...]``: the whole pipeline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from messaging.demo.pipeline import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m messaging.demo",
        description=(
            "Start the data, analysis and query agents, ask them questions through the "
            "broker, print every step, then stop and clean up."
        ),
    )
    parser.add_argument("questions", nargs="*", help="default: ZEC, BTC, ETH and an unknown symbol")
    parser.add_argument(
        "--exchange",
        default=None,
        help="exchange to use and keep (default: a fresh chimera.demo.<id>, deleted afterwards)",
    )
    parser.add_argument(
        "--broker",
        choices=("rabbitmq", "memory"),
        default=None,
        help=(
            "rabbitmq: agents as processes on the RabbitMQ of RABBITMQ__*; memory: agents as "
            "threads on the in-process broker, no RabbitMQ needed (default: what "
            "RABBITMQ__URL says, else rabbitmq)"
        ),
    )
    args = parser.parse_args(argv)
    return run_demo(args.questions or None, exchange=args.exchange, broker=args.broker)


if __name__ == "__main__":
    sys.exit(main())
