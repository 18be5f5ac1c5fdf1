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

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from messaging.cli._admin import (
    Target,
    UnavailableError,
    management_get,
    rabbitmqctl,
    rabbitmqctl_name,
)


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


def find_consumers(target: Target, queues: list[str]) -> Consumers:
    wanted = set(queues)
    problems = []
    try:
        found = _from_management(target)
        return Consumers(f"the management API at {target.management_base}", _keep(found, wanted))
    except UnavailableError as exc:
        problems.append(str(exc))
    try:
        return Consumers(rabbitmqctl_name(target), _keep(_from_rabbitmqctl(target), wanted))
    except UnavailableError as exc:
        problems.append(str(exc))
    return Consumers(None, problems=problems)


def _keep(found: list[Consumer], wanted: set[str]) -> dict[str, list[Consumer]]:
    by_queue: dict[str, list[Consumer]] = {}
    for consumer in found:
        if consumer.queue in wanted:
            by_queue.setdefault(consumer.queue, []).append(consumer)
    return by_queue


def _from_management(target: Target) -> list[Consumer]:
    entries = management_get(target, "consumers/{vhost}")
    # A consumer's channel names its connection by address; the name the client
    # gave (connection_name) is on the connection itself.
    given = {
        str(c.get("name")): c.get("user_provided_name")
        or (c.get("client_properties") or {}).get("connection_name")
        for c in management_get(
            target, "connections?columns=name,user_provided_name,client_properties"
        )
        if isinstance(c, dict)
    }
    consumers = []
    for entry in entries if isinstance(entries, list) else []:
        channel = entry.get("channel_details") or {}
        peer = channel.get("peer_host")
        connection = str(channel.get("connection_name", ""))
        consumers.append(
            Consumer(
                queue=str((entry.get("queue") or {}).get("name", "")),
                tag=str(entry.get("consumer_tag", "")),
                connection_name=given.get(connection) or connection or None,
                peer=f"{peer}:{channel.get('peer_port')}" if peer else None,
                node=channel.get("node"),
            )
        )
    return consumers


def _from_rabbitmqctl(target: Target) -> list[Consumer]:
    consumers = rabbitmqctl(target, "list_consumers", "queue_name", "channel_pid", "consumer_tag")
    channels = {
        c["pid"]: c["connection"] for c in rabbitmqctl(target, "list_channels", "pid", "connection")
    }
    columns = ("pid", "client_properties", "peer_host", "peer_port")
    connections = {c["pid"]: c for c in rabbitmqctl(target, "list_connections", *columns)}
    found = []
    for entry in consumers:
        connection = connections.get(channels.get(entry.get("channel_pid"), ""), {})
        found.append(
            Consumer(
                queue=str(entry.get("queue_name", "")),
                tag=str(entry.get("consumer_tag", "")),
                connection_name=_connection_name(connection.get("client_properties")),
                peer=_peer(connection.get("peer_host"), connection.get("peer_port")),
                node=target.node,
            )
        )
    return found


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


__all__ = ["Consumer", "Consumers", "find_consumers"]
