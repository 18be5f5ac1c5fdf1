"""Raw clients (and the bus) doing the same work in one run; prints ratios.

    python bench/run.py [--messages N] [--only WORK[,WORK]] [--repeat R] [--json out.json]

Each (row, implementation, repeat) runs in a fresh subprocess
(``python bench/run.py --worker IMPL WORK ...``) that declares its own uniquely
named exchange and queue, does the work, deletes them, and prints one JSON
Sample on stdout. Repeats are interleaved (every implementation once, then
again) so slow drift on a shared machine hits all of them alike; the table
shows the median. See bench/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import BenchContext, Sample, last_cpu_seconds, make_context
from google.protobuf.internal import api_implementation
from profiling import profiled
from registry import REGISTRY, ROWS, Impl, load_all

HERE = Path(__file__).resolve().parent
REFERENCE = "aio-pika"  # the second ratio column
ANCHOR = "amqplib"  # the third: Node.js amqplib, the cross-language anchor
WORKER_RETRIES = 1  # a failed worker is run once more (its failure is reported)
RETRY_PAUSE_S = 5.0


@dataclass
class Result:
    """All samples of one implementation on one row, and their medians."""

    impl: str
    raw: bool
    samples: list[Sample]
    errors: list[str]
    retried: list[str] = field(default_factory=list)
    anchor: bool = False

    def median(self, attr: str) -> float | None:
        values = [v for s in self.samples if (v := getattr(s, attr)) is not None]
        return statistics.median(values) if values else None

    def median_note(self, key: str) -> float | None:
        values = [float(s.notes[key]) for s in self.samples if key in s.notes]
        return statistics.median(values) if values else None


def worker(impl_name: str, work: str, messages: int, on_thread: bool = False) -> int:
    """Child process: do one work row with one implementation, print a JSON Sample."""
    load_all()
    impl: Impl = REGISTRY[work][impl_name]
    # Importing the bus (load_all) leaves aiormq and pamqp as they are: a raw
    # client row measures aiormq's own reader, the bus's rows the bus's.
    row = ROWS[work]
    ctx = make_context(work, impl_name, messages, row.prefetch, row.deadline_s)
    try:
        impl.prepare(ctx)
        with profiled():  # a flame graph of the timed work, if BENCH_PROFILE_SVG is set
            sample = _run(impl, ctx, on_thread)
        # CPU per message of this process (all threads) while timed: far
        # steadier than wall time on a loaded machine. Node reports its own.
        cpu = last_cpu_seconds()
        if cpu is not None and sample.messages and "cpu_us_per_msg" not in sample.notes:
            sample.notes["cpu_us_per_msg"] = round(cpu / sample.messages * 1e6, 1)
    finally:
        impl.cleanup(ctx)
    print(json.dumps(sample.to_json()))
    return 0


def _run(impl: Impl, ctx: BenchContext, on_thread: bool) -> Sample:
    if not on_thread:
        return impl.run(ctx)
    with ThreadPoolExecutor(1, thread_name_prefix="bench-work") as pool:
        return pool.submit(impl.run, ctx).result()


def run_worker(impl: str, work: str, messages: int, on_thread: bool = False) -> Sample | str:
    """Parent: run one worker subprocess; a Sample, or the error text."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, work]
    cmd += ["--messages", str(messages)]
    if on_thread:
        cmd.append("--on-thread")
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=ROWS[work].deadline_s * 2, check=False
        )
    except subprocess.TimeoutExpired:
        return "worker timed out"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return tail[0]
    try:
        return Sample.from_json(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError) as exc:
        return f"bad worker output: {exc}"


def run_with_retry(
    impl: str, work: str, messages: int, on_thread: bool = False
) -> tuple[Sample | str, list[str]]:
    """run_worker, again after a pause if it failed (the shared broker may be restarting)."""
    failures: list[str] = []
    for attempt in range(1 + WORKER_RETRIES):
        if attempt:
            time.sleep(RETRY_PAUSE_S)
        out = run_worker(impl, work, messages, on_thread)
        if isinstance(out, Sample):
            return out, failures
        failures.append(out)
    return failures[-1], failures[:-1]


def measure(
    work: str,
    messages: int,
    repeat: int,
    only: list[str] | None = None,
    on_thread: bool = False,
) -> list[Result]:
    impls = {n: i for n, i in REGISTRY[work].items() if only is None or n in only}
    results = {
        name: Result(name, impl.raw, [], [], anchor=impl.anchor) for name, impl in impls.items()
    }
    if ROWS[work].kind == "soak":
        repeat = 1  # minutes long, and it measures memory, not speed
    for r in range(repeat):
        for name in impls:
            print(f"  [{work} {r + 1}/{repeat}] {name} ...", end="", flush=True, file=sys.stderr)
            t0 = time.monotonic()
            out, retried = run_with_retry(name, work, messages, on_thread)
            took = time.monotonic() - t0
            results[name].retried += [f"retried after: {why}" for why in retried]
            if isinstance(out, Sample):
                results[name].samples.append(out)
                short = f"{out.rate:,.0f}/s" if out.rate is not None else "?"
                if out.p50_ms is not None:
                    short = f"p50 {out.p50_ms:.2f} ms"
                print(f" {short} ({took:.1f}s)", file=sys.stderr)
            else:
                results[name].errors.append(out)
                print(f" FAILED: {out}", file=sys.stderr)
    return list(results.values())


def _fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "-"


def speed(result: Result, latency: bool) -> float | None:
    """Higher is better: msg/s, or 1/p50 for the latency row."""
    if latency:
        p50 = result.median("p50_ms")
        return 1.0 / p50 if p50 else None
    return result.median("rate")


def soak_table(work: str, results: list[Result], messages: int) -> str:
    """RSS at the end of warm-up, its peak afterwards, growth, per phase."""
    lines = [
        f"### {work}: {ROWS[work].description} (n={messages})",
        "",
        "| implementation | phase | done | timed out | rate/s | RSS warm MiB | RSS peak MiB "
        "| RSS end MiB | growth | flat (<= 10 %) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for s in r.samples:
            n = s.notes
            for phase, count, secs, rss, late in (
                ("consume", n["consumed"], n["consume_seconds"], n["consume_rss"], "-"),
                ("rpc", n["requests"], n["rpc_seconds"], n["rpc_rss"], n["timed_out"]),
            ):
                rate = f"{count / secs:,.0f}" if secs else "-"
                flat = {True: "yes", False: "**NO**", None: "too few samples"}[rss.get("flat")]
                growth = f"{rss['growth'] * 100:+.1f} %" if "growth" in rss else "-"
                lines.append(
                    f"| **{r.impl}** | {phase} | {count:,} | {late} | {rate} "
                    f"| {rss.get('rss_warm_mib', '-')} | {rss.get('rss_peak_mib', '-')} "
                    f"| {rss.get('rss_end_mib', '-')} | {growth} | {flat} |"
                )
    errors = [f"- {r.impl}: {e}" for r in results for e in sorted({*r.errors, *r.retried})]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines)


def table(work: str, results: list[Result], messages: int) -> str:
    row = ROWS[work]
    if row.kind == "soak":
        return soak_table(work, results, messages)
    lat = row.latency
    scored = [(r, speed(r, lat)) for r in results]
    raw_speeds = [s for r, s in scored if r.raw and s is not None]
    best_raw = max(raw_speeds) if raw_speeds else None
    best_name = next((r.impl for r, s in scored if r.raw and s == best_raw), "-")
    ref = next((s for r, s in scored if r.impl == REFERENCE), None)
    anchor = next((s for r, s in scored if r.anchor), None)

    head = "p50 ms | p99 ms" if lat else "msg/s"
    lines = [
        f"### {work}: {row.description} (n={messages})",
        "",
        f"| implementation | {head} | vs best raw ({best_name}) | vs {REFERENCE} | vs {ANCHOR} "
        "| CPU µs/msg | runs |",
        "| --- | " + ("--- | --- |" if lat else "--- |") + " --- | --- | --- | --- | --- |",
    ]
    for r, s in scored:
        if lat:
            p50, p99 = r.median("p50_ms"), r.median("p99_ms")
            figure = f"{p50:.2f} | {p99:.2f}" if p50 is not None and p99 is not None else "- | -"
        else:
            rate = r.median("rate")
            figure = f"{rate:,.0f}" if rate is not None else "-"
        vs_best = s / best_raw if s is not None and best_raw else None
        vs_ref = s / ref if s is not None and ref else None
        vs_anchor = s / anchor if s is not None and anchor else None
        runs = f"{len(r.samples)}" + (f" ({len(r.errors)} failed)" if r.errors else "")
        runs += f" ({len(r.retried)} retried)" if r.retried else ""
        name = r.impl if r.raw else f"_{r.impl} (Node)_" if r.anchor else f"**{r.impl}**"
        ratios = f"{_fmt_ratio(vs_best)} | {_fmt_ratio(vs_ref)} | {_fmt_ratio(vs_anchor)}"
        cpu = r.median_note("cpu_us_per_msg")
        cpu_text = f"{cpu:,.0f}" if cpu is not None else "-"
        lines.append(f"| {name} | {figure} | {ratios} | {cpu_text} | {runs} |")
    errors = [f"- {r.impl}: {e}" for r in results for e in sorted({*r.errors, *r.retried})]
    if errors:
        lines += ["", "errors:", *errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--messages", type=int, default=None, help="messages (rpc: round trips) per run, all rows"
    )
    parser.add_argument("--only", default=None, help=f"comma-separated rows of {list(ROWS)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs per implementation (median)")
    parser.add_argument("--json", type=Path, default=None, help="write all samples here")
    parser.add_argument(
        "--impl", action="append", default=None, help="only this implementation (repeat; A/B runs)"
    )
    parser.add_argument(
        "--on-thread",
        action="store_true",
        help="run each worker's timed work on a thread other than the main one (the sync "
        "API's handlers run on the thread that called start_consuming)",
    )
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        impl, work = args.worker
        return worker(impl, work, args.messages or ROWS[work].default_messages, args.on_thread)

    unavailable = load_all()
    rows = args.only.split(",") if args.only else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows are {list(ROWS)}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    started = datetime.now(UTC)
    t0 = time.monotonic()
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "protobuf_backend": api_implementation.Type(),  # "upb" expected (C, fast)
        "repeat": args.repeat,
        "unavailable": unavailable,
        "rows": {},
    }
    tables: list[str] = []
    for work in rows:
        messages = args.messages or ROWS[work].default_messages
        results = measure(work, messages, args.repeat, args.impl, args.on_thread)
        tables.append(table(work, results, messages))
        report["rows"][work] = {
            "messages": messages,
            "results": [
                {
                    "impl": r.impl,
                    "raw": r.raw,
                    "anchor": r.anchor,
                    "median_rate": r.median("rate"),
                    "median_p50_ms": r.median("p50_ms"),
                    "median_p99_ms": r.median("p99_ms"),
                    "median_cpu_us_per_msg": r.median_note("cpu_us_per_msg"),
                    "samples": [s.to_json() for s in r.samples],
                    "errors": r.errors,
                    "retried": r.retried,
                }
                for r in results
            ],
        }
    report["seconds"] = round(time.monotonic() - t0, 1)

    load = "/".join(f"{x:.1f}" for x in report["load_average"])
    print(
        f"# bench {report['started']}  ({report['command']}, {report['seconds']} s, load "
        f"average at the start {load}, protobuf backend {report['protobuf_backend']})\n"
    )
    print("\n\n".join(tables))
    if unavailable:
        print("\nnot measured: " + "; ".join(f"{m} ({why})" for m, why in unavailable.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
