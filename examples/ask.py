"""Ask the running agents questions and print the answers.

    python examples/ask.py ["What is the ZEC price?" ...] [--exchange NAME]

Start the agents first (examples/data_agent.py, analysis_agent.py,
query_agent.py), or run everything at once with ``python -m messaging.demo``.
"""

from __future__ import annotations

import sys

from messaging.demo.client import main

if __name__ == "__main__":
    sys.exit(main())
