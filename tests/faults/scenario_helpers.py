"""Helpers of the reliability scenarios: a child agent process and raw publishing.

``ChildAgent`` runs ``agent_process.py`` and reads its stdout on a thread, so a
test can wait for a line (``consuming``, ``received <id>``, ``handled <id>``),
signal or kill the process, and read what it handled.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika

from tests.conftest import BROKER

AGENT_SCRIPT = Path(__file__).with_name("agent_process.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


class ChildAgent:
    """``agent_process.py <mode> ...`` in a process of its own; its stdout, line by line."""

    def __init__(self, mode: str, exchange: str, queue: str, connection_name: str) -> None:
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT_SCRIPT), mode, exchange, queue, connection_name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"child-{mode}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self._lines.append(raw.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def words(self, prefix: str) -> list[str]:
        """The second word of every ``<prefix> <word>`` line, in order."""
        start = f"{prefix} "
        return [line[len(start) :].strip() for line in self.lines() if line.startswith(start)]

    def wait_line(self, line: str, timeout: float = 30.0) -> None:
        """Wait until the child printed exactly ``line``; fail with its output if not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while line not in self._lines:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"the {self.mode} child did not print {line!r} within {timeout}s "
                        f"(exit code {self.proc.poll()}); output:\n" + "\n".join(self._lines[-40:])
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_count(self, prefix: str, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.words(prefix)) < n:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(
                    f"the {self.mode} child printed {len(self.words(prefix))} {prefix!r} lines, "
                    f"not {n}, within {timeout}s (exit code {self.proc.poll()})"
                )
            time.sleep(0.01)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def close(self) -> None:
        """Make sure it is gone (teardown)."""
        with contextlib.suppress(Exception):
            self.kill()


@contextlib.contextmanager
def children() -> Iterator[list[ChildAgent]]:
    """A list to put started children in; every one is killed at the end."""
    started: list[ChildAgent] = []
    try:
        yield started
    finally:
        for child in started:
            child.close()


class ConfirmingRawPublisher:
    """A pika channel with publisher confirms: publish exactly these bytes, bypassing the bus."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(*BROKER))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, exchange: str, routing_key: str, body: bytes, **props: object) -> None:
        """Publish (persistent, mandatory) and return once confirmed; raises if not."""
        self.channel.basic_publish(
            exchange,
            routing_key,
            body,
            pika.BasicProperties(delivery_mode=2, **props),
            mandatory=True,
        )

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()
