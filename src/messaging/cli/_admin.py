"""What only the broker's administration side can tell: the management API and rabbitmqctl.

AMQP counts a queue's ready messages and consumers, nothing more. Who the
consumers are, how many messages are unacked and how fast messages flow come
from the management API (when the ``rabbitmq_management`` plugin is enabled,
reached with the same user and password) or from ``rabbitmqctl`` on the
broker's own machine (addressing ``RABBITMQ_NODENAME`` when set). Each call
here either answers or raises :class:`UnavailableError` saying why, so that a
command can say it cannot tell rather than show nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from messaging.config import BrokerNode

MANAGEMENT_PORT = 15672
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


class UnavailableError(Exception):
    """This source cannot tell; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class Target:
    """The broker as the CLI reaches it over AMQP, and how to reach its admin side."""

    host: str
    vhost: str
    username: str
    password: str
    management_url: str | None = None

    @classmethod
    def of(cls, node: BrokerNode, management_url: str | None = None) -> Target:
        """The node the CLI is connected to (of the ones RABBITMQ__URL lists)."""
        return cls(
            node.host,
            node.vhost,
            node.username,
            node.password.get_secret_value(),
            management_url,
        )

    @property
    def management_base(self) -> str:
        if self.management_url:
            return self.management_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{MANAGEMENT_PORT}"

    @property
    def node(self) -> str | None:
        return os.environ.get("RABBITMQ_NODENAME") or None


def management_get(target: Target, path: str) -> Any:
    """GET ``/api/<path>`` (``{vhost}`` in it is filled in) as parsed JSON."""
    base = target.management_base
    url = f"{base}/api/{path.format(vhost=quote(target.vhost, safe=''))}"
    token = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise UnavailableError(f"the management API at {base} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UnavailableError(f"no management API at {base} ({reason})") from None


def rabbitmqctl(target: Target, command: str, *columns: str) -> list[dict[str, Any]]:
    """``rabbitmqctl <command> <columns> --formatter json`` on this machine, as rows."""
    if target.host.lower() not in _LOCAL_HOSTS:
        raise UnavailableError(
            f"rabbitmqctl only answers on the broker's own machine, and {target.host} "
            "is not this one"
        )
    if shutil.which("rabbitmqctl") is None:
        raise UnavailableError("rabbitmqctl is not installed here")
    node = target.node
    args = ["rabbitmqctl", *(["-n", node] if node else []), "-q", command]
    if command != "list_connections":
        args += ["-p", target.vhost]
    args += [*columns, "--formatter", "json"]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnavailableError(f"rabbitmqctl {command} failed: {exc}") from None
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["no output"])[0]
        raise UnavailableError(f"rabbitmqctl {command} failed: {first}")
    try:
        rows = json.loads(done.stdout or "[]")
    except ValueError:
        raise UnavailableError(f"rabbitmqctl {command} printed something not JSON") from None
    return [row for row in rows if isinstance(row, dict)]


def rabbitmqctl_name(target: Target) -> str:
    return f"rabbitmqctl -n {target.node}" if target.node else "rabbitmqctl"


__all__ = [
    "MANAGEMENT_PORT",
    "Target",
    "UnavailableError",
    "management_get",
    "rabbitmqctl",
    "rabbitmqctl_name",
]
