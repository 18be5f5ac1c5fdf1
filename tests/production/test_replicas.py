"""Two replicas of the demo's query agent, plus the data and analysis agents, as processes.

The query agent keeps each question's workflow (the question, the symbol, where
to answer) as context between its steps; with two replicas on one queue, the
data agent's answer often lands on the replica that did not ask. With
``STORE__REDIS_URL`` the context is in Redis and every answer still matches its
question; the test also checks that this cross-replica hand-over did happen.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import redis

from messaging import ConnectionPool, EventPublisher, create_metadata
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2 as pb
from tests import broker_env
from tests.conftest import Names, RawBroker
from tests.integration.helpers import wait_for

REDIS_URL = "redis://127.0.0.1:6379/0"
REPO = Path(__file__).resolve().parents[2]
QUESTIONS = 200
SYMBOLS = ("BTC", "ETH", "ZEC")


class Agent:
    """``python -m messaging.demo.<module> --exchange EXCHANGE``, its log in a file."""

    def __init__(self, module: str, exchange: str, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"messaging.demo.{module}", "--exchange", exchange],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def store_prefix() -> Iterator[str]:
    prefix = f"test-replicas-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def consumers(raw: RawBroker, queue: str) -> int:
    try:
        return raw.consumers(queue)
    except pika.exceptions.ChannelClosedByBroker:  # not declared yet
        raw.channel = raw.connection.channel()
        return 0


def correlation_ids(lines: list[str], marker: str) -> set[str]:
    found = set()
    for line in lines:
        if marker in line:
            match = re.search(r"\[correlation_id=([^\]]+)\]", line)
            if match:
                found.add(match[1])
    return found


def test_two_query_agent_replicas_share_workflow_context(
    names: Names, raw: RawBroker, store_prefix: str, tmp_path: Path
) -> None:
    exchange = names.new_exchange("demo")
    for module in ("query_agent", "data_agent", "analysis_agent"):
        names.queues.update({f"{exchange}.{module}", f"{exchange}.{module}.dlq"})
    env = {
        **os.environ,
        **broker_env.environ(),
        "STORE__REDIS_URL": REDIS_URL,
        "STORE__KEY_PREFIX": store_prefix,
        "PYTHONUNBUFFERED": "1",
    }
    agents = {
        "query-1": Agent("query_agent", exchange, tmp_path / "query-1.log", env),
        "query-2": Agent("query_agent", exchange, tmp_path / "query-2.log", env),
        "data": Agent("data_agent", exchange, tmp_path / "data.log", env),
        "analysis": Agent("analysis_agent", exchange, tmp_path / "analysis.log", env),
    }
    pool = ConnectionPool(
        RabbitMQConfig(host=broker_env.HOST, port=broker_env.PORT, connection_name="replicas-ask")
    )
    asker = EventPublisher(pool, "ask_client", exchange)
    try:
        wait_for(lambda: consumers(raw, f"{exchange}.query_agent") == 2, 60, "two query agents")
        wait_for(lambda: consumers(raw, f"{exchange}.data_agent") == 1, 60, "the data agent")
        wait_for(lambda: consumers(raw, f"{exchange}.analysis_agent") == 1, 60, "analysis agent")

        def ask(n: int) -> tuple[str, str, pb.QueryResponse]:
            question = f"What is the {SYMBOLS[n % len(SYMBOLS)]} price? (question {n})"
            request = pb.QueryRequest(metadata=create_metadata("ask_client"), query=question)
            response = asker.request(request, "query.request", timeout=60)
            assert isinstance(response, pb.QueryResponse)
            return question, request.metadata.correlation_id, response

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as workers:
            results = list(workers.map(ask, range(QUESTIONS)))
    finally:
        asker.close()
        pool.close()
        for agent in agents.values():
            agent.stop()

    wrong = [
        (question, response.query, response.answer)
        for question, correlation_id, response in results
        if response.query != question
        or response.metadata.correlation_id != correlation_id
        or response.HasField("error")
        or not response.answer.startswith(question.split()[3])  # "<SYMBOL> is at ..."
    ]
    assert len(results) == QUESTIONS
    assert wrong == [], f"{len(wrong)} answers do not match their question: {wrong[:5]}"

    one, two = agents["query-1"].lines(), agents["query-2"].lines()
    logs = (("query-1", one), ("query-2", two))
    asked = {name: correlation_ids(lines, "-> asking data_agent") for name, lines in logs}
    got_data = {name: correlation_ids(lines, "query: got ") for name, lines in logs}
    assert asked["query-1"], "query-2 took every question"
    assert asked["query-2"], "query-1 took every question"
    crossed = (asked["query-1"] & got_data["query-2"]) | (asked["query-2"] & got_data["query-1"])
    print(
        f"questions taken: query-1 {len(asked['query-1'])}, query-2 {len(asked['query-2'])}; "
        f"workflows continued on the other replica: {len(crossed)}"
    )
    assert crossed, "no workflow moved between replicas: the test proved nothing"
    dropped = [line for line in one + two if "no workflow waiting" in line]
    assert dropped == []
