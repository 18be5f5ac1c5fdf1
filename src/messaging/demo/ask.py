"""Ask running agents questions: ``python -m messaging.demo.ask [QUESTION ...]``."""

from __future__ import annotations

import sys

from messaging.demo.client import main

if __name__ == "__main__":
    sys.exit(main())
