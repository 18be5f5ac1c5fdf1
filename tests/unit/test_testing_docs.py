"""The "Testing your agents" example of BASE_AGENT.md passes with no broker at all.

Its blocks are written out as a user would save them and run by a pytest of
their own, with RabbitMQ pointed at a closed port: the ``memory_bus`` fixture
comes from the plugin the package registers (the ``pytest11`` entry point).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs_blocks import blocks

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("shout_agent.py", "async_shout_agent.py", "test_shout.py")


def test_the_documented_agent_tests_pass_with_rabbitmq_unreachable(tmp_path: Path) -> None:
    written = []
    for index, block in enumerate(blocks(ROOT / "BASE_AGENT.md")):
        name = block.file_name(index)
        if name in NEEDED:
            (tmp_path / name).write_text(block.code, encoding="utf-8")
            written.append(name)
    assert sorted(written) == sorted(NEEDED)
    env = {
        **os.environ,
        "RABBITMQ__HOST": "127.0.0.1",
        "RABBITMQ__PORT": "1",  # nothing listens there: any connection attempt would fail
    }
    env.pop("RABBITMQ__URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shout.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
