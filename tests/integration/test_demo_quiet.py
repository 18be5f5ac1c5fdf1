"""A healthy demo run on RabbitMQ prints its steps and nothing else: no stray warnings.

Every line the demo means to print is ``source | text``; a log record that
escaped (Python prints unhandled WARNINGs bare on stderr) is not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests import broker_env


def test_the_demo_on_rabbitmq_prints_only_its_own_lines() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RABBITMQ__URL"}
    env.update(broker_env.environ())
    result = subprocess.run(
        [sys.executable, "-m", "messaging.demo", "--broker", "rabbitmq"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "4/4 questions answered" in output
    stray = [line for line in output.splitlines() if not re.match(r"^\S+\s+\| ", line)]
    assert stray == [], "\n".join(stray)
    assert " WARNING " not in output, output
