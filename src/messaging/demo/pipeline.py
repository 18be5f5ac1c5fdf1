"""The demo end to end: three agent processes, a client asking, everything cleaned up.

``python -m messaging.demo`` (and ``chimera-bus demo``) runs :func:`run_demo`:

1. a fresh exchange ``chimera.demo.<id>``, so the demo never meets other traffic;
2. the data, analysis and query agents started as separate processes
   (``python -m messaging.demo.<name> --exchange ...``), their log lines
   printed here prefixed with their name;
3. once the broker counts a consumer on each agent's queue, a client asks the
   questions one by one and prints each answer;
4. the agents are stopped with SIGTERM, and the exchange and queues deleted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Literal, TypeVar

from pydantic import SecretStr

from messaging import ConnectionPool, MessagingError, RabbitMQConfig, load_config
from messaging.aio import AsyncConnectionPool
from messaging.demo.agents import AnalysisAgent, DataAgent, DemoAgent, QueryAgent, demo_queue_name
from messaging.demo.client import DEFAULT_QUESTIONS, Answer, AskClient, Printer
from messaging.demo.inprocess import InProcessAgents
from messaging.errors import ConfigurationError
from messaging.topology import dlq_name, dlx_name
from messaging.transport import Inspector

T = TypeVar("T")

__all__ = ["AGENTS", "AgentProcesses", "delete_demo_topology", "run_demo"]

AGENTS: tuple[type[DemoAgent], ...] = (DataAgent, AnalysisAgent, QueryAgent)


class AgentProcesses:
    """The demo agents running as child processes on ``exchange``.

    Entering starts them and waits until each is consuming; leaving sends
    SIGTERM and waits for them to exit (killing any that do not within
    ``stop_timeout``).
    """

    def __init__(
        self,
        exchange: str,
        *,
        agents: Sequence[type[DemoAgent]] = AGENTS,
        out: Printer | None = None,
        rabbitmq: RabbitMQConfig | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.exchange = exchange
        self.agents = tuple(agents)
        self.out = out or Printer()
        self.rabbitmq = rabbitmq or load_config().rabbitmq
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.exit_codes: dict[str, int] = {}
        self._relays: list[threading.Thread] = []

    @property
    def queues(self) -> list[str]:
        """The agents' work queues on this exchange."""
        return [demo_queue_name(self.exchange, a.AGENT_NAME) for a in self.agents]

    def __enter__(self) -> AgentProcesses:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for agent in self.agents:
            name = agent.AGENT_NAME
            command = [sys.executable, "-m", f"messaging.demo.{name}", "--exchange", self.exchange]
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            self.processes[name] = process
            self.out("demo", f"started {name} (pid {process.pid})")
            relay = threading.Thread(
                target=self._relay, args=(name, process), name=f"relay-{name}", daemon=True
            )
            relay.start()
            self._relays.append(relay)

    def wait_ready(self) -> None:
        """Return once the broker counts a consumer on every agent's queue.

        Raises RuntimeError if an agent exits first, TimeoutError after ``ready_timeout``.
        """
        started = time.monotonic()
        deadline = started + self.ready_timeout
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with status {process.returncode} before it was ready"
                    )
            counts = consumer_counts(self.rabbitmq, self.queues)
            if all(counts.get(queue, 0) > 0 for queue in self.queues):
                self.out(
                    "demo",
                    f"all {len(self.queues)} agents consuming ({time.monotonic() - started:.1f}s)",
                )
                return
            if time.monotonic() > deadline:
                waiting = [q for q in self.queues if counts.get(q, 0) == 0]
                raise TimeoutError(
                    f"agents not consuming after {self.ready_timeout:.0f}s: {', '.join(waiting)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.out("demo", f"{name} did not stop within {self.stop_timeout:.0f}s; killing it")
                process.kill()
                process.wait()
            self.exit_codes[name] = process.returncode
        for relay in self._relays:
            relay.join(5)
        if self.processes:
            codes = ", ".join(f"{n} {c}" for n, c in self.exit_codes.items())
            self.out("demo", f"agents stopped (exit status: {codes})")
        self.processes.clear()
        self._relays.clear()

    def _relay(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.out(name, line.rstrip("\n"))


Broker = Literal["rabbitmq", "memory"]


def run_demo(
    questions: list[str] | None = None,
    *,
    exchange: str | None = None,
    broker: Broker | None = None,
) -> int:
    """Run the three-agent pipeline and ask ``questions``; 0 if every one was answered.

    ``exchange`` defaults to a fresh ``chimera.demo.<id>``, deleted at the end
    with the agents' queues. An exchange you name is left as it is.
    ``broker="memory"`` (or ``RABBITMQ__URL=memory://``) runs the agents as
    threads of this process on the in-process broker: no RabbitMQ needed.
    """
    asked = list(DEFAULT_QUESTIONS) if questions is None else list(questions)
    own_exchange = exchange is None
    exchange = exchange or f"chimera.demo.{uuid.uuid4().hex[:8]}"
    out = Printer()
    try:
        rabbitmq = load_config().rabbitmq
        if broker == "memory" and rabbitmq.memory_broker is None:
            rabbitmq = RabbitMQConfig(url=SecretStr("memory://"))
        elif broker == "rabbitmq" and rabbitmq.memory_broker is not None:
            raise ConfigurationError(
                "--broker rabbitmq, but RABBITMQ__URL names the in-process broker "
                f"({rabbitmq.safe_url()}); unset it or pick --broker memory"
            )
    except MessagingError as exc:
        out("demo", f"error: {exc}")
        return 2
    in_process = rabbitmq.memory_broker is not None
    where = "the in-process broker" if in_process else "RabbitMQ"
    out("demo", f"exchange {exchange} on {where} ({rabbitmq.safe_url()})")
    answers: list[Answer] = []
    agents: AgentProcesses | InProcessAgents
    if in_process:
        agents = InProcessAgents(exchange, rabbitmq, agents=AGENTS, out=out)
    else:
        agents = AgentProcesses(exchange, out=out, rabbitmq=rabbitmq)
    try:
        with agents, ConnectionPool(rabbitmq) as pool:
            client = AskClient(pool, exchange)
            try:
                answers = [client.ask(q, out=out) for q in asked]
            finally:
                client.close()
    except (MessagingError, RuntimeError, TimeoutError) as exc:
        out("demo", f"error: {type(exc).__name__}: {exc}")
    finally:
        if own_exchange:
            _cleanup(rabbitmq, exchange, agents.queues, out)
    return _report(asked, answers, agents.exit_codes, out)


def _cleanup(rabbitmq: RabbitMQConfig, exchange: str, queues: list[str], out: Printer) -> None:
    try:
        deleted = delete_demo_topology(rabbitmq, exchange, queues)
    except MessagingError as exc:
        out("demo", f"could not delete {exchange} and its queues: {exc}")
    else:
        out("demo", f"deleted {', '.join(deleted)}")


def _report(
    asked: list[str], answers: list[Answer], exit_codes: dict[str, int], out: Printer
) -> int:
    answered = sum(a.answered for a in answers)
    out("demo", f"{answered}/{len(asked)} questions answered")
    for a in answers:
        status = a.answer if a.answered else f"NO ANSWER ({a.problem})"
        out("demo", f"  {a.question} -> {status}")
    crashed = {n: c for n, c in exit_codes.items() if c != 0}
    if crashed:
        out("demo", f"agents that did not exit cleanly: {crashed}")
    return 0 if answered == len(asked) and not crashed else 1


# -- the broker, seen from outside the agents ----------------------------------


def consumer_counts(rabbitmq: RabbitMQConfig, queues: Iterable[str]) -> dict[str, int]:
    """How many consumers the broker counts on each queue that exists."""

    async def count(inspector: Inspector) -> dict[str, int]:
        counts: dict[str, int] = {}
        for queue in queues:
            info = await inspector.queue(queue)
            if info is not None:
                counts[queue] = info.consumers
        return counts

    return asyncio.run(_inspect(rabbitmq, count))


def delete_demo_topology(
    rabbitmq: RabbitMQConfig, exchange: str, queues: Iterable[str]
) -> list[str]:
    """Delete the agents' queues with their DLQs, and the exchange with its DLX."""
    names = [name for queue in queues for name in (queue, dlq_name(queue))]

    async def delete(inspector: Inspector) -> None:
        for queue in names:
            await inspector.delete_queue(queue)
        for name in (exchange, dlx_name(exchange)):
            await inspector.delete_exchange(name)

    asyncio.run(_inspect(rabbitmq, delete))
    return [*names, exchange, dlx_name(exchange)]


async def _inspect(rabbitmq: RabbitMQConfig, work: Callable[[Inspector], Awaitable[T]]) -> T:
    pool = AsyncConnectionPool(
        rabbitmq.model_copy(update={"connection_name": "chimera-demo"}), max_retries=2
    )
    try:
        return await work(pool.consuming.inspector("demo:inspect"))
    finally:
        await pool.close()
