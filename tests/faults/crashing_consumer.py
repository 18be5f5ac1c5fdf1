"""A consumer process that dies (os._exit) on every message whose query is 'crash'.

Run by tests/faults/test_poison.py as: python crashing_consumer.py EXCHANGE QUEUE MAX
It prints "consuming" once attached and "handled <query>" for each message it survives.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventSubscriber
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2


class Crasher(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        if message.query == "crash":  # type: ignore[attr-defined]
            os._exit(17)
        print(f"handled {message.query}", flush=True)  # type: ignore[attr-defined]


def main() -> None:
    exchange, queue, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # Launched as a script: the test passes the broker under test through the environment.
    config = RabbitMQConfig(
        host=os.environ.get("RABBITMQ__HOST", "127.0.0.1"),
        port=int(os.environ.get("RABBITMQ__PORT", "5672")),
        connection_name="crasher",
    )
    pool = ConnectionPool(config)
    subscriber = Crasher(pool, "crasher", exchange, queue, ["work"], max_redeliveries=limit)

    def announce() -> None:
        while not subscriber.is_consuming:
            threading.Event().wait(0.05)
        print("consuming", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    subscriber.start_consuming()


if __name__ == "__main__":
    main()
