"""The demo pipeline: three agent processes answering questions through the real broker."""

from __future__ import annotations

import doctest
import re
from collections.abc import Iterator
from datetime import date

import pytest

from messaging import ConnectionPool
from messaging.config import RabbitMQConfig
from messaging.demo import agents, prices
from messaging.demo.client import AskClient, Printer
from messaging.demo.pipeline import AgentProcesses, run_demo
from messaging.topology import dlq_name
from tests import broker_env
from tests.conftest import Names
from tests.integration.helpers import rabbitmqctl

PRICE = re.compile(r"ZEC is at \d[\d,]*\.\d\d USD")


@pytest.fixture(autouse=True)
def agents_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent processes read their config from the environment, as in production."""
    for name, value in broker_env.environ().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def pool(config: RabbitMQConfig) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(config, max_retries=3, initial_retry_delay=0.2, max_retry_delay=1.0)
    yield pool
    pool.close()


def test_price_source_is_deterministic_and_knows_three_symbols() -> None:
    end = date(2024, 3, 1)
    week = prices.series("ZEC", 7, end=end)
    assert len(week) == 7
    assert [t.date() for t, _ in week] == sorted(t.date() for t, _ in week)
    assert week[-1][0].date() == end
    assert week == prices.series("zec", 7, end=end)
    assert prices.series("ZEC", 30, end=end)[-7:] == week  # windows agree
    assert prices.known_symbols() == ["BTC", "ETH", "ZEC"]
    assert prices.series("DOGE", 7, end=end) == []
    assert doctest.testmod(prices).failed == 0


def test_query_agent_finds_the_symbol_in_a_question() -> None:
    assert agents.parse_symbol("What is the ZEC price?") == "ZEC"
    assert agents.parse_symbol("how is ethereum doing") == "ETH"
    assert agents.parse_symbol("What is the DOGE price?") == "DOGE"
    assert agents.parse_symbol("what is the price?") is None
    assert doctest.testmod(agents).failed == 0


def test_agents_in_separate_processes_answer_and_report_unknown_symbols(
    names: Names, pool: ConnectionPool
) -> None:
    exchange = names.new_exchange("demo")
    lines: list[str] = []
    running = AgentProcesses(exchange, out=Printer(lines.append))
    for queue in running.queues:
        names.queues.update({queue, dlq_name(queue)})

    with running:
        client = AskClient(pool, exchange)
        try:
            zec = client.ask("What is the ZEC price?", timeout=30)
            unknown = client.ask("What is the DOGE price?", timeout=30)
            no_symbol = client.ask("what is the price?", timeout=30)
        finally:
            client.close()

    assert zec.answered, zec.problem
    assert zec.error_code is None
    assert zec.answer is not None
    assert PRICE.search(zec.answer), zec.answer
    assert "over 30 days" in zec.answer

    assert unknown.error_code == "SYMBOL_NOT_FOUND"
    assert unknown.answer is not None
    assert "DOGE" in unknown.answer
    assert no_symbol.error_code == "NO_SYMBOL"

    # Every agent did its step for the ZEC question, logged with its correlation id,
    # and each one exited cleanly on SIGTERM.
    for source in ("data_agent", "analysis_agent", "query_agent"):
        assert any(line.startswith(source) and zec.correlation_id in line for line in lines), (
            f"{source} logged no step for {zec.correlation_id}:\n" + "\n".join(lines)
        )
    assert running.exit_codes == {"data_agent": 0, "analysis_agent": 0, "query_agent": 0}
    assert not [line for line in lines if " ERROR " in line], "\n".join(lines)


def test_run_demo_answers_every_question_and_deletes_its_exchange(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = run_demo(["What is the ZEC price?", "What is the DOGE price?"])
    output = capsys.readouterr().out

    assert status == 0, output
    assert "2/2 questions answered" in output
    found = re.search(r"exchange (chimera\.demo\.[0-9a-f]{8}) ", output)
    assert found, output
    exchange = found.group(1)
    left = rabbitmqctl("list_exchanges", "name", "--quiet") + rabbitmqctl(
        "list_queues", "name", "--quiet"
    )
    assert exchange not in left
