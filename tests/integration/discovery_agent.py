"""An agent process for the discovery tests: ``python -m tests.integration.discovery_agent``.

Reads ``DISCOVERY_TEST_EXCHANGE`` and ``DISCOVERY_TEST_QUEUE`` (and the
``RABBITMQ__*`` / ``DISCOVERY__*`` settings) from the environment, prints
``consuming`` once its consumer is attached, and answers each
``ask.*`` QueryRequest with a QueryResponse whose answer is the query shouted;
a query ``"fail"`` is refused for good (the caller gets RemoteError).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from google.protobuf.message import Message

from messaging import BaseAgent, ConnectionPool, RejectedMessageError, create_metadata
from messaging.generated import messages_pb2 as pb


class Shouter(BaseAgent):
    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(
            pool,
            "shouter",
            ["ask.*"],
            os.environ["DISCOVERY_TEST_EXCHANGE"],
            os.environ["DISCOVERY_TEST_QUEUE"],
            version="3.2.1",
        )

    def get_routing_key_map(self) -> dict[str, type[Message]]:
        return {"ask.*": pb.QueryRequest}

    def get_publish_map(self) -> dict[str, type[Message]]:
        return {"ask.reply": pb.QueryResponse}

    def route_message(self, message: Message, routing_key: str, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        if message.query == "fail":
            raise RejectedMessageError("no shouting about failure")
        answer = pb.QueryResponse(
            metadata=create_metadata(self.agent_name, properties["correlation_id"]),
            query=message.query,
            answer=message.query.upper(),
        )
        self.publish_response(answer, "ask.reply", properties["correlation_id"])


def main() -> None:
    pool = ConnectionPool()
    agent = Shouter(pool)

    def say_when_consuming() -> None:
        while not agent.is_consuming:
            threading.Event().wait(0.01)
        print("consuming", flush=True)

    threading.Thread(target=say_when_consuming, daemon=True).start()
    try:
        agent.start_consuming()
    finally:
        pool.close()


if __name__ == "__main__":
    main()
