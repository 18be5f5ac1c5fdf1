"""`chimera-bus console` as a command: where it listens, and when it asks for a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from messaging.cli.console import access
from tests import broker_env
from tests.conftest import Names
from tests.integration.test_console_browser import free_port

CHIMERA_BUS = str(Path(sys.executable).parent / "chimera-bus")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_on_loopback_no_token_is_needed(host: str) -> None:
    token, address = access(host, 8321, None)
    assert token is None
    assert address.startswith("http://") and "token" not in address  # noqa: PT018


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "console.example.org"])
def test_beyond_loopback_a_token_is_generated_and_printed_in_the_address(host: str) -> None:
    token, address = access(host, 8080, None)
    assert token is not None
    assert len(token) >= 32
    assert address.endswith(f":8080/?token={token}")
    assert access(host, 8080, None)[0] != token  # a new one each time


def get(url: str, **headers: str) -> tuple[int, object]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_command_serves_and_refuses_a_request_without_its_token(names: Names) -> None:
    port = free_port()
    env = {**os.environ, **broker_env.environ()}
    command = [CHIMERA_BUS, "console", "--port", str(port), "--token", "s3cret"]
    process = subprocess.Popen(
        [*command, "-q", names.queue()], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"console on http://127.0.0.1:{port}/?token=s3cret" in line, line
        base = f"http://127.0.0.1:{port}"
        status, body = 0, None
        for _ in range(100):  # uvicorn binds just after the line is printed
            try:
                status, body = get(f"{base}/api/dead-letters")
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        assert status == 401, body
        status, body = get(f"{base}/api/dead-letters", **{"X-Console-Token": "s3cret"})
        assert status == 200, body
        assert body == {"queues": [], "groups": []}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
