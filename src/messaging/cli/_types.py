"""``--import``: the user's own protobuf types, for the commands that decode or build messages."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from messaging.cli._broker import fail_with
from messaging.errors import ConfigurationError
from messaging.schemas import load_message_types, message_types

ImportOption = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        help="A module with your protobuf types (e.g. shop.orders_pb2), importable from "
        "here; repeat for more. Modules registered in the chimera_messaging.schemas entry "
        "point are loaded without it.",
        show_default=False,
    ),
]


def importable_from_here() -> None:
    """Put the current directory on the import path, as ``python -m`` does.

    ``chimera-bus`` is a console script, whose own directory is on the path
    instead: without this, ``--import shop.orders_pb2`` run from the project
    would not find ``shop``.
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def load_types(modules: list[str] | None) -> None:
    """Load ``--import`` modules and the entry point's; exit 2 with one line when one fails."""
    importable_from_here()
    try:
        load_message_types(modules or [])
    except ConfigurationError as exc:
        fail_with(exc)


def full_type_name(name: str) -> str:
    """A full protobuf name from a full or short one (``OrderPlaced``), among the known types.

    A short name must name exactly one known type; the bus's own package is the
    fallback, so that an unknown name gets the serializer's "unknown type" error.
    """
    if "." in name:
        return name
    matches = [full for full in message_types() if full.rsplit(".", 1)[-1] == name]
    if len(matches) > 1:
        raise ConfigurationError(
            f"{name!r} could be any of {', '.join(matches)}: give the full name"
        )
    return matches[0] if matches else f"chimera.v1.{name}"


__all__ = ["ImportOption", "full_type_name", "importable_from_here", "load_types"]
