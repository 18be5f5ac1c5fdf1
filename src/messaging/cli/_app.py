"""The ``chimera-bus`` commands, registered on one typer app.

Broker settings come from ``RABBITMQ__*`` (see :func:`messaging.config.load_config`);
every command that names an exchange takes ``--exchange`` (env
``CHIMERA_EXCHANGE``, default ``chimera.events``). Exit codes: 0 fine, 1 the
command found something wrong or could not do all of it, 2 it could not run.
"""

from __future__ import annotations

from typing import Annotated

import typer

from messaging.cli import agents, asyncapi, console, dlq, proto, queue, status, tail, top, trace
from messaging.cli import publish as publish_cmd
from messaging.cli import request as request_cmd
from messaging.cli import run as run_cmd
from messaging.cli._broker import choose_url, configure_logging
from messaging.cli.demo import demo

app = typer.Typer(
    name="chimera-bus",
    help="Operate the Chimera message bus: is it up, what is failing, where are the failed "
    "messages, and put them back. Broker settings come from RABBITMQ__* variables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the library's log lines.")
    ] = False,
) -> None:
    configure_logging(verbose)
    choose_url(None)  # each command's own --url decides


app.command("status", help=status.HELP)(status.status)
app.command("tail", help=tail.HELP)(tail.tail)
app.command("top", help=top.HELP)(top.top)
app.command("trace", help=trace.HELP)(trace.trace)
app.command("console", help=console.HELP)(console.console)
app.command("publish", help=publish_cmd.HELP)(publish_cmd.publish)
app.command("agents", help=agents.HELP)(agents.agents)
app.command("request", help=request_cmd.HELP)(request_cmd.request)
app.add_typer(dlq.app, name="dlq")
app.add_typer(queue.app, name="queue")
app.add_typer(proto.app, name="proto")
app.command("asyncapi", help=asyncapi.HELP)(asyncapi.asyncapi)
app.command("run", help=run_cmd.HELP)(run_cmd.run)
app.command("demo")(demo)


__all__ = ["app"]
