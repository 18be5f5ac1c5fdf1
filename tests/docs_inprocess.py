"""Run a document's code blocks in ONE process, on the in-process broker.

``python tests/docs_inprocess.py DOCUMENT DIRECTORY`` with ``RABBITMQ__URL=memory://``:
the blocks run in document order as tests/docs_blocks.py says (``file``,
``run``, ``background``), except that a background block (an agent that
blocks in ``start_consuming``) runs on a thread of this process instead of
in a process of its own, so that every block meets the others on the one
in-process broker. Bash blocks still run as subprocesses (they must not need
the broker). Prints one ``ok``/``FAILED`` line per block and exits 1 if any
failed; tests/unit/test_docs_memory.py runs it with no RabbitMQ reachable.
"""

from __future__ import annotations

import io
import os
import re
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 60.0


class Tee(io.TextIOBase):
    """Everything written, to the real stream and, a whole line at a time, to one transcript.

    ``print("a", "b")`` is several writes; with agents printing on other
    threads, only whole lines keep each program's text together.
    """

    def __init__(self, stream: TextIO, transcript: list[str], lock: threading.Lock) -> None:
        self._stream = stream
        self._transcript = transcript
        self._lock = lock
        self._pending = threading.local()

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        *lines, rest = pending.split("\n")
        self._pending.text = rest
        if lines:
            whole = "".join(line + "\n" for line in lines)
            with self._lock:
                self._transcript.append(whole)
                self._stream.write(whole)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def main(document: Path, directory: Path) -> int:
    sys.path[:0] = [str(directory), str(ROOT)]
    from tests.docs_blocks import blocks

    transcript: list[str] = []
    lock = threading.Lock()
    real_out, real_err = sys.stdout, sys.stderr
    sys.stdout = Tee(real_out, transcript, lock)
    sys.stderr = Tee(real_err, transcript, lock)
    os.chdir(directory)

    def output(since: int = 0) -> str:
        with lock:
            return "".join(transcript[since:])

    failures: list[str] = []
    background: list[tuple[str, str, threading.Thread]] = []

    def report(where: str, problem: str | None) -> None:
        line = f"docs-inprocess: {where}: " + ("ok" if problem is None else f"FAILED: {problem}")
        real_out.write(line + "\n")
        real_out.flush()
        if problem is not None:
            failures.append(line)

    for index, block in enumerate(blocks(document)):
        if block.mode is None:
            continue
        path = directory / block.file_name(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
        if block.mode == "file":
            continue
        start = len(transcript)
        if block.language == "bash" and block.mode == "background":
            # `chimera-bus run TARGET` serves an agent in processes of its own; here
            # its worker runs on a thread instead, to meet the in-process broker.
            served = re.fullmatch(r"\s*chimera-bus run (\S+)\s*", _command(block.code))
            if served is None:
                report(block.where, "a background bash block cannot share this process")
                continue
            thread = threading.Thread(
                target=_serve, args=(served.group(1),), name=block.where, daemon=True
            )
            thread.start()
            problem = _wait_for(block.options.get("until", "."), output, start)
            background.append((block.where, block.options.get("expect", ""), thread))
            report(block.where + " (started)", problem)
            continue
        if block.language == "bash":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", path.name],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
            sys.stdout.write(done.stdout + done.stderr)
            problem = None if done.returncode == 0 else f"exit {done.returncode}"
        elif block.mode == "background":
            thread = threading.Thread(
                target=_run_script, args=(path,), name=block.where, daemon=True
            )
            thread.start()
            problem = _wait_for(block.options.get("until", "."), output, start)
            background.append((block.where, block.options.get("expect", ""), thread))
            report(block.where + " (started)", problem)
            continue
        else:
            problem = _run_script(path)
        expect = block.options.get("expect")
        if problem is None and expect and not _lines_in_order(expect, output(start)):
            problem = f"output does not match {expect!r}"
        report(block.where, problem)
    time.sleep(0.2)  # let the background agents log what the last block made them do
    for where, expect, _ in background:
        matched = not expect or re.search(expect, output())
        report(where, None if matched else f"output does not match {expect!r}")
    sys.stdout, sys.stderr = real_out, real_err
    real_out.flush()
    # The background agents block in start_consuming() on daemon threads: leave them.
    os._exit(1 if failures else 0)


def _command(code: str) -> str:
    """The block's one command, without comments and blank lines."""
    lines = [line.split("#", 1)[0].strip() for line in code.splitlines()]
    return " ".join(line for line in lines if line)


def _serve(target: str) -> None:
    from messaging.cli._worker import main as worker

    worker([target])


def _wait_for(until: str, output: Callable[[int], str], start: int) -> str | None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not re.search(until, output(start)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return None if re.search(until, output(start)) else f"never printed {until!r}"


def _lines_in_order(expect: str, text: str) -> bool:
    """``expect`` with its ``\\n`` taken as "then, on a later line": in one process
    the background agents' lines come in between the block's own."""
    position = 0
    for part in expect.split("\\n"):
        found = re.compile(part).search(text, position)
        if found is None:
            return False
        position = found.end()
    return True


def _run_script(path: Path) -> str | None:
    """Run ``path`` as ``__main__``; the problem, or None when it ended well."""
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            return f"exit {exc.code}"
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
