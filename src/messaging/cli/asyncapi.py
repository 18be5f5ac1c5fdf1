"""`chimera-bus asyncapi package.module:AgentClass ...`: an AsyncAPI 3.0 document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from messaging.asyncapi import asyncapi_document, build_agent, import_target
from messaging.cli._types import ImportOption, load_types
from messaging.config import load_config
from messaging.errors import MessagingError

HELP = """\
Write an AsyncAPI 3.0 document for the agents named as package.module:AgentClass.

Channels are the routing keys on each agent's exchange; receive operations come
from get_routing_key_map(), send operations from get_publish_map(); payloads are
JSON Schema from the protobuf descriptors. Each class is built with a connection
pool that never connects (its constructor must take just the pool; or name a
function that builds the agent from one). The servers are the nodes of
RABBITMQ__URL, or RABBITMQ__HOST/PORT/VHOST.
"""


def asyncapi(
    agents: Annotated[list[str], typer.Argument(help="package.module:AgentClass, one or more")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    title: Annotated[str, typer.Option(help="The document's info.title.")] = "Chimera agents",
    version: Annotated[str, typer.Option(help="The API's version (info.version).")] = "1.0.0",
    imports: ImportOption = None,
) -> None:
    load_types(imports)  # the user's package in the current directory imports, too
    try:
        config = load_config().rabbitmq
        built = [build_agent(import_target(spec), config) for spec in agents]
        document = asyncapi_document(built, title=title, version=version, server=config)
    except MessagingError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(
            f"wrote {output}: {len(document['channels'])} channels, "
            f"{len(document['operations'])} operations, "
            f"{len(document['components']['messages'])} messages",
            err=True,
        )
