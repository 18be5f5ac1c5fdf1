"""`chimera-bus run`: real worker processes on the real broker, stopped with real signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from messaging.generated import messages_pb2 as pb
from tests.conftest import Names, RawBroker
from tests.integration.helpers import query, wait_for
from tests.integration.test_cli import ENV, cli

ROOT = Path(__file__).resolve().parents[2]


class Run:
    """``chimera-bus run`` as a process, its log lines collected as they come."""

    def __init__(self, *args: str, **env: str) -> None:
        full_env = {**os.environ, **{k: v for k, v in ENV.items() if v}, **env}
        full_env["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from messaging.cli import main; main()", "run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=ROOT,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def worker_pids(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines
                if (m := re.search(r"worker \d+ started \(pid (\d+)\)", line))]  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def free_ports(count: int) -> int:
    """A first port with ``count`` free ports from it."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no free ports")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ask_all(raw: RawBroker, exchange: str, answers: str, n: int) -> set[int]:
    """Send n questions; the pids of the workers that answered them."""
    for i in range(n):
        raw.publish(exchange, "run.ask", query(f"q{i}").SerializeToString(),
                    type="chimera.v1.QueryRequest")  # fmt: skip
    got: list[str] = []

    def all_answered() -> bool:
        while (item := raw.get(answers)) is not None:
            message = pb.QueryRequest()
            message.ParseFromString(item[2])
            got.append(message.query)
        return len(got) >= n

    wait_for(all_answered, timeout=60, what=f"{n} answers")
    return {int(text.split()[1]) for text in got}


def test_workers_compete_restart_when_killed_and_stop_on_sigterm(
    raw: RawBroker, names: Names, runs: list[Run]
) -> None:
    exchange, queue, answers = names.exchange, names.queue("pid_agent"), names.queue("answers")
    raw.channel.exchange_declare(exchange, "topic", durable=True)
    raw.channel.queue_declare(answers, durable=True)
    raw.channel.queue_bind(answers, exchange, "run.answer")
    port = free_ports(2)
    run = Run(
        "tests.integration.run_agents:PidAgent", "--workers", "2", "--health-port", str(port),
        RUN_TEST_EXCHANGE=exchange, RUN_TEST_QUEUE=queue,
    )  # fmt: skip
    runs.append(run)
    wait_for(lambda: _consumers(raw, queue) == 2, timeout=60, what="two workers consuming")

    pids = run.worker_pids()
    assert len(pids) == 2
    assert ask_all(raw, exchange, answers, 40) == set(pids)  # both handled some: competing
    for p in (port, port + 1):  # a health endpoint per worker
        with urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz", timeout=10) as response:
            assert response.status == 200
    assert "keeps workflow context in this process's memory" in run.log  # said, not hidden

    os.kill(pids[0], signal.SIGKILL)  # a worker dies
    wait_for(lambda: len(run.worker_pids()) == 3, timeout=30, what="the worker restarted")
    assert "died (signal SIGKILL); restart 1 in 0.5s" in run.log
    wait_for(lambda: _consumers(raw, queue) == 2, timeout=60, what="two workers again")
    new_pids = set(run.worker_pids()[1:])
    assert ask_all(raw, exchange, answers, 20) <= new_pids

    assert run.stop(signal.SIGTERM) == 0, run.log
    assert "SIGTERM: stopping 2 worker(s)" in run.log
    assert "stopped; 1 restart(s) in this run" in run.log
    assert not any(alive(pid) for pid in new_pids)
    assert _consumers(raw, queue) == 0
    assert "Traceback" not in run.log


def test_a_worker_that_cannot_start_stops_the_run(
    raw: RawBroker, names: Names, runs: list[Run]
) -> None:
    run = Run(
        "tests.integration.run_agents:not_an_agent", "--workers", "2",
        RUN_TEST_EXCHANGE=names.exchange, RUN_TEST_QUEUE=names.queue(),
    )  # fmt: skip
    runs.append(run)
    assert run.process.wait(60) == 2, run.log
    assert "not an EventSubscriber or BaseAgent" in run.log
    assert "cannot start (exit 2): stopping the run" in run.log
    assert "restart" not in run.log.replace("restart(s)", "")


def test_a_bad_target_is_one_line_and_exit_2() -> None:
    for target, said in [
        ("tests.integration.run_agents:Nope", "has no 'Nope'"),
        ("no_such_module_xyz:Agent", "cannot import 'no_such_module_xyz'"),
        ("tests.integration.run_agents", "is not package.module:AgentClass"),
        ("tests.integration.run_agents:NOT_AN_AGENT", "is not a class or a function"),
    ]:
        result = cli("run", target)
        assert result.exit_code == 2, result.output
        assert said in result.output
        assert "Traceback" not in result.output


def _consumers(raw: RawBroker, queue: str) -> int:
    try:
        return raw.consumers(queue)
    except Exception:  # not declared yet: the channel closed, open another
        raw.channel = raw.connection.channel()
        return 0


def test_workers_sharing_a_redis_store_get_no_warning(
    raw: RawBroker, names: Names, runs: list[Run]
) -> None:
    exchange, queue = names.exchange, names.queue("pid_agent")
    run = Run(
        "tests.integration.run_agents:PidAgent", "--workers", "2",
        RUN_TEST_EXCHANGE=exchange, RUN_TEST_QUEUE=queue,
        STORE__REDIS_URL="redis://127.0.0.1:6379/0", STORE__KEY_PREFIX=f"{names.prefix}:",
    )  # fmt: skip
    runs.append(run)
    wait_for(lambda: _consumers(raw, queue) == 2, timeout=60, what="two workers consuming")
    assert run.stop(signal.SIGTERM) == 0, run.log
    assert "WARNING" not in run.log
    assert "keeps workflow context in this process's memory" not in run.log
