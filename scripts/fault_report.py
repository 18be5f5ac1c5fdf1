"""Print the fault-scenario results as a table: the latest row per scenario.

The fault tests append one JSON line per scenario run (see
``tests/faults/toolkit/ledger.py``) to ``$CHIMERA_FAULT_RESULTS``, default
``bench/results/faults.jsonl``.

    python scripts/fault_report.py                 # aligned plain text
    python scripts/fault_report.py --markdown      # paste into a PR or README
    python scripts/fault_report.py --all FILE      # every run, not only the latest
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.faults.toolkit.ledger import (  # noqa: E402  (needs the repo root on sys.path)
    format_table,
    latest_per_scenario,
    load_results,
    results_path,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "path", nargs="?", type=Path, help="results file (default: %(default)s)", default=None
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--all", action="store_true", help="every run, not only the latest")
    args = parser.parse_args(argv)

    path: Path = args.path or results_path()
    results = load_results(path)
    if not results:
        print(f"no fault results in {path}", file=sys.stderr)
        return 1
    shown = results if args.all else latest_per_scenario(results)
    print(format_table(shown, markdown=args.markdown))
    failed = [result.scenario for result in shown if not result.ok]
    if failed:
        print(f"\n{len(failed)} scenario(s) broke invariants: {', '.join(failed)}", file=sys.stderr)
        for result in shown:
            for violation in result.violations:
                print(f"  {result.scenario}: {violation}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
