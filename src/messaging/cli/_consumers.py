"""Who consumes a queue: each consumer's connection name, peer address and node.

AMQP itself only counts consumers. The broker can say more in two places:

- the management API (when the ``rabbitmq_management`` plugin is enabled),
  ``GET /api/consumers/<vhost>``, reached with the same user and password;
- ``rabbitmqctl`` on the broker's own machine (``list_consumers``,
  ``list_channels``, ``list_connections``), addressed at ``RABBITMQ_NODENAME``
  when it is set.

:func:`find_consumers` tries them in that order and, when neither answers,
says why, so ``status`` can say it cannot tell instead of showing nothing.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

MANAGEMENT_PORT = 15672
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


@dataclass(frozen=True)
class Consumer:
    queue: str
    tag: str
    connection_name: str | None
    peer: str | None
    node: str | None


@dataclass
class Consumers:
    """What the broker said about consumers, and where it said it (or why nobody could)."""

    source: str | None
    by_queue: dict[str, list[Consumer]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def of(self, queue: str) -> list[Consumer] | None:
        """The queue's consumers; None when no source could tell."""
        if self.source is None:
            return None
        return self.by_queue.get(queue, [])


@dataclass(frozen=True)
class Target:
    """The broker as the CLI reaches it over AMQP."""

    host: str
    vhost: str
    username: str
    password: str


def find_consumers(target: Target, queues: list[str], management_url: str | None) -> Consumers:
    wanted = set(queues)
    problems = []
    base = management_url or f"http://{_url_host(target.host)}:{MANAGEMENT_PORT}"
    try:
        found = _from_management(base, target)
        return Consumers(f"the management API at {base}", _keep(found, wanted))
    except _UnavailableError as exc:
        problems.append(str(exc))
    try:
        found = _from_rabbitmqctl(target)
        node = os.environ.get("RABBITMQ_NODENAME")
        return Consumers(f"rabbitmqctl{f' -n {node}' if node else ''}", _keep(found, wanted))
    except _UnavailableError as exc:
        problems.append(str(exc))
    return Consumers(None, problems=problems)


class _UnavailableError(Exception):
    """This source cannot tell; the message says why."""


def _keep(found: list[Consumer], wanted: set[str]) -> dict[str, list[Consumer]]:
    by_queue: dict[str, list[Consumer]] = {}
    for consumer in found:
        if consumer.queue in wanted:
            by_queue.setdefault(consumer.queue, []).append(consumer)
    return by_queue


# -- the management API ---------------------------------------------------------------


def _from_management(base: str, target: Target) -> list[Consumer]:
    url = f"{base.rstrip('/')}/api/consumers/{quote(target.vhost, safe='')}"
    token = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            entries = json.load(response)
    except urllib.error.HTTPError as exc:
        raise _UnavailableError(f"the management API at {base} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _UnavailableError(f"no management API at {base} ({reason})") from None
    consumers = []
    for entry in entries if isinstance(entries, list) else []:
        channel = entry.get("channel_details") or {}
        peer = channel.get("peer_host")
        consumers.append(
            Consumer(
                queue=str((entry.get("queue") or {}).get("name", "")),
                tag=str(entry.get("consumer_tag", "")),
                connection_name=channel.get("connection_name"),
                peer=f"{peer}:{channel.get('peer_port')}" if peer else None,
                node=channel.get("node"),
            )
        )
    return consumers


# -- rabbitmqctl on the broker's machine ---------------------------------------------


def _from_rabbitmqctl(target: Target) -> list[Consumer]:
    if target.host.lower() not in _LOCAL_HOSTS:
        raise _UnavailableError(
            f"rabbitmqctl only answers on the broker's own machine, and {target.host} "
            "is not this one"
        )
    if shutil.which("rabbitmqctl") is None:
        raise _UnavailableError("rabbitmqctl is not installed here")
    consumers = _ctl(target, "list_consumers", "queue_name", "channel_pid", "consumer_tag")
    channels = {
        c["pid"]: c["connection"] for c in _ctl(target, "list_channels", "pid", "connection")
    }
    connections = {
        c["pid"]: c
        for c in _ctl(
            target, "list_connections", "pid", "client_properties", "peer_host", "peer_port"
        )
    }
    found = []
    for entry in consumers:
        connection = connections.get(channels.get(entry.get("channel_pid"), ""), {})
        found.append(
            Consumer(
                queue=str(entry.get("queue_name", "")),
                tag=str(entry.get("consumer_tag", "")),
                connection_name=_connection_name(connection.get("client_properties")),
                peer=_peer(connection.get("peer_host"), connection.get("peer_port")),
                node=os.environ.get("RABBITMQ_NODENAME"),
            )
        )
    return found


def _ctl(target: Target, command: str, *columns: str) -> list[dict[str, Any]]:
    node = os.environ.get("RABBITMQ_NODENAME")
    args = ["rabbitmqctl", *(["-n", node] if node else []), "-q", command]
    if command != "list_connections":
        args += ["-p", target.vhost]
    args += [*columns, "--formatter", "json"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _UnavailableError(f"rabbitmqctl {command} failed: {exc}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise _UnavailableError(f"rabbitmqctl {command} failed: {first}")
    try:
        rows = json.loads(done.stdout or "[]")
    except ValueError:
        raise _UnavailableError(
            f"rabbitmqctl {command} printed something that is not JSON"
        ) from None
    return [row for row in rows if isinstance(row, dict)]


def _connection_name(client_properties: Any) -> str | None:
    """``connection_name`` out of rabbitmqctl's [[key, type, value], ...] table."""
    for item in client_properties or []:
        if isinstance(item, list) and len(item) == 3 and item[0] == "connection_name":
            return str(item[2])
    return None


def _peer(host: Any, port: Any) -> str | None:
    if isinstance(host, list):  # rabbitmqctl prints an address as its octets
        try:
            host = str(ipaddress.ip_address(bytes(host)))
        except ValueError:
            host = ".".join(str(part) for part in host)
    return f"{host}:{port}" if host else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["Consumer", "Consumers", "Target", "find_consumers"]
