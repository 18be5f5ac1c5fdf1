#!/usr/bin/env python
"""Regenerate the Python bindings of the bus's own messages.proto.

    python scripts/generate_protos.py            # into src/messaging/generated/
    python scripts/generate_protos.py --out DIR  # elsewhere (the staleness test does this)

The schema lives in the package (src/messaging/generated/messages.proto, shipped
in the wheel so users' schemas can import it; proto/messages.proto links to it)
and is compiled from the import root src/, so its classes live in
``messaging.generated.messages_pb2`` and protobuf registers the file as
"messaging/generated/messages.proto", which cannot clash with another library's
"messages.proto". Writes messages_pb2.py (protoc) and messages_pb2.pyi
(mypy-protobuf) through :mod:`messaging.proto`, the same tool users run on their
own schemas. Both tools are pinned in the `dev` extras, so the output is
byte-for-byte reproducible and tests/unit/test_generated_fresh.py can compare it
with the checked-in files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from messaging.errors import ConfigurationError
from messaging.proto import generate

ROOT = Path(__file__).resolve().parent.parent
SOURCE_ROOT = ROOT / "src"
SCHEMA = SOURCE_ROOT / "messaging" / "generated" / "messages.proto"
DEFAULT_OUT = SCHEMA.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        try:
            result = generate([SCHEMA], root=SOURCE_ROOT, out=Path(staging))
        except ConfigurationError as error:
            sys.exit(str(error))
        for path in result.written:
            target = out / path.name
            shutil.copyfile(path, target)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
