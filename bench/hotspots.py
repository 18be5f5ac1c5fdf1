"""Where the samples of a collapsed-stack profile (``profile.py --raw``) go.

    python bench/hotspots.py /tmp/prof/rpc--bus.txt [--top 40] [--thread messaging-io]

Prints, per thread, the functions with the most samples on top of the stack
(self) and anywhere in it (inclusive), as shares of that thread's samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

# py-spy's raw format: "thread (0x7f..);frame (file.py);frame (file.py) COUNT"
_FRAME_FILE = re.compile(r" \(([^()]*)\)$")


def _short(frame: str) -> str:
    match = _FRAME_FILE.search(frame)
    if not match:
        return frame
    path = match.group(1)
    parts = path.split("/")
    where = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{frame[: match.start()]} ({where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--thread", default=None, help="only threads whose name contains this")
    args = parser.parse_args()

    own: dict[str, Counter[str]] = defaultdict(Counter)
    anywhere: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = re.sub(r" ?\(0x[0-9a-f]+\)", "", frames[0]).strip() or frames[0]
        if args.thread and args.thread not in thread:
            continue
        n = int(count)
        calls = [_short(f) for f in frames[1:]]
        totals[thread] += n
        if calls:
            own[thread][calls[-1]] += n
        for call in set(calls):
            anywhere[thread][call] += n
    for thread, total in totals.most_common():
        print(f"\n## {thread}: {total} samples")
        print("  self:")
        for call, n in own[thread].most_common(args.top):
            print(f"    {100 * n / total:5.1f}%  {call}")
        print("  inclusive:")
        for call, n in anywhere[thread].most_common(args.top):
            print(f"    {100 * n / total:5.1f}%  {call}")


if __name__ == "__main__":
    main()
