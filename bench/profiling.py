"""Flame graphs of the timed work only: py-spy attached to the worker itself.

A worker started with ``BENCH_PROFILE_SVG=path`` attaches ``py-spy record`` to
its own pid after the (untimed) topology and pre-fill, runs the row, and stops
py-spy, which writes the SVG. So the graph shows where a message spends its time,
not where pika pre-fills a queue. py-spy needs ptrace rights over the worker:
run as root (or with ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROFILE_ENV = "BENCH_PROFILE_SVG"
SAMPLE_RATE = 250  # samples/s; py-spy pauses the process briefly for each one
ATTACH_TIMEOUT_S = 30.0


def py_spy() -> str:
    """The py-spy next to this interpreter (the dev extra installs it), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    found = shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[dev]' (scripts/bootstrap)")
    return found


@contextmanager
def profiled() -> Iterator[None]:
    """Record a flame graph of the body if BENCH_PROFILE_SVG names an output file.

    A name ending in ``.txt`` gets py-spy's collapsed stacks instead of an SVG.
    """
    target = os.environ.get(PROFILE_ENV)
    if not target:
        yield
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy(), "record", "--pid", str(os.getpid()), "--output", target]
    if target.endswith(".txt"):  # collapsed stacks, for reading with a script
        cmd += ["--format", "raw"]
    cmd += ["--rate", str(SAMPLE_RATE), "--threads", "--nolineno"]
    spy = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    attached = threading.Event()
    # py-spy writes progress to stdout for as long as it runs: a pipe nobody
    # reads would fill up and stall it (and, paused by it, the worker).
    reader = threading.Thread(target=_drain, args=(spy, output, attached), daemon=True)
    reader.start()
    if not attached.wait(ATTACH_TIMEOUT_S):
        spy.kill()
        raise RuntimeError(f"py-spy did not attach: {''.join(output)[-500:]}")
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes the SVG on Ctrl-C
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            raise
        reader.join(5)
        if not Path(target).exists():
            raise RuntimeError(f"py-spy failed (exit {spy.returncode}): {''.join(output)[-500:]}")


def _drain(spy: subprocess.Popen[str], output: list[str], attached: threading.Event) -> None:
    """Read py-spy's output to the end; set ``attached`` once it says it is sampling."""
    assert spy.stdout is not None
    for line in spy.stdout:
        output.append(line)
        if "Sampling" in line:  # "py-spy> Sampling process 250 times a second..."
            attached.set()
    attached.set()  # EOF: py-spy exited; the caller finds no SVG and says why
