"""`chimera-bus console`: the bus's web page, served by this process."""

from __future__ import annotations

import ipaddress
import secrets
import sys
from typing import Annotated

import typer

from messaging.cli._broker import UrlOption, broker_config, fail
from messaging.cli._output import Output
from messaging.cli.agents import discovery_settings
from messaging.recorder.settings import load_recorder_settings

HELP = """\
Serve a web page on the bus: live agents, dead letters grouped by agent and
error type (show, replay, purge, each after a confirmation), and one
conversation's timeline from the flight recorder. The page polls every 2 s.

Agents come from discovery (agents announce with DISCOVERY__ENABLED=true),
else from the recorder's records of the last 5 minutes. Dead letters are read
from each --queue's DLQ and from every announced agent's. Bound to 127.0.0.1
unless --host says otherwise; bound beyond loopback, every request needs a
token (--token, or one generated and printed): open the printed address.
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def access(host: str, port: int, token: str | None) -> tuple[str | None, str]:
    """The token to require (one generated when bound beyond loopback) and the page's address."""
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    shown = f"[{host}]" if ":" in host else host
    return token, f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def console(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535)] = 8321,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CHIMERA_CONSOLE_TOKEN",
            help="Require this token (header or ?token=); generated when bound beyond loopback.",
            show_default=False,
        ),
    ] = None,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A work queue whose DLQ to show (repeat for more)."),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option("--stream", help="The recorder's stream (default: RECORDER__STREAM)."),
    ] = None,
    url: UrlOption = None,
) -> None:
    try:
        import uvicorn

        from messaging.console import create_app
        from messaging.console.bus import Bus
    except ImportError as exc:
        fail(f"the console needs its extra: pip install 'chimera-messaging[console]' ({exc})")
    token, address = access(host, port, token)
    bus = Bus(broker_config(), stream or load_recorder_settings().stream, tuple(queues or ()))
    app = create_app(bus, token=token, discovery=discovery_settings().exchange)
    Output().note(f"console on {address}  (Ctrl-C stops it)")
    sys.stdout.flush()  # piped (a supervisor, a log), the address is wanted now, not at exit
    uvicorn.run(app, host=host, port=port, log_level="warning")
