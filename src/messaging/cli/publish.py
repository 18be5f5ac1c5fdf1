"""`chimera-bus publish TYPE ROUTING_KEY JSON`: send one message by hand."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from google.protobuf.message import Message

from messaging.aio.publisher import AsyncEventPublisher
from messaging.cli._broker import (
    DEFAULT_EXCHANGE,
    ExchangeOption,
    UrlOption,
    fail_with,
    open_broker,
    run,
)
from messaging.cli._output import JsonOption, Output
from messaging.cli._types import ImportOption, full_type_name, load_types
from messaging.errors import ConfigurationError, InvalidMessageError, TopologyError
from messaging.generated import messages_pb2
from messaging.metadata import create_metadata
from messaging.serialization import from_json

HELP = """\
Build a protobuf message from JSON and publish it, confirmed and mandatory.

TYPE is a full name (chimera.v1.QueryRequest) or a short one (QueryRequest);
your own types once loaded with --import shop.orders_pb2 (or the
chimera_messaging.schemas entry point).
JSON is the message in protobuf JSON ('-' reads it from stdin). A `metadata`
field of the bus's type (chimera.v1.Metadata) is filled in (message id,
correlation id, source agent, time) where the JSON leaves it empty. Prints
the message id (--json: an object with the id, routing key and exchange), as
plain text whatever it contains. Exit 2 when the message cannot be built, the
exchange does not exist, or the broker returns it as unroutable (no queue
bound for ROUTING_KEY) or nacks it.
"""


def build(type_name: str, json_text: str, agent: str, correlation_id: str | None) -> Message:
    message = from_json(full_type_name(type_name), json_text)
    field = message.DESCRIPTOR.fields_by_name.get("metadata")
    metadata_type = messages_pb2.Metadata.DESCRIPTOR.full_name
    if (
        field is not None
        and field.message_type is not None
        and (field.message_type.full_name == metadata_type)
    ):
        given: messages_pb2.Metadata = getattr(message, "metadata")  # noqa: B009
        metadata = create_metadata(agent, correlation_id)
        metadata.MergeFrom(given)
        if correlation_id is not None:
            metadata.correlation_id = correlation_id
        given.CopyFrom(metadata)
    return message


async def send(
    message: Message, routing_key: str, exchange: str, agent: str, correlation_id: str | None
) -> str:
    async with open_broker() as broker:
        # The publisher would declare a missing exchange; a typo should not create one.
        if not await broker.exchange_exists(exchange):
            raise TopologyError(
                f"exchange {exchange!r} does not exist; start a subscriber on it first, "
                f"or check --exchange"
            )
        publisher = AsyncEventPublisher(broker.pool, agent, exchange)
        try:
            return await publisher.publish(message, routing_key, correlation_id=correlation_id)
        finally:
            await publisher.close()


def publish(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. QueryRequest")],
    routing_key: Annotated[str, typer.Argument(help="e.g. query.request")],
    json_text: Annotated[str, typer.Argument(metavar="JSON", help='e.g. \'{"query": "hi"}\'')],
    exchange: ExchangeOption = DEFAULT_EXCHANGE,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", "-c", help="Default: a new one.")
    ] = None,
    agent: Annotated[str, typer.Option("--agent", help="Sent as app_id.")] = "chimera-bus",
    as_json: JsonOption = False,
    url: UrlOption = None,
    imports: ImportOption = None,
) -> None:
    load_types(imports)
    if json_text == "-":
        json_text = sys.stdin.read()
    try:
        message = build(type_name, json_text, agent, correlation_id)
    except (InvalidMessageError, ConfigurationError) as exc:
        fail_with(exc)
    message_id = run(send(message, routing_key, exchange, agent, correlation_id))
    # The broker has confirmed it: printing must not fail now, or an operator
    # retrying would send it twice. The id is printed as inert text.
    out = Output(as_json)
    if as_json:
        out.record({"message_id": message_id, "routing_key": routing_key, "exchange": exchange})
    else:
        out.line(message_id)
