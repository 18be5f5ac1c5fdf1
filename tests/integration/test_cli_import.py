"""`--import`: the CLI builds and decodes a user's own protobuf types, from their project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import Names, RawBroker
from tests.integration.helpers import wait_for
from tests.integration.test_cli import ENV
from tests.unit.test_own_schemas import ORDERS


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A user's project with its own generated types (a unique package: one descriptor pool)."""
    package = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "orders.proto").write_text(ORDERS.format(package=package))
    made = subprocess.run(
        [sys.executable, "-m", "messaging.proto", "gen", f"{package}/orders.proto"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return tmp_path, package


def bus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``chimera-bus`` run from the user's project directory, as a user would."""
    env = {**os.environ, **{k: v for k, v in ENV.items() if v}}
    env.pop("PYTHONPATH", None)
    script = Path(sys.executable).parent / "chimera-bus"
    return subprocess.run(
        [str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_publish_and_dlq_show_with_the_users_types(
    project: tuple[Path, str], raw: RawBroker, names: Names
) -> None:
    root, package = project
    exchange, queue = names.exchange, names.queue()
    raw.channel.exchange_declare(exchange, "topic", durable=True)
    raw.channel.queue_declare(queue, durable=True)
    raw.channel.queue_declare(f"{queue}.dlq", durable=True)
    raw.channel.queue_bind(queue, exchange, "orders.#")
    module = f"{package}.orders_pb2"

    sent = bus(root, "publish", "OrderPlaced", "orders.placed",
               '{"orderId": "42", "quantity": 3}', "-e", exchange, "--import", module)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: raw.depth(queue) == 1, what="the published order")
    got = raw.get(queue)
    assert got is not None
    _, props, body = got
    assert getattr(props, "type") == f"{package}.v1.OrderPlaced"  # noqa: B009
    assert getattr(props, "message_id") == sent.stdout.strip()  # noqa: B009

    raw.publish("", f"{queue}.dlq", body, type=f"{package}.v1.OrderPlaced", message_id="o-1")
    wait_for(lambda: raw.depth(f"{queue}.dlq") == 1, what="the dead letter")
    shown = bus(root, "dlq", "show", queue, "--json", "--import", module)
    assert shown.returncode == 0, shown.stderr
    (letter,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert letter["body"]["order_id"] == "42"
    assert letter["body"]["quantity"] == 3
    assert letter["body"]["metadata"]["source_agent"] == "chimera-bus"  # filled in by publish

    # Without --import the type is unknown: shown undecoded, not a crash.
    blind = bus(root, "dlq", "show", queue, "--json")
    (undecoded,) = [json.loads(line) for line in blind.stdout.splitlines()]
    assert undecoded["body"] is None
    assert "OrderPlaced" in undecoded["body_error"]

    missing = bus(root, "publish", "OrderPlaced", "orders.placed", "{}", "-e", exchange,
                  "--import", f"{package}.nope_pb2")  # fmt: skip
    assert missing.returncode == 2
    assert f"cannot import '{package}.nope_pb2'" in missing.stderr
    assert "Traceback" not in missing.stderr
