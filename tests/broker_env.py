"""Which broker the suite talks to: ``RABBITMQ__HOST``/``RABBITMQ__PORT`` and, for
``rabbitmqctl``, ``RABBITMQ_NODENAME`` (defaults: 127.0.0.1, 5672, the default node).

Every test, fixture, helper process and fault injection reads the address from
here, so the whole suite can run against a private node (``scripts/rabbit-node``)
without touching the shared one.
"""

from __future__ import annotations

import os

HOST = os.environ.get("RABBITMQ__HOST") or "127.0.0.1"
PORT = int(os.environ.get("RABBITMQ__PORT") or "5672")
NODE = os.environ.get("RABBITMQ_NODENAME") or None
URL = f"amqp://guest:guest@{HOST}:{PORT}/"

BROKER = (HOST, PORT)


def ctl_args() -> list[str]:
    """``rabbitmqctl`` arguments that address the node under test."""
    return ["-n", NODE] if NODE else []


def environ() -> dict[str, str]:
    """The ``RABBITMQ__*`` variables a child process needs to reach the same broker."""
    return {"RABBITMQ__HOST": HOST, "RABBITMQ__PORT": str(PORT)}
