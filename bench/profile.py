"""Flame graphs (SVG, py-spy) of every bus implementation on every row.

    python bench/profile.py bench/profiles/after            # every bus row
    python bench/profile.py OUT --only consume100 --impl "bus aio+uvloop"

Each graph is one worker (``bench/run.py --worker``) with py-spy attached to
the timed work only (see ``profiling.py``). Message counts are larger than the
bench defaults so each graph holds a few thousand samples. ``OUT/index.md``
lists the graphs with the rate each worker reached *under the profiler*: that
figure is slowed by the sampling and is not a benchmark result. Run as root
(py-spy attaches with ptrace).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from common import Sample
from profiling import PROFILE_ENV
from registry import REGISTRY, ROWS, load_all
from run import run_worker

# Enough work for ~5-20 s per graph on the shared 2-core machine.
PROFILE_MESSAGES = {"publish": 10_000, "consume100": 50_000, "consume1": 10_000, "rpc": 3_000}


def file_name(work: str, impl: str, suffix: str = ".svg") -> str:
    return f"{work}--{impl.replace(' ', '-').replace('+', '-')}{suffix}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="directory for the SVGs and index.md")
    parser.add_argument("--only", default=None, help=f"comma-separated rows of {list(ROWS)}")
    parser.add_argument("--impl", action="append", default=None, help="implementation (repeat)")
    parser.add_argument("--messages", type=int, default=None, help="override N for every row")
    parser.add_argument(
        "--raw", action="store_true", help="collapsed stacks (.txt, for bench/hotspots.py), not SVG"
    )
    args = parser.parse_args(argv)

    load_all()
    # The soak row measures memory over minutes; its profile would say nothing new.
    rows = args.only.split(",") if args.only else [r for r in ROWS if ROWS[r].kind != "soak"]
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# flame graphs, {datetime.now(UTC).isoformat(timespec='minutes')}",
        "",
        f"`{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`, load average "
        f"{os.getloadavg()[0]:.1f} at the start. Rates are under py-spy (sampling at "
        "250 Hz slows the worker): they are not benchmark figures.",
        "",
        "| row | implementation | N | rate under the profiler | graph |",
        "| --- | --- | --- | --- | --- |",
    ]
    failed = 0
    for work in rows:
        impls = [
            name
            for name, impl in REGISTRY[work].items()
            if (name in args.impl if args.impl else not (impl.raw or impl.anchor))
        ]
        for name in impls:
            svg = args.out / file_name(work, name, ".txt" if args.raw else ".svg")
            n = args.messages or PROFILE_MESSAGES[work]
            print(f"  {work} {name} (n={n}) -> {svg}", file=sys.stderr, flush=True)
            os.environ[PROFILE_ENV] = str(svg.resolve())
            out = run_worker(name, work, n)
            if isinstance(out, Sample):
                figure = (
                    f"p50 {out.p50_ms:.2f} ms" if out.p50_ms is not None else f"{out.rate:,.0f}/s"
                )
                lines.append(f"| {work} | {name} | {n} | {figure} | [{svg.name}]({svg.name}) |")
            else:
                failed += 1
                print(f"    FAILED: {out}", file=sys.stderr)
                lines.append(f"| {work} | {name} | {n} | failed: {out} | - |")
    (args.out / "index.md").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
