"""The main job with no RabbitMQ: the demo on the in-process broker answers every question.

RabbitMQ is pointed at a closed port in each run, so nothing here could reach
a real broker by mistake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOSED = {"RABBITMQ__HOST": "127.0.0.1", "RABBITMQ__PORT": "1"}


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "RABBITMQ__URL"}
    environ.update(CLOSED, **env)
    return subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=180)


def assert_answered_quietly(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "4/4 questions answered" in output
    assert "on the in-process broker" in output
    noisy = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert noisy == [], "a healthy demo run logs no WARNING or ERROR:\n" + "\n".join(noisy)


def test_python_m_messaging_demo_with_broker_memory() -> None:
    assert_answered_quietly(run([sys.executable, "-m", "messaging.demo", "--broker", "memory"]))


def test_chimera_bus_demo_with_broker_memory() -> None:
    cli = Path(sys.executable).parent / "chimera-bus"
    assert_answered_quietly(run([str(cli), "demo", "--broker", "memory"]))


def test_rabbitmq_url_memory_selects_the_in_process_broker() -> None:
    result = run([sys.executable, "-m", "messaging.demo"], RABBITMQ__URL="memory://")
    assert_answered_quietly(result)


def test_scripts_demo_falls_back_and_says_so_in_one_line(tmp_path: Path) -> None:
    # A PATH with the venv and the basic tools, but no rabbitmq-server to start.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sha1sum", "cut", "rm", "touch", "env", "dirname", "cat"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bin_dir / tool).symlink_to(found)
    path = f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}"
    result = run([str(ROOT / "scripts" / "demo")], PATH=path)
    lines = [line for line in result.stdout.splitlines() if line.startswith("demo:")]
    assert lines == [
        "demo: no RabbitMQ at 127.0.0.1:1 (and none to start here): on the in-process broker"
    ], result.stdout + result.stderr
    assert_answered_quietly(result)
