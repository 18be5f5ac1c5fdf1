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
            "Start the data, analysis and query agents as separate processes, ask them "
            "questions through RabbitMQ, print every step, then stop and clean up."
        ),
    )
    parser.add_argument("questions", nargs="*", help="default: ZEC, BTC, ETH and an unknown symbol")
    parser.add_argument(
        "--exchange",
        default=None,
        help="exchange to use and keep (default: a fresh chimera.demo.<id>, deleted afterwards)",
    )
    args = parser.parse_args(argv)
    return run_demo(args.questions or None, exchange=args.exchange)


if __name__ == "__main__":
    sys.exit(main())
