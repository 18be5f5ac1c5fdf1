"""The demo agents as threads of this process, on the in-process broker.

``python -m messaging.demo --broker memory`` needs no RabbitMQ: the data,
analysis and query agents each consume on a thread of their own (as each
would in its own process), all on the broker of ``RABBITMQ__URL=memory://``,
and their log lines are printed prefixed with their name like the agent
processes' lines are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from messaging import ConnectionPool, RabbitMQConfig
from messaging.demo.agents import DemoAgent, demo_queue_name
from messaging.demo.client import Printer

__all__ = ["InProcessAgents"]

_AGENT_LOGGERS = ("messaging.demo", "messaging.subscriber")


class InProcessAgents:
    """The demo agents consuming on threads of this process; a context manager.

    Entering starts them and waits until each is consuming; leaving stops
    them (the message in hand finishes) and closes their pool.
    """

    def __init__(
        self,
        exchange: str,
        rabbitmq: RabbitMQConfig,
        *,
        agents: Sequence[type[DemoAgent]],
        out: Printer | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.exchange = exchange
        self.rabbitmq = rabbitmq
        self.agent_classes = tuple(agents)
        self.out = out or Printer()
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.exit_codes: dict[str, int] = {}
        self._pool: ConnectionPool | None = None
        self._agents: dict[str, DemoAgent] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._failures: dict[str, BaseException] = {}
        self._log_handler = _PrefixedLines(self.out, [a.AGENT_NAME for a in self.agent_classes])

    @property
    def queues(self) -> list[str]:
        return [demo_queue_name(self.exchange, a.AGENT_NAME) for a in self.agent_classes]

    def __enter__(self) -> InProcessAgents:
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
        self._log_handler.install()
        self._pool = ConnectionPool(self.rabbitmq)
        for agent_class in self.agent_classes:
            name = agent_class.AGENT_NAME
            agent = agent_class(self._pool, self.exchange)
            self._agents[name] = agent
            thread = threading.Thread(target=self._consume, args=(name, agent), name=name)
            self._threads[name] = thread
            thread.start()
            self.out("demo", f"started {name} (thread)")

    def _consume(self, name: str, agent: DemoAgent) -> None:
        try:
            agent.start_consuming()
        except BaseException as exc:
            self._failures[name] = exc
            self.out(name, f"stopped by {type(exc).__name__}: {exc}")

    def wait_ready(self) -> None:
        """Return once every agent is consuming; raise if one failed or the time is up."""
        started = time.monotonic()
        while True:
            for name, exc in self._failures.items():
                raise RuntimeError(f"{name} failed before it was ready: {exc}")
            if all(agent.is_consuming for agent in self._agents.values()):
                self.out(
                    "demo",
                    f"all {len(self._agents)} agents consuming ({time.monotonic() - started:.1f}s)",
                )
                return
            if time.monotonic() - started > self.ready_timeout:
                waiting = [n for n, a in self._agents.items() if not a.is_consuming]
                raise TimeoutError(
                    f"agents not consuming after {self.ready_timeout:.0f}s: {', '.join(waiting)}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        for agent in self._agents.values():
            agent.stop()
        for name, thread in self._threads.items():
            thread.join(self.stop_timeout)
            stuck = thread.is_alive()
            if stuck:
                self.out("demo", f"{name} did not stop within {self.stop_timeout:.0f}s")
            self.exit_codes[name] = 1 if stuck or name in self._failures else 0
        for agent in self._agents.values():
            agent.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._threads:
            codes = ", ".join(f"{n} {c}" for n, c in self.exit_codes.items())
            self.out("demo", f"agents stopped (exit status: {codes})")
        self._agents.clear()
        self._threads.clear()
        self._log_handler.uninstall()


class _PrefixedLines(logging.Handler):
    """The agents' INFO lines, printed as ``<agent> | HH:MM:SS.mmm LEVEL logger: text``.

    The line goes under the agent whose thread logged it (handlers run on the
    agent's own thread), or whose name starts the message; else under "bus".
    """

    def __init__(self, out: Printer, agent_names: Sequence[str]) -> None:
        super().__init__(logging.INFO)
        self._out = out
        self._names = tuple(agent_names)
        self._short = {name.removesuffix("_agent"): name for name in agent_names}
        self.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S"
            )
        )
        self._levels: dict[str, int] = {}

    def install(self) -> None:
        for name in _AGENT_LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(self)
            logger.propagate = False
        # The rest of the bus speaks up for warnings and errors only.
        bus = logging.getLogger("messaging")
        bus.addHandler(self)
        self._levels["messaging"] = bus.level
        if bus.level == logging.NOTSET or bus.level < logging.WARNING:
            bus.setLevel(logging.WARNING)
        bus.propagate = False

    def uninstall(self) -> None:
        for name, level in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self)
            logger.setLevel(level)
            logger.propagate = True
        self._levels.clear()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out(self._source(record), self.format(record))
        except Exception:
            self.handleError(record)

    def _source(self, record: logging.LogRecord) -> str:
        if record.threadName in self._names:
            return str(record.threadName)
        first = record.getMessage().split(":", 1)[0].split(" ", 1)[0]
        if first in self._names:
            return first
        return self._short.get(first, "bus")
