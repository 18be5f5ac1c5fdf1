"""Synchronous helpers that inject real faults into the local RabbitMQ via ``rabbitmqctl``.

Every helper that takes the broker down restores it in a ``finally``: the
broker is shared with other tests and engineers and must always be left
running. ``ensure_running()`` is the last line of defence (call it from a
session fixture's teardown).

Measured here (RabbitMQ 3.10.8, 2 shared cores, 2026-11-27): any ``rabbitmqctl``
call costs about 1 s of CLI start-up; ``stop_app`` 1.4 s; ``start_app`` +
``await_startup`` 2.7 s, so a restart is about 4-5 s end to end.
``memory_alarm()`` sees the alarm raised after 1.8 s and cleared 2.5 s after
restoring the watermark. ``close_connections_matching`` is two listing calls
plus one call per match: about 2-3 s.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests import broker_env

__all__ = [
    "DEFAULT_WATERMARK",
    "AppStopped",
    "BrokerCommandError",
    "ConnectionInfo",
    "alarms",
    "app_stopped",
    "await_startup",
    "close_all_connections",
    "close_connection",
    "close_connections_matching",
    "delete_queue",
    "ensure_running",
    "list_connections",
    "memory_alarm",
    "queue_info",
    "rabbitmqctl",
    "set_memory_watermark",
    "start_app",
    "stop_app",
    "wait_port",
]

HOST = broker_env.HOST
PORT = broker_env.PORT
DEFAULT_WATERMARK = 0.4


class BrokerCommandError(RuntimeError):
    """A ``rabbitmqctl`` call failed or timed out."""


def rabbitmqctl(*args: str, timeout: float = 30.0, tool: str = "rabbitmqctl") -> str:
    """Run ``rabbitmqctl <args>`` (quiet) and return its stdout; raise on failure."""
    cmd = [tool, *broker_env.ctl_args(), "-q", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BrokerCommandError(f"{' '.join(cmd)!r} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise BrokerCommandError(
            f"{' '.join(cmd)!r} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


def _json(*args: str, timeout: float = 30.0) -> Any:
    out = rabbitmqctl(*args, "--formatter", "json", timeout=timeout).strip()
    return json.loads(out) if out else []


# -- reachability ------------------------------------------------------------------------------


def port_open(host: str = HOST, port: int = PORT, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(timeout: float = 30.0, host: str = HOST, port: int = PORT) -> bool:
    """Wait until ``host:port`` accepts connections; False if it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port, timeout=1.0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def await_startup(timeout: float = 60.0) -> None:
    """Wait for the broker app to be fully booted, then for the AMQP port."""
    rabbitmqctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 15)
    if not wait_port(timeout):
        raise BrokerCommandError(f"port {PORT} not open {timeout}s after await_startup")


def ensure_running(timeout: float = 90.0) -> None:
    """Make sure the broker under test answers: start the app or the node if needed."""
    if port_open():
        return
    node_up = True
    try:
        rabbitmqctl("ping", timeout=20)
    except BrokerCommandError:
        node_up = False
    if node_up:
        # The Erlang node is up but the app is stopped (an interrupted stop_app).
        rabbitmqctl("start_app", timeout=timeout)
    else:
        subprocess.run(
            ["rabbitmq-server", "-detached"], capture_output=True, timeout=30, check=False
        )
    await_startup(timeout)


# -- app restarts ------------------------------------------------------------------------------


def stop_app(timeout: float = 60.0) -> float:
    """Stop the RabbitMQ application (the node stays up); returns the seconds it took."""
    started = time.monotonic()
    rabbitmqctl("stop_app", timeout=timeout)
    return time.monotonic() - started


def start_app(timeout: float = 90.0) -> float:
    """Start the application and wait until it serves AMQP; returns the seconds it took."""
    started = time.monotonic()
    rabbitmqctl("start_app", timeout=timeout)
    await_startup(timeout)
    return time.monotonic() - started


@dataclass
class AppStopped:
    """Timings of one ``app_stopped()`` block, in seconds."""

    stop_seconds: float = 0.0
    down_seconds: float = 0.0  # from stop_app returning to start_app being called
    start_seconds: float = 0.0
    stopped_at: float = field(default=0.0, repr=False)  # time.monotonic()


@contextlib.contextmanager
def app_stopped(seconds: float | None = None) -> Iterator[AppStopped]:
    """Stop the app for the block; restart it in ``finally``, however the block exits.

    With ``seconds``, the app stays down at least that long (measured from
    ``stop_app`` returning), even if the block finishes earlier.
    """
    timings = AppStopped()
    try:
        timings.stop_seconds = stop_app()
        timings.stopped_at = time.monotonic()
        yield timings
        if seconds is not None:
            remaining = seconds - (time.monotonic() - timings.stopped_at)
            if remaining > 0:
                time.sleep(remaining)
    finally:
        if timings.stopped_at:
            timings.down_seconds = time.monotonic() - timings.stopped_at
        try:
            timings.start_seconds = start_app()
        except BrokerCommandError:
            ensure_running()


# -- memory alarm ------------------------------------------------------------------------------


def set_memory_watermark(fraction: float) -> None:
    rabbitmqctl("set_vm_memory_high_watermark", str(fraction))


def alarms() -> list[str]:
    """Active resource alarms on the node, as Erlang terms (empty: none)."""
    out = rabbitmqctl("eval", "rabbit_alarm:get_alarms().").strip()
    if out in ("", "[]"):
        return []
    return [out]


def _wait_alarm(active: bool, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        current = alarms()
        if bool(current) == active and (not active or "memory" in current[0]):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@contextlib.contextmanager
def memory_alarm(timeout: float = 30.0, restore_to: float = DEFAULT_WATERMARK) -> Iterator[None]:
    """Raise the memory alarm (watermark 0) for the block: publishers get blocked.

    Entering waits until the alarm is active; leaving restores the watermark
    in ``finally`` and waits until the alarm has cleared.
    """
    try:
        set_memory_watermark(0)
        if not _wait_alarm(True, timeout):
            raise BrokerCommandError(f"memory alarm not raised within {timeout}s")
        yield
    finally:
        set_memory_watermark(restore_to)
        if not _wait_alarm(False, timeout):
            raise BrokerCommandError(f"alarm still active {timeout}s after restoring: {alarms()}")


# -- connections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionInfo:
    """One client connection as the broker sees it."""

    pid: str  # "<rabbit@host.N.N.N>", what ``rabbitmqctl close_connection`` takes
    name: str  # the broker's name: "127.0.0.1:41354 -> 127.0.0.1:5672"
    client_name: str | None  # the client-provided connection_name, if any
    peer_port: int
    user: str
    state: str


def _client_name(client_properties: Any) -> str | None:
    # rabbitmqctl's JSON renders the AMQP table as [[key, type, value], ...].
    props = _table(client_properties)
    value = props.get("connection_name")
    return None if value is None else str(value)


def list_connections() -> list[ConnectionInfo]:
    """Every client connection on the node.

    Two CLI calls: the JSON formatter renders pids as ``#PID<...>``, which
    ``close_connection`` does not accept, so pids come from the table output.
    """
    table = rabbitmqctl("list_connections", "--no-table-headers", "pid", "name")
    pids: dict[str, str] = {}
    for line in table.splitlines():
        pid, sep, name = line.partition("\t")
        if sep:
            pids[name.strip()] = pid.strip()
    rows = _json("list_connections", "name", "peer_port", "user", "state", "client_properties")
    return [
        ConnectionInfo(
            pid=pids.get(str(row["name"]), ""),
            name=str(row["name"]),
            client_name=_client_name(row.get("client_properties")),
            peer_port=int(row.get("peer_port") or 0),
            user=str(row.get("user", "")),
            state=str(row.get("state", "")),
        )
        for row in rows
    ]


def close_connection(pid: str, reason: str = "fault injected") -> bool:
    """Close one connection by its pid (``ConnectionInfo.pid``); False if it was gone."""
    if not pid:
        return False
    try:
        rabbitmqctl("close_connection", pid, reason)
    except BrokerCommandError as exc:
        if "not_found" in str(exc) or "noproc" in str(exc):
            return False
        raise
    return True


def close_connections_matching(name_substring: str, reason: str = "fault injected") -> int:
    """Close the connections whose client-provided name contains ``name_substring``.

    Lets a test kill only its own connections on a broker others are using.
    Returns how many were closed.
    """
    if not name_substring:
        raise ValueError("an empty substring would match every named connection")
    closed = 0
    for conn in list_connections():
        if conn.client_name is not None and name_substring in conn.client_name:
            closed += close_connection(conn.pid, reason)
    return closed


def close_all_connections(reason: str = "fault injected") -> None:
    """Close every client connection on the node (disrupts everyone using the broker)."""
    rabbitmqctl("close_all_connections", reason)


# -- queues ------------------------------------------------------------------------------------


def queue_info(name: str, vhost: str = "/") -> dict[str, Any] | None:
    """``{"name", "messages", "messages_ready", "messages_unacknowledged", "consumers",
    "arguments"}`` for queue ``name``, or None if it does not exist."""
    rows = _json(
        "list_queues",
        "-p",
        vhost,
        "name",
        "messages",
        "messages_ready",
        "messages_unacknowledged",
        "consumers",
        "arguments",
    )
    for row in rows:
        if row.get("name") == name:
            info: dict[str, Any] = dict(row)
            info["arguments"] = _table(row.get("arguments"))
            return info
    return None


def _table(value: Any) -> dict[str, Any]:
    """Normalise an AMQP table from rabbitmqctl JSON ([[k, type, v], ...] or a dict)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {
            entry[0]: entry[2] for entry in value if isinstance(entry, list) and len(entry) == 3
        }
    return {}


def delete_queue(name: str, vhost: str = "/") -> None:
    """Delete a queue regardless of consumers or messages (no error if it is gone)."""
    with contextlib.suppress(BrokerCommandError):
        rabbitmqctl("delete_queue", "-p", vhost, name)
