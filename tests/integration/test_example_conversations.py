"""examples/weather_agent.py and examples/ask_weather.py, run as a user would: two processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import Names

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_weather_agent_answers_every_way_of_asking(names: Names) -> None:
    exchange = names.new_exchange("weather")
    names.queues.update({f"{exchange}.weather", f"{exchange}.weather.dlq"})
    names.exchanges.add(f"{exchange}.control")
    env = dict(os.environ)
    agent = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "weather_agent.py"), "--exchange", exchange],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    said: list[str] = []
    consuming = threading.Event()

    def read() -> None:
        assert agent.stdout is not None
        for line in agent.stdout:
            said.append(line.rstrip())
            if "consuming" in line:
                consuming.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert consuming.wait(30), said
        asked = subprocess.run(
            [sys.executable, str(EXAMPLES / "ask_weather.py"), "--exchange", exchange],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert asked.returncode == 0, asked.stdout + asked.stderr
        out = asked.stdout
        assert "now: 21 °C in Lisbon" in out, out
        assert "error: messaging.errors.RejectedMessageError - no forecast for 'Atlantis'" in out
        assert "slow: gave up after 0.5s" in out, out
        assert "hourly: 24 replies, first '00:00 -3 °C', last '23:00 0 °C'" in out, out
        assert "gathered from: weather" in out, out
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        reader.join(5)
    assert agent.returncode == 0, said
    assert any(line.startswith("cancelled after") for line in said), said
