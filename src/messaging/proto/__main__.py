"""``python -m messaging.proto gen shop/orders.proto``: generate code for your own schemas.

Exit codes: 0 done (or fresh, with ``--check``), 1 stale (``--check``), 2 could
not run (bad paths, protoc errors, the ``proto`` extra missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from messaging.errors import ConfigurationError
from messaging.proto import generate, stale


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m messaging.proto",
        description="Generate Python code (*_pb2.py and *_pb2.pyi) for your own .proto files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "gen",
        help="compile .proto files into *_pb2.py and *_pb2.pyi beside them",
        description="Compile .proto files (or every .proto under a directory). Files are "
        "named from the import root, so ROOT/shop/orders.proto becomes the module "
        "shop.orders_pb2. The bus's own messages.proto is importable as "
        '"messaging/generated/messages.proto".',
    )
    gen.add_argument("paths", nargs="+", type=Path, help=".proto files or directories")
    gen.add_argument(
        "--root",
        type=Path,
        default=None,
        help="import root: the directory holding your top-level package (default: .)",
    )
    gen.add_argument(
        "--out", type=Path, default=None, help="where the generated tree goes (default: ROOT)"
    )
    gen.add_argument(
        "--no-stubs", action="store_true", help="skip the .pyi type stubs (mypy-protobuf)"
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the generated files are stale (for CI)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.check:
            differing = stale(args.paths, root=args.root, out=args.out, stubs=not args.no_stubs)
            for path in differing:
                print(f"stale: {_shown(path)}")
            if differing:
                print(
                    "regenerate with: python -m messaging.proto gen "
                    + " ".join(str(p) for p in args.paths)
                )
                return 1
            print("generated code is fresh")
            return 0
        result = generate(args.paths, root=args.root, out=args.out, stubs=not args.no_stubs)
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in result.written:
        print(f"wrote {_shown(path)}")
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
