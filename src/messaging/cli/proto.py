"""`chimera-bus proto gen`: the CLI face of ``python -m messaging.proto gen``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from messaging.proto.__main__ import main as proto_main

app = typer.Typer(
    help="Your own .proto schemas: generate their Python code (needs the 'proto' extra).",
    no_args_is_help=True,
)

GEN_HELP = """\
Compile .proto files (or every .proto under a directory) into *_pb2.py and
*_pb2.pyi beside them. Files are named from the import root, so
ROOT/shop/orders.proto becomes the module shop.orders_pb2. Your schemas can
import "messaging/generated/messages.proto" for chimera.v1.Metadata.
"""


@app.command("gen", help=GEN_HELP)
def gen(
    paths: Annotated[list[Path], typer.Argument(help=".proto files or directories")],
    root: Annotated[
        Path | None, typer.Option(help="Import root: the directory holding your package.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where the generated tree goes.")] = None,
    no_stubs: Annotated[bool, typer.Option("--no-stubs", help="Skip the .pyi stubs.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if stale (for CI).")
    ] = False,
) -> None:
    argv = ["gen", *(str(p) for p in paths)]
    if root is not None:
        argv += ["--root", str(root)]
    if out is not None:
        argv += ["--out", str(out)]
    if no_stubs:
        argv.append("--no-stubs")
    if check:
        argv.append("--check")
    raise typer.Exit(proto_main(argv))
