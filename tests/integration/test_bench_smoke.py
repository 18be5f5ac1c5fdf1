"""The bench runs: every row, every implementation, a few messages each (not a speed test).

``bench/run.py`` is how the speed claims in bench/README.md are made; this keeps
it working as the library changes under it. Nothing here looks at a figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker_env import URL
from tests.conftest import broker_is_up

BENCH = Path(__file__).resolve().parents[2] / "bench"
MESSAGES = 40

pytestmark = pytest.mark.skipif(not broker_is_up(), reason="RabbitMQ is not running")


@pytest.mark.timeout(900)
def test_every_row_and_implementation_runs(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = {**os.environ, "BENCH_AMQP_URL": URL}
    cmd = [sys.executable, str(BENCH / "run.py"), "--messages", str(MESSAGES), "--repeat", "1"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["unavailable"] == {}, report["unavailable"]
    assert set(report["rows"]) == {"publish", "consume100", "consume1", "rpc", "stream", "soak"}
    for row, data in report["rows"].items():
        impls = {r["impl"] for r in data["results"]}
        if row == "stream":  # the bus's own feature: no raw client streams replies
            assert impls == {"bus", "bus round trips"}, impls
        else:
            assert {"bus", "amqplib"} <= impls or row == "soak", (row, impls)
        for result in data["results"]:
            where = f"{row} / {result['impl']}"
            assert result["errors"] == [], where
            assert len(result["samples"]) == 1, where
            sample = result["samples"][0]
            assert sample["messages"] == MESSAGES, where
    soak = report["rows"]["soak"]["results"][0]["samples"][0]["notes"]
    assert soak["consumed"] == MESSAGES
    assert soak["requests"] > 0
