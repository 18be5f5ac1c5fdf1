"""Agents for the `chimera-bus run` tests, imported by the workers as the target.

Where they work comes from the environment the test gives the run:
``RUN_TEST_EXCHANGE`` and ``RUN_TEST_QUEUE``.
"""

from __future__ import annotations

import os
from typing import Any

from google.protobuf.message import Message

from messaging import BaseAgent, ConnectionPool, create_metadata
from messaging.generated import messages_pb2 as pb


class PidAgent(BaseAgent):
    """Answers each ``run.ask`` with the pid of the worker that handled it."""

    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(
            connection_pool=pool,
            agent_name="pid_agent",
            routing_keys=["run.ask"],
            exchange_name=os.environ["RUN_TEST_EXCHANGE"],
            queue_name=os.environ["RUN_TEST_QUEUE"],
        )

    def get_routing_key_map(self) -> dict[str, type[Message]]:
        return {"run.ask": pb.QueryRequest}

    def route_message(self, message: Message, routing_key: str, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        answer = pb.QueryRequest(
            metadata=create_metadata(self.agent_name, properties["correlation_id"]),
            query=f"{message.query} {os.getpid()}",
        )
        self.publish(answer, "run.answer")


NOT_AN_AGENT = 42


def not_an_agent(pool: ConnectionPool) -> object:
    """A factory that returns something else: the worker cannot start."""
    return object()
