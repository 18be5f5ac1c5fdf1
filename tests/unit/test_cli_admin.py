"""What the CLI reads out of rabbitmqctl's and the management API's shapes. Pure."""

from __future__ import annotations

from messaging.cli._consumers import _connection_name, _peer
from messaging.cli._stats import QueueStats, agent_queues
from messaging.cli.top import cells


def test_rabbitmqctl_shapes() -> None:
    table = [["product", "longstr", "aiormq"], ["connection_name", "longstr", "data_agent:consume"]]
    assert _connection_name(table) == "data_agent:consume"
    assert _connection_name([["product", "longstr", "x"]]) is None
    assert _connection_name(None) is None
    assert _peer([127, 0, 0, 1], 5672) == "127.0.0.1:5672"
    assert _peer("10.0.0.7", 41000) == "10.0.0.7:41000"
    assert _peer(None, None) is None


def test_agent_queues_are_those_with_a_dlq_beside_them() -> None:
    names = {"data_agent", "data_agent.dlq", "data_agent.retry.1", "amq.gen-x", "lonely.dlq"}
    assert agent_queues(names) == ["data_agent"]


def test_top_cells_say_missing_and_unknown() -> None:
    assert cells(QueueStats("q", None, None, None, None, None, None))[1] == ("missing", "red")
    row = cells(QueueStats("q", 5, None, 0, None, 2.34, 3))
    assert row[1:] == ["5", "-", ("0", "yellow"), "-", "2.3", ("3", "red")]
