"""Run the query agent in this process until Ctrl-C (or SIGTERM).

    python examples/query_agent.py [--exchange NAME]

The agent itself is ``messaging.demo.agents.QueryAgent``; start the three
agents in three terminals, then ask with ``python examples/ask.py``.
"""

from __future__ import annotations

import sys

from messaging.demo.query_agent import main

if __name__ == "__main__":
    sys.exit(main())
