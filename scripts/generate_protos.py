#!/usr/bin/env python
"""Regenerate the Python bindings of proto/messages.proto.

    python scripts/generate_protos.py            # into src/messaging/generated/
    python scripts/generate_protos.py --out DIR  # elsewhere (the staleness test does this)

Writes messages_pb2.py (protoc) and messages_pb2.pyi (mypy-protobuf). Both
tools are pinned in the `dev` extras, so the output is byte-for-byte
reproducible and tests/unit/test_generated_fresh.py can compare it with the
checked-in files.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILES = ["messages.proto"]
DEFAULT_OUT = ROOT / "src" / "messaging" / "generated"
# protoc names the descriptor file and the Python module after the import path,
# so proto/ is mounted at the package's path: the classes then live in
# `messaging.generated.messages_pb2` (they pickle, their repr is honest), and
# the descriptor pool holds "messaging/generated/messages.proto", which cannot
# collide with some other library's "messages.proto".
IMPORT_PREFIX = "messaging/generated"


def _mypy_plugin() -> str:
    # Look beside the interpreter first, so an un-activated venv works too.
    exe = "protoc-gen-mypy.exe" if sys.platform == "win32" else "protoc-gen-mypy"
    beside = Path(sys.executable).parent / exe
    found = str(beside) if beside.is_file() else shutil.which("protoc-gen-mypy")
    if found is None:
        sys.exit("protoc-gen-mypy not found: install the dev extras (pip install -e '.[dev]').")
    return found


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over PROTO_FILES into out_dir; return the files written."""
    try:
        well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    except ModuleNotFoundError:
        sys.exit("grpcio-tools is not installed: install the dev extras (pip install -e '.[dev]').")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as staging:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={IMPORT_PREFIX}={PROTO_DIR}",
            f"--proto_path={well_known}",
            f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
            f"--python_out={staging}",
            f"--mypy_out={staging}",
            *(f"{IMPORT_PREFIX}/{name}" for name in PROTO_FILES),
        ]
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"protoc failed ({result.returncode}):\n{result.stderr}")
        for name in PROTO_FILES:
            for ext in (".py", ".pyi"):
                generated = Path(staging, IMPORT_PREFIX, Path(name).stem + "_pb2" + ext)
                target = out_dir / generated.name
                shutil.copyfile(generated, target)
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory (default: {DEFAULT_OUT.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    for path in generate(args.out.resolve()):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
