"""The asking side: send questions to the query agent and wait for each answer.

:class:`AskClient` uses :meth:`BaseAgent.request`, which waits on RabbitMQ's
direct reply-to: the answer comes straight back to this connection, so the
client declares no queue and leaves nothing on the broker.
``python -m messaging.demo.ask "What is the ZEC price?"`` asks agents already
running (see :mod:`messaging.demo.pipeline` to start them too).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from messaging import (
    ConnectionPool,
    EventPublisher,
    MessagingError,
    create_metadata,
    load_config,
)
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.generated import messages_pb2 as pb

__all__ = ["DEFAULT_QUESTIONS", "Answer", "AskClient", "Printer", "main"]

DEFAULT_QUESTIONS = (
    "What is the ZEC price?",
    "How has BTC done this month?",
    "What is the ETH price?",
    "What is the DOGE price?",
)


@dataclass(frozen=True)
class Answer:
    """What came back for one question; ``answer`` is None when nothing did."""

    question: str
    correlation_id: str
    answer: str | None
    error_code: str | None = None
    problem: str | None = None  # why there is no answer (timeout, unroutable, ...)

    @property
    def answered(self) -> bool:
        return self.answer is not None


class Printer:
    """Prints ``source | text`` lines whole, from any thread."""

    def __init__(self, write: Callable[[str], Any] | None = None) -> None:
        self._write = write or (lambda line: print(line, flush=True))
        self._lock = threading.Lock()

    def __call__(self, source: str, text: str) -> None:
        with self._lock:
            self._write(f"{source:<14} | {text}")


class AskClient:
    """Asks the query agent with ``request()`` (direct reply-to); it consumes no queue."""

    agent_name = "ask_client"

    def __init__(self, connection_pool: ConnectionPool, exchange_name: str = DEFAULT_EXCHANGE):
        self._publisher = EventPublisher(connection_pool, self.agent_name, exchange_name)

    def close(self) -> None:
        self._publisher.close()

    def ask(self, question: str, timeout: float = 30.0, out: Printer | None = None) -> Answer:
        """Send ``question`` as a QueryRequest and wait up to ``timeout`` seconds for the answer."""
        request = pb.QueryRequest(metadata=create_metadata(self.agent_name), query=question)
        correlation_id = request.metadata.correlation_id
        if out is not None:
            out("client", f"asking {question!r} [correlation_id={correlation_id}]")
        try:
            response = self._publisher.request(request, "query.request", timeout=timeout)
        except MessagingError as exc:
            if out is not None:
                out("client", f"no answer: {exc} [correlation_id={correlation_id}]")
            return Answer(question, correlation_id, None, problem=f"{type(exc).__name__}: {exc}")
        assert isinstance(response, pb.QueryResponse)
        code = response.error.code if response.HasField("error") else None
        if out is not None:
            shown = f"{response.answer!r}" + (f" (error {code})" if code else "")
            out("client", f"answer {shown} [correlation_id={correlation_id}]")
        return Answer(question, correlation_id, response.answer, code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m messaging.demo.ask [--exchange NAME] [QUESTION ...]``; 0 if all answered."""
    parser = argparse.ArgumentParser(
        prog="python -m messaging.demo.ask",
        description="Ask the running query agent questions and print the answers.",
    )
    parser.add_argument("questions", nargs="*", help="default: a few sample questions")
    parser.add_argument("--exchange", default=DEFAULT_EXCHANGE)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per question")
    args = parser.parse_args(argv)
    out = Printer()
    try:
        with ConnectionPool(load_config().rabbitmq) as pool:
            client = AskClient(pool, args.exchange)
            try:
                answers = [
                    client.ask(q, args.timeout, out) for q in args.questions or DEFAULT_QUESTIONS
                ]
            finally:
                client.close()
    except MessagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if all(a.answered for a in answers) else 1
