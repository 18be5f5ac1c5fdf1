"""The analysis agent as its own process.

``python -m messaging.demo.analysis_agent [--exchange NAME] [--queue NAME]``
"""

from __future__ import annotations

import sys

from messaging.demo.agents import AnalysisAgent
from messaging.demo.runner import run_agent


def main() -> int:
    return run_agent(AnalysisAgent)


if __name__ == "__main__":
    sys.exit(main())
