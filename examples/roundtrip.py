"""A first look: publish one question and consume it back through RabbitMQ.

Run with ``scripts/demo`` (or ``python examples/roundtrip.py``).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import ConnectionPool, EventPublisher, EventSubscriber, create_metadata
from messaging.config import load_config
from messaging.generated import messages_pb2


class Printer(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        assert isinstance(message, messages_pb2.QueryRequest)
        print(
            f"consumed  {properties['routing_key']}: {message.query!r} "
            f"[correlation_id={properties['correlation_id']}]"
        )
        self.stop()


def main() -> None:
    config = load_config()
    run = uuid.uuid4().hex[:8]
    exchange = f"chimera.demo.{run}"
    pool = ConnectionPool(config.rabbitmq)
    subscriber = Printer(pool, "printer", exchange, f"printer.{run}", ["query.*"])
    consuming = threading.Thread(target=subscriber.start_consuming)
    consuming.start()
    while not subscriber.is_consuming:
        consuming.join(0.05)
    publisher = EventPublisher(connection_pool=pool, agent_name="asker", exchange_name=exchange)
    request = messages_pb2.QueryRequest(query="What is the ZEC price?")
    request.metadata.CopyFrom(create_metadata("asker"))
    publisher.publish(request, routing_key="query.request")
    print(
        f"published query.request: {request.query!r} (confirmed by the broker) "
        f"[correlation_id={request.metadata.correlation_id}]"
    )
    consuming.join(30)
    publisher.close()
    pool.close()


if __name__ == "__main__":
    main()
