"""An agent in a process of its own, for the fault scenarios that signal or kill it.

Run by tests/faults/test_reliability_faults.py (through
``scenario_helpers.ChildAgent``) as::

    python agent_process.py worker    EXCHANGE QUEUE CONNECTION_NAME
    python agent_process.py responder EXCHANGE QUEUE CONNECTION_NAME

``worker``: a sync EventSubscriber (prefetch 20) bound to ``work.#`` whose
handler takes about 50 ms and prints ``handled <message_id>`` when it returns.

``responder``: a BaseAgent answering ``rpc.request`` (MyRequest) with
MyResponse(text=upper(text)). It prints ``received <message_id>`` when a
request arrives and ``answered <message_id>`` once the reply is confirmed. A
request whose text starts with ``stall`` is not answered on its first delivery
(the handler sleeps until the process is killed); once redelivered (it carries
``x-chimera-redeliveries``) it is. ``sleep:<seconds>:...`` answers after that long.

Both print ``consuming`` once attached, run ``start_consuming`` on the main
thread (so SIGTERM stops them gracefully) and print ``stopped`` when it returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, EventSubscriber
from messaging.config import RabbitMQConfig
from messaging.generated import messages_pb2
from messaging.headers import REDELIVERIES

HANDLER_SECONDS = 0.05


_SAY = threading.Lock()


def say(line: str) -> None:
    """One whole line per call: print() writes the newline apart, so threads could interleave."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Worker(EventSubscriber):
    def get_message_class(self, routing_key: str) -> type[ProtoMessage]:
        return messages_pb2.QueryRequest

    def handle_message(self, message: ProtoMessage, properties: dict[str, Any]) -> None:
        time.sleep(HANDLER_SECONDS)
        say(f"handled {properties['message_id']}")


class Responder(BaseAgent):
    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"rpc.request": messages_pb2.MyRequest}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, messages_pb2.MyRequest)
        msg_id = properties["message_id"]
        say(f"received {msg_id}")
        text = message.text
        if text.startswith("stall") and REDELIVERIES not in properties["headers"]:
            time.sleep(3600)  # until killed
        if text.startswith("sleep:"):
            time.sleep(float(text.split(":")[1]))
        self.publish_response(
            messages_pb2.MyResponse(text=text.upper()), "rpc.response", properties["correlation_id"]
        )
        say(f"answered {msg_id}")


def main() -> int:
    mode, exchange, queue, connection_name = sys.argv[1:5]
    # Launched as a script: the test passes the broker under test through the environment.
    config = RabbitMQConfig(
        host=os.environ.get("RABBITMQ__HOST", "127.0.0.1"),
        port=int(os.environ.get("RABBITMQ__PORT", "5672")),
        connection_name=connection_name,
    )
    pool = ConnectionPool(config, max_retries=30, initial_retry_delay=0.2, max_retry_delay=1.0)
    subscriber: EventSubscriber
    if mode == "worker":
        subscriber = Worker(pool, "fault-worker", exchange, queue, ["work.#"], prefetch_count=20)
    elif mode == "responder":
        subscriber = Responder(pool, "fault-responder", ["rpc.request"], exchange, queue)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    def announce() -> None:
        while not subscriber.is_consuming:
            time.sleep(0.02)
        say("consuming")

    threading.Thread(target=announce, daemon=True).start()
    subscriber.start_consuming()  # returns after SIGTERM, once the message in hand is acked
    say("stopped")
    if isinstance(subscriber, BaseAgent):
        subscriber.close()
    pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
