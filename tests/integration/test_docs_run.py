"""Every code block of README.md and BASE_AGENT.md runs as written, on the real broker.

Each document runs in a virtual host of its own (created and deleted here), so
its snippets keep the names a user sees (``chimera.events``, ``my_agent``)
without meeting any other test. How each block runs is said next to it in the
document: :mod:`tests.docs_blocks`.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import broker_env
from tests.docs_blocks import Block, blocks
from tests.integration.helpers import rabbitmqctl

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "BASE_AGENT.md"]
RUN_TIMEOUT = 90.0
READY_TIMEOUT = 60.0


class Program:
    """A started block; its output (stdout and stderr together) is collected as it comes."""

    def __init__(self, block: Block, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.block = block
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return
            if self.process.poll() is not None:
                self._reader.join(5)
                if re.search(pattern, self.output):
                    return
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{self.block.where}: waited for {pattern!r} in its output, in vain "
            f"(exit code {self.process.poll()}):\n{self.output}"
        )

    def finish(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"{self.block.where}: still running after {timeout:.0f}s:\n{self.output}"
            ) from None
        self._reader.join(5)
        return code

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish(30)


@pytest.fixture
def vhost() -> Iterator[str]:
    name = f"docs-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    rabbitmqctl("delete_vhost", name)


def argv_for(block: Block, name: str) -> list[str]:
    """How a user runs the block saved as ``name`` (relative to the working directory)."""
    if block.language == "python":
        if "/" in name:  # a module of the user's package: run as `python -m shop.desk`
            return [sys.executable, "-m", name.removesuffix(".py").replace("/", ".")]
        return [sys.executable, name]
    if block.language == "bash" and block.mode == "background":
        # One command, run as the shell would exec it, so SIGTERM reaches the program
        # itself (a bash in between would die of it and leave the program running).
        commands = [line for line in block.code.splitlines() if shlex.split(line, comments=True)]
        assert len(commands) == 1, f"{block.where}: a background bash block is one command"
        return shlex.split(commands[0], comments=True)
    if block.language == "bash":
        return ["bash", "-euo", "pipefail", name]
    raise AssertionError(f"{block.where}: cannot run a {block.language!r} block")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_block_runs_as_written(document: str, vhost: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **broker_env.environ(),
        "RABBITMQ__VHOST": vhost,
        "PYTHONUNBUFFERED": "1",
        # The venv's scripts (chimera-bus, python) first, as in an activated venv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("MONITORING__HTTP_PORT", None)
    background: list[Program] = []
    ran = 0
    try:
        for index, block in enumerate(blocks(ROOT / document)):
            if block.mode is None:
                continue  # unmarked non-Python blocks; test_docs_blocks checks the Python ones
            name = block.file_name(index)
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code, encoding="utf-8")
            if block.mode == "file":
                continue
            program = Program(block, argv_for(block, name), tmp_path, env)
            ran += 1
            if block.mode == "background":
                background.append(program)
                program.wait_for(block.options.get("until", "."), READY_TIMEOUT)
                continue
            code = program.finish(RUN_TIMEOUT)
            assert code == 0, f"{block.where} exited {code}:\n{program.output}"
            expect = block.options.get("expect")
            if expect:
                assert re.search(expect, program.output), (
                    f"{block.where}: output does not match {expect!r}:\n{program.output}"
                )
    finally:
        codes = [(program, program.stop()) for program in reversed(background)]
    assert ran, f"no block of {document} ran"
    for program, code in codes:
        assert code == 0, f"{program.block.where} did not stop cleanly ({code}):\n{program.output}"
        expect = program.block.options.get("expect")
        if expect:
            assert re.search(expect, program.output), (
                f"{program.block.where}: output does not match {expect!r}:\n{program.output}"
            )
