"""`chimera-bus request ROUTING_KEY --type TYPE --data JSON`: ask an agent, print its reply."""

from __future__ import annotations

import json
import sys
from typing import Annotated, NoReturn

import typer
from google.protobuf.message import Message

from messaging.aio.publisher import AsyncEventPublisher
from messaging.cli._broker import (
    DEFAULT_EXCHANGE,
    EXIT_PROBLEM,
    ExchangeOption,
    UrlOption,
    fail,
    fail_with,
    open_broker,
    run,
)
from messaging.cli._output import JsonOption, Output
from messaging.cli._types import ImportOption, load_types
from messaging.cli.publish import build
from messaging.errors import (
    ConfigurationError,
    InvalidMessageError,
    RemoteError,
    RequestTimeoutError,
    TopologyError,
)
from messaging.routing import validate_binding_pattern
from messaging.serialization import to_dict, type_name

HELP = """\
Send a request to ROUTING_KEY and print the reply as JSON.

--type is the request's protobuf type, full (chimera.v1.QueryRequest) or
short (QueryRequest); your own types with --import shop.orders_pb2. --data
is the request in protobuf JSON ('-' reads it from stdin); a `metadata`
field of the bus's type is filled in as `publish` does. The request goes out
as an agent's request() sends it: transient, expiring after --timeout, the
reply on RabbitMQ's direct reply-to.

Prints the reply's fields as JSON (indented on a terminal, one line when
piped or with --json, where it is {"type": ..., "correlation_id": ...,
"reply": {...}}). Exit 0: a reply came. Exit 1: the agent failed the request
(its error type, message, agent name and correlation id are printed) or no
reply came within --timeout. Exit 2: bad input (unknown type, malformed
JSON: nothing is sent), no such exchange, or no queue bound for ROUTING_KEY.
"""


Outcome = Message | RemoteError | RequestTimeoutError
"""The reply, or why there is none: the answers the command reports with exit 1."""


async def ask(
    message: Message, routing_key: str, exchange: str, agent: str, timeout: float
) -> Outcome:
    async with open_broker() as broker:
        # The publisher would declare a missing exchange; a typo should not create one.
        if not await broker.exchange_exists(exchange):
            raise TopologyError(f"exchange {exchange!r} does not exist; check --exchange")
        requester = AsyncEventPublisher(broker.pool, agent, exchange)
        try:
            return await requester.request(message, routing_key, timeout)
        except (RemoteError, RequestTimeoutError) as exc:
            return exc
        finally:
            await requester.close()


def request(
    routing_key: Annotated[str, typer.Argument(help="e.g. weather.request")],
    type_name_: Annotated[
        str, typer.Option("--type", "-t", help="The request's type, e.g. QueryRequest.")
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help='The request as JSON, e.g. \'{"query": "hi"}\'.')
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the reply.")
    ] = 10.0,
    exchange: ExchangeOption = DEFAULT_EXCHANGE,
    agent: Annotated[str, typer.Option("--agent", help="Sent as app_id.")] = "chimera-bus",
    as_json: JsonOption = False,
    url: UrlOption = None,
    imports: ImportOption = None,
) -> None:
    load_types(imports)
    if data == "-":
        data = sys.stdin.read()
    try:
        validate_binding_pattern(routing_key)
        if any(part in ("*", "#") for part in routing_key.split(".")):
            raise ConfigurationError(f"{routing_key!r} is a pattern; a request needs a routing key")
        require_object(data)
        message = build(type_name_, data, agent, None)
    except (InvalidMessageError, ConfigurationError) as exc:
        fail_with(exc)
    metadata = getattr(message, "metadata", None)
    correlation_id = metadata.correlation_id if metadata is not None else None
    reply = run(ask(message, routing_key, exchange, agent, timeout))
    if isinstance(reply, RemoteError):
        _remote_failure(reply, as_json)
    if isinstance(reply, RequestTimeoutError):
        fail(f"RequestTimeoutError: {reply}", EXIT_PROBLEM)
    out = Output(as_json)
    body = to_dict(reply)
    if as_json:
        out.record({"type": type_name(reply), "correlation_id": correlation_id, "reply": body})
    elif out.is_terminal:
        out.line(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        out.record(body)


def require_object(data: str) -> None:
    """Refuse JSON that is not an object: protobuf's parser takes ``[]`` as an empty message."""
    try:
        parsed = json.loads(data)
    except ValueError:
        return  # malformed: from_json says where
    if not isinstance(parsed, dict):
        raise InvalidMessageError(
            f"--data must be a JSON object of the request's fields, got {type(parsed).__name__}"
        )


def _remote_failure(exc: RemoteError, as_json: bool) -> NoReturn:
    if as_json:
        Output(True).record(
            {
                "error": {
                    "type": exc.error_type,
                    "message": exc.remote_message,
                    "agent": exc.agent,
                    "correlation_id": exc.correlation_id,
                }
            }
        )
    fail(
        f"the agent failed the request: {exc.error_type}: {exc.remote_message} "
        f"(agent {exc.agent or '?'}, correlation_id {exc.correlation_id})",
        EXIT_PROBLEM,
    )
