"""A peer for tests/integration/test_previous_version.py, written against the spec's API only,
so that it runs on whichever version of the bus is first on PYTHONPATH.

    python previous_peer.py ask EXCHANGE ROUTING_KEY TEXT   # request(); prints the outcome
    python previous_peer.py answer EXCHANGE QUEUE KEY       # a BaseAgent that answers KEY
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from google.protobuf.message import Message

from messaging import BaseAgent, ConnectionPool, EventPublisher
from messaging.config import load_config
from messaging.generated import messages_pb2 as pb


def ask(exchange: str, routing_key: str, text: str) -> None:
    pool = ConnectionPool(load_config().rabbitmq)
    publisher = EventPublisher(pool, "old-caller", exchange)
    started = time.monotonic()
    try:
        reply = publisher.request(pb.QueryRequest(query=text), routing_key, timeout=20)
    except Exception as exc:
        print(f"raised {type(exc).__name__} after {time.monotonic() - started:.1f}s: {exc}")
    else:
        print(f"reply {reply.DESCRIPTOR.full_name}: {getattr(reply, 'answer', '')}")
    publisher.close()
    pool.close()


class Echo(BaseAgent):
    def __init__(self, pool: ConnectionPool, exchange: str, queue: str, key: str) -> None:
        self.key = key
        super().__init__(pool, "old-echo", [key], exchange, queue)

    def get_routing_key_map(self) -> dict[str, type[Message]]:
        return {self.key: pb.QueryRequest}

    def route_message(self, message: Message, routing_key: str, properties: dict[str, Any]) -> None:
        assert isinstance(message, pb.QueryRequest)
        headers = sorted(k for k in properties["headers"] if k.startswith("x-conversation"))
        print(f"handled {message.query!r} with headers {headers}", flush=True)
        reply = pb.QueryResponse(answer=message.query.upper())
        self.publish_response(reply, "old.answer", properties["correlation_id"])


def answer(exchange: str, queue: str, key: str) -> None:
    pool = ConnectionPool(load_config().rabbitmq)
    agent = Echo(pool, exchange, queue, key)

    def say_when_consuming() -> None:
        while not agent.is_consuming:
            time.sleep(0.05)
        print("consuming", flush=True)

    threading.Thread(target=say_when_consuming, daemon=True).start()
    agent.start_consuming()  # on the main thread, until SIGTERM
    agent.close()
    pool.close()


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"ask": ask, "answer": answer}[command](*arguments)
