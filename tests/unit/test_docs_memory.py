"""The README's and BASE_AGENT.md's code blocks run with RABBITMQ__URL=memory:// and no network.

Every block of each document runs in one process (tests/docs_inprocess.py),
the agents on threads, all meeting on the in-process broker; RabbitMQ is
pointed at a closed port, so nothing could reach a real broker by mistake.
tests/integration/test_docs_run.py runs the same blocks on RabbitMQ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("document", ["README.md", "BASE_AGENT.md"])
def test_every_block_runs_on_the_in_process_broker(document: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RABBITMQ__URL": "memory://",
        "RABBITMQ__HOST": "127.0.0.1",
        "RABBITMQ__PORT": "1",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MONITORING__HTTP_PORT", None)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "docs_inprocess.py"),
            str(ROOT / document),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("docs-inprocess:")]
    assert verdicts, result.stdout + result.stderr
    failed = [line for line in verdicts if "FAILED" in line]
    tail = result.stdout[-4000:] + result.stderr[-4000:]
    assert not failed, "\n".join(failed) + "\n" + tail
    assert result.returncode == 0, tail
