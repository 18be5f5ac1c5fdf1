"""`chimera-bus agents` sees an agent in another process, and forgets it after a SIGKILL.

Real RabbitMQ. The agent (tests/integration/discovery_agent.py) runs as a
process of its own, announcing every :data:`INTERVAL` seconds on a discovery
exchange of this test's own (deleted afterwards, like its events exchange
and queues).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from messaging.aio import AsyncConnectionPool
from messaging.cli import app
from messaging.config import RabbitMQConfig
from messaging.discovery import Directory
from messaging.discovery.card import MISSED_HEARTBEATS
from tests import broker_env
from tests.conftest import Names

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.5
BOUND = MISSED_HEARTBEATS * INTERVAL
"""The documented bound: a listener forgets an instance 3 intervals after its last heartbeat."""


class AgentProcess:
    def __init__(self, exchange: str, queue: str, discovery: str) -> None:
        env = {
            **os.environ,
            **broker_env.environ(),
            "DISCOVERY__ENABLED": "true",
            "DISCOVERY__INTERVAL": str(INTERVAL),
            "DISCOVERY__EXCHANGE": discovery,
            "DISCOVERY_TEST_EXCHANGE": exchange,
            "DISCOVERY_TEST_QUEUE": queue,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.discovery_agent"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "consuming", line + self.process.stdout.read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def discovery(names: Names, monkeypatch: pytest.MonkeyPatch) -> str:
    exchange = names.new_exchange("discovery")
    monkeypatch.setenv("DISCOVERY__EXCHANGE", exchange)
    monkeypatch.setenv("DISCOVERY__INTERVAL", str(INTERVAL))
    return exchange


@pytest.fixture
def agent(names: Names, discovery: str) -> Iterator[AgentProcess]:
    exchange = names.exchange
    queue = names.queue("shouter")
    process = AgentProcess(exchange, queue, discovery)
    yield process
    process.kill()


def cli(*args: str) -> Result:
    env = {**broker_env.environ(), "RABBITMQ__URL": None, "CHIMERA_EXCHANGE": None}
    return CliRunner(env=env).invoke(app, list(args))


def listed(*args: str) -> list[dict[str, object]]:
    result = cli("agents", "--json", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_agents_shows_an_agent_of_another_process_and_drops_it_after_sigkill(
    agent: AgentProcess, config: RabbitMQConfig, discovery: str
) -> None:
    cards = listed("--wait", str(2 * INTERVAL))
    assert [(c["name"], c["pid"], c["version"]) for c in cards] == [("shouter", agent.pid, "3.2.1")]
    assert cards[0]["request_types"] == {"ask.*": "chimera.v1.QueryRequest"}
    assert cards[0]["reply_types"] == {"ask.reply": "chimera.v1.QueryResponse"}

    async def watch_the_kill() -> tuple[float, list[int]]:
        """Seconds from the SIGKILL until a listener running all along forgets the agent."""
        pool = AsyncConnectionPool(config)
        try:
            async with Directory(pool, discovery) as directory:
                while not directory.agents():
                    assert await directory.changed(5.0), "the agent was not heard"
                pids = [card.pid for card in directory.agents()]
                agent.kill()
                killed = time.monotonic()
                while directory.agents():
                    await asyncio.sleep(0.05)
                    assert time.monotonic() - killed < 10 * BOUND, "never forgotten"
                return time.monotonic() - killed, pids
        finally:
            await pool.close()

    forgotten_after, pids = asyncio.run(watch_the_kill())
    assert pids == [agent.pid]
    # Gone by expiry (no withdrawal from a killed process), within the bound; a
    # little slack for the poll and the heartbeat that may have been in flight.
    assert INTERVAL < forgotten_after <= BOUND + INTERVAL, forgotten_after
    assert listed("--wait", str(2 * INTERVAL)) == []


def test_request_gets_a_reply_from_an_agent_of_another_process(
    agent: AgentProcess, names: Names
) -> None:
    result = cli(
        "request", "ask.loud", "--type", "QueryRequest", "--data", '{"query": "hello"}',
        "--exchange", names.exchange, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["reply"]["answer"] == "HELLO"
    assert record["reply"]["metadata"]["source_agent"] == "shouter"

    failed = cli(
        "request", "ask.loud", "--type", "QueryRequest", "--data", '{"query": "fail"}',
        "--exchange", names.exchange,
    )  # fmt: skip
    assert failed.exit_code == 1, failed.output
    assert "RejectedMessageError: no shouting about failure (agent shouter" in failed.stderr
