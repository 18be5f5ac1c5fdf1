"""The query agent as its own process.

``python -m messaging.demo.query_agent [--exchange NAME] [--queue NAME]``
"""

from __future__ import annotations

import sys

from messaging.demo.agents import QueryAgent
from messaging.demo.runner import run_agent


def main() -> int:
    return run_agent(QueryAgent)


if __name__ == "__main__":
    sys.exit(main())
