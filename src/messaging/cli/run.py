"""`chimera-bus run package.module:AgentClass [--workers N]`: run agents as a service.

A supervisor (this process) starts N worker processes
(:mod:`messaging.cli._worker`), competing consumers on the agent's one queue.
Each worker configures logging from ``MONITORING__*``, serves its own health
endpoint when a port is given (``--health-port P``: worker i on P+i-1), and
stops cleanly on SIGTERM. A worker that dies is restarted after a growing
pause (0.5 s doubling to 30 s, back to the start once a worker has run for a
minute); every restart is logged and counted. A worker that cannot start
(bad target or configuration, exit 2) stops the whole run instead: restarting
cannot fix it.

SIGTERM or SIGINT to the supervisor: every worker gets SIGTERM and finishes
its message in hand; one still running after --stop-timeout is killed (its
unacked messages go back to the queue). Exit 0 when all stopped cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Annotated

import typer

from messaging.cli._broker import UrlOption, fail
from messaging.cli._types import importable_from_here
from messaging.cli._worker import EXIT_CANNOT_START, WORKER_ENV, load_target
from messaging.config import load_config
from messaging.errors import ConfigurationError
from messaging.ops.logs import configure_from_config

log = logging.getLogger("messaging.run")

FIRST_PAUSE = 0.5
LONGEST_PAUSE = 30.0
STEADY_AFTER = 60.0
"""A worker that ran this long before dying starts its restart pauses over."""


@dataclass
class Worker:
    index: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    pause: float = FIRST_PAUSE
    restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "messaging.cli._worker", self.env[TARGET_ENV]],
            env=self.env,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("worker %d started (pid %d)", self.index, self.process.pid)


TARGET_ENV = "CHIMERA_RUN_TARGET"


@dataclass
class Supervisor:
    target: str
    count: int
    health_port: int | None
    stop_timeout: float
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False
    status: int = 0

    def __post_init__(self) -> None:
        for index in range(1, self.count + 1):
            env = {**os.environ, TARGET_ENV: self.target, WORKER_ENV: f"{index}/{self.count}"}
            if self.health_port is not None:
                env["MONITORING__HTTP_PORT"] = str(self.health_port + index - 1)
            self.workers.append(Worker(index, env))

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d worker(s)", signal.Signals(signum).name, self.count)
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        for worker in self.workers:
            worker.start()
        while not self.stopping:
            self.tend()
            time.sleep(0.2)
        self.stop_all()
        return self.status

    def tend(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    worker.start()
                continue
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                continue
            if code == EXIT_CANNOT_START:
                log.error("worker %d cannot start (exit %d): stopping the run", worker.index, code)
                self.status = EXIT_CANNOT_START
                self.stopping = True
                return
            if now - worker.started_at >= STEADY_AFTER:
                worker.pause = FIRST_PAUSE
            worker.restarts += 1
            worker.restart_at = now + worker.pause
            log.warning(
                "worker %d (pid %d) died (%s); restart %d in %.1fs",
                worker.index,
                worker.process.pid,
                describe_exit(code),
                worker.restarts,
                worker.pause,
            )
            worker.pause = min(worker.pause * 2, LONGEST_PAUSE)

    def stop_all(self) -> None:
        running = [w for w in self.workers if w.process is not None and w.process.poll() is None]
        for worker in running:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for worker in running:
            assert worker.process is not None
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "worker %d (pid %d) still running %.0fs after SIGTERM: killed; its unacked "
                    "messages go back to the queue",
                    worker.index,
                    worker.process.pid,
                    self.stop_timeout,
                )
                worker.process.kill()
                code = worker.process.wait()
                self.status = self.status or 1
            if code != 0:
                self.status = self.status or 1
        restarts = sum(w.restarts for w in self.workers)
        log.info("stopped; %d restart(s) in this run", restarts)


HELP = """\
Run an agent as a service: N worker processes, logging, health, restarts.

TARGET is package.module:AgentClass, importable from here: an agent or
subscriber class (sync or asyncio) taking the connection pool as its one
required argument, or a function taking a ConnectionPool and returning an
agent. The workers are competing consumers on the agent's queue; each
configures logging from MONITORING__LOG_LEVEL/FORMAT and, with --health-port P
(or MONITORING__HTTP_PORT), serves /healthz, /readyz and /metrics on P+i-1. A
worker that dies is restarted after a pause doubling from 0.5 s to 30 s. One
that cannot start (exit 2) stops the run. SIGTERM or Ctrl-C stops every worker
after its message in hand (killed after --stop-timeout). With several workers,
set STORE__REDIS_URL so they share workflow context and seen message ids.
"""


def describe_exit(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"


def run(
    target: Annotated[
        str, typer.Argument(metavar="package.module:AgentClass", help="The agent to run.")
    ],
    workers: Annotated[
        int,
        typer.Option(
            "--workers", "-w", min=1, help="Processes consuming the agent's queue side by side."
        ),
    ] = 1,
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            min=1,
            max=65535,
            help="Serve /healthz, /readyz, /metrics: worker 1 on this port, worker i on "
            "port+i-1 (default: MONITORING__HTTP_PORT, else none).",
            show_default=False,
        ),
    ] = None,
    stop_timeout: Annotated[
        float,
        typer.Option("--stop-timeout", min=0, help="Seconds a worker gets to stop after SIGTERM."),
    ] = 30.0,
    url: UrlOption = None,
) -> None:
    """Run an agent as a service: N worker processes, logging, health, restarts."""
    importable_from_here()  # as for the workers, started with python -m
    try:
        settings = load_config()
        load_target(target)  # fail here, once, rather than in every worker
    except ConfigurationError as exc:
        fail(f"ConfigurationError: {exc}")
    configure_from_config(settings)
    if health_port is None:
        health_port = settings.monitoring.http_port
    if url is not None:
        os.environ["RABBITMQ__URL"] = url  # the workers read it as any agent would
    supervisor = Supervisor(target, workers, health_port, stop_timeout)
    log.info(
        "running %s as %d worker(s)%s",
        target,
        workers,
        f", health on ports {health_port}-{health_port + workers - 1}" if health_port else "",
    )
    raise typer.Exit(supervisor.run())
