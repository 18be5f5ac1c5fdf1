"""`chimera-bus top` on a real pseudo-terminal, read the way a person sees it.

The command runs in a pty of its own (its controlling terminal, so Ctrl-C is
a real SIGINT from the line discipline); what it writes goes through pyte, a
VT100 emulator, and the tests read the resulting screen.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable, Iterator

import pyte
import pytest

from messaging import ConnectionPool
from tests.conftest import Names, RawBroker
from tests.integration.helpers import Recorder
from tests.integration.test_cli import ENV, cli, pool

__all__ = ["pool"]  # the fixture, imported so pytest finds it here

COLUMNS, LINES = 120, 30


class Terminal:
    """A child process on a pty, and the screen it has drawn so far."""

    def __init__(self, *args: str) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        env = {**os.environ, **{k: v for k, v in ENV.items() if v}}
        env.update({"TERM": "xterm-256color", "COLUMNS": str(COLUMNS), "LINES": str(LINES)})
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            os.execvpe(
                sys.executable,
                [sys.executable, "-c", "from messaging.cli import main; main()", *args],
                env,
            )
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.status: int | None = None

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the child has gone and closed the pty
                return
            if not chunk:
                return
            self.raw += chunk
            self.stream.feed(chunk)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, condition: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if condition(self.text()):
                return self.text()
        raise AssertionError(f"the screen never showed it; it shows:\n{self.text()}")

    def ctrl_c(self) -> int:
        os.write(self.fd, b"\x03")  # the line discipline turns it into SIGINT
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.pump(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pump(0.2)
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        raise AssertionError("top did not exit on Ctrl-C")

    def close(self) -> None:
        if self.status is None:
            with_suppressed_kill(self.pid)
        os.close(self.fd)


def with_suppressed_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        opened.append(Terminal(*args))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


def row(screen: str, queue: str) -> list[str]:
    """The cells of ``queue``'s row in the table drawn on ``screen``."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.replace("│", "|").split("|") if c.strip()]
        if cells and cells[0] == queue:
            return cells
    raise AssertionError(f"no row for {queue} on the screen:\n{screen}")


def test_top_draws_a_live_table_and_ends_on_ctrl_c(
    pool: ConnectionPool, raw: RawBroker, names: Names, terminal: Callable[..., Terminal]
) -> None:
    exchange, queue, idle = names.exchange, names.queue("busy"), names.queue("idle")
    sub = Recorder(pool, exchange=exchange, queue=queue, routing_keys=["#"]).run_in_thread()
    raw.channel.queue_declare(idle, durable=True)
    raw.channel.queue_declare(f"{idle}.dlq", durable=True)
    raw.publish("", f"{idle}.dlq", b"dead")
    raw.publish("", idle, b"waiting")
    try:
        top = terminal("top", "-q", queue, "-q", idle, "-q", "no-such-queue", "-i", "0.3")
        first = top.wait_for(lambda s: idle in s and "numbers from" in s)
        assert "chimera-bus top" in first
        assert "Ctrl-C to quit" in first
        assert row(first, queue)[1:4] == ["0", "0", "1"]  # ready, unacked, consumers
        assert row(first, idle)[1:4] == ["1", "0", "0"]
        assert row(first, idle)[-1] == "1"  # one dead letter
        assert row(first, "no-such-queue")[1] == "missing"

        # It is live: a change on the broker shows up without doing anything.
        raw.publish("", idle, b"another")
        later = top.wait_for(lambda s: row(s, idle)[1] == "2")
        assert row(later, idle)[1:4] == ["2", "0", "0"]

        assert top.ctrl_c() == 0
    finally:
        sub.stop_and_join()
    assert b"Traceback" not in top.raw
    assert top.raw.rstrip().endswith(b"\x1b[?1049l")  # left the alternate screen: terminal back


def test_top_once_is_for_scripts(raw: RawBroker, names: Names) -> None:
    queue = names.queue()
    raw.channel.queue_declare(queue, durable=True)
    raw.channel.queue_declare(f"{queue}.dlq", durable=True)
    raw.publish("", f"{queue}.dlq", b"dead")
    raw.publish("", f"{queue}.dlq", b"dead")

    once = cli("top", "--once", "-q", queue)
    assert once.exit_code == 0, once.output
    header, line = once.output.splitlines()[:2]
    assert header.split("\t") == [
        "queue", "ready", "unacked", "consumers", "publish/s", "deliver/s", "dlq",
    ]  # fmt: skip
    cells = line.split("\t")
    assert cells[0] == queue
    assert cells[1] == "0"
    assert cells[-1] == "2"

    # Without --queue: every queue with a .dlq beside it (rabbitmqctl can list them here).
    found = cli("top", "--json")
    assert found.exit_code == 0, found.output
    assert f'"queue": "{queue}"' in found.stdout
    assert '"dlq": 2' in found.stdout
