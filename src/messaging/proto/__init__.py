"""Generate Python code for your own ``.proto`` files: ``python -m messaging.proto gen``.

A thin, reproducible wrapper around ``grpcio-tools`` (protoc) and
``mypy-protobuf`` (the ``.pyi`` stubs), both in the ``proto`` extra
(``pip install 'chimera-messaging[proto]'``).

Keep your schemas in your own package, next to the code that uses them::

    shop/orders.proto      package shop.v1;  import "messaging/generated/messages.proto";
    shop/orders_pb2.py     generated: import shop.orders_pb2
    shop/orders_pb2.pyi    generated: type stubs

Files are named relative to an import ``root`` (the directory that holds your
top-level package; the current directory by default), so the generated module
is ``shop.orders_pb2`` and protobuf registers the file as ``shop/orders.proto``,
which cannot clash with anyone else's ``orders.proto``. The bus's own schema is
on the include path as ``messaging/generated/messages.proto`` (it ships in the
wheel), so your messages can carry ``chimera.v1.Metadata``.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from messaging.errors import ConfigurationError

EXTRA_HINT = "pip install 'chimera-messaging[proto]'"
LIBRARY_PROTO = "messaging/generated/messages.proto"


class ProtoToolsMissingError(ConfigurationError):
    """grpcio-tools or mypy-protobuf is not installed."""


class ProtocError(ConfigurationError):
    """protoc refused the schema; the message has its diagnostics."""


@dataclass(frozen=True)
class Generated:
    """What one run produced: the ``.proto`` files and the files written for them."""

    protos: tuple[Path, ...]
    written: tuple[Path, ...]


def library_include_dir() -> Path:
    """The directory holding the installed ``messaging`` package (and its ``.proto``)."""
    return Path(__file__).resolve().parent.parent.parent


def find_protos(paths: Iterable[Path]) -> list[Path]:
    """The ``.proto`` files named, directories searched recursively; sorted, unique."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob("*.proto"))
        elif path.suffix == ".proto" and path.is_file():
            found.add(path.resolve())
        else:
            raise ConfigurationError(
                f"{path}: not a .proto file or a directory holding some; name the schema "
                f"files to compile (e.g. shop/orders.proto)"
            )
    if not found:
        raise ConfigurationError(
            f"no .proto files under {', '.join(str(p) for p in paths) or 'the given paths'}"
        )
    return sorted(found)


def generate(
    paths: Sequence[Path],
    *,
    root: Path | None = None,
    out: Path | None = None,
    stubs: bool = True,
) -> Generated:
    """Compile ``paths`` (files or directories) into ``*_pb2.py`` (and ``*_pb2.pyi``).

    ``root`` is the import root the files are named from (default: the current
    directory); ``out`` is where the generated tree goes (default: ``root``).
    Raises :class:`ProtoToolsMissingError` without the ``proto`` extra and
    :class:`ProtocError` when protoc rejects a schema.
    """
    root = (root or Path.cwd()).resolve()
    out = (out or root).resolve()
    protos = find_protos(paths)
    names = [_relative_name(proto, root) for proto in protos]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        _protoc(names, root, Path(staging), stubs)
        written = []
        for generated in sorted(Path(staging).rglob("*_pb2.py*")):
            target = out / generated.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated, target)
            written.append(target)
    return Generated(tuple(protos), tuple(written))


def stale(
    paths: Sequence[Path], *, root: Path | None = None, out: Path | None = None, stubs: bool = True
) -> list[Path]:
    """The generated files that differ from (or are missing beside) what ``paths`` make now."""
    root = (root or Path.cwd()).resolve()
    out = (out or root).resolve()
    with tempfile.TemporaryDirectory() as fresh_dir:
        fresh = generate(paths, root=root, out=Path(fresh_dir), stubs=stubs)
        differing = []
        for path in fresh.written:
            checked_in = out / path.relative_to(fresh_dir)
            if not checked_in.is_file() or not filecmp.cmp(path, checked_in, shallow=False):
                differing.append(checked_in)
    return differing


def _relative_name(proto: Path, root: Path) -> str:
    try:
        return proto.relative_to(root).as_posix()
    except ValueError:
        raise ConfigurationError(
            f"{proto} is not under the import root {root}: run from the directory that "
            f"holds your package, or pass --root"
        ) from None


def _protoc(names: Sequence[str], root: Path, staging: Path, stubs: bool) -> None:
    try:
        from importlib import resources

        well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    except ModuleNotFoundError:
        raise ProtoToolsMissingError(
            f"grpcio-tools is not installed; it compiles .proto files: {EXTRA_HINT}"
        ) from None
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--python_out={staging}",
    ]
    library = library_include_dir()
    if not (root / LIBRARY_PROTO).is_file():  # else root is the library's own tree
        command.append(f"--proto_path={library}")
    command.append(f"--proto_path={well_known}")
    if stubs:
        command += [f"--plugin=protoc-gen-mypy={_mypy_plugin()}", f"--mypy_out={staging}"]
    result = subprocess.run([*command, *names], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProtocError(f"protoc failed on {', '.join(names)}:\n{result.stderr.strip()}")


def _mypy_plugin() -> str:
    # Beside the interpreter first, so an un-activated virtualenv works too.
    exe = "protoc-gen-mypy.exe" if sys.platform == "win32" else "protoc-gen-mypy"
    beside = Path(sys.executable).parent / exe
    found = str(beside) if beside.is_file() else shutil.which(exe)
    if found is None:
        raise ProtoToolsMissingError(
            f"protoc-gen-mypy (mypy-protobuf) is not installed; it writes the .pyi type "
            f"stubs: {EXTRA_HINT}, or pass --no-stubs"
        )
    return found


__all__ = [
    "EXTRA_HINT",
    "Generated",
    "ProtoToolsMissingError",
    "ProtocError",
    "find_protos",
    "generate",
    "library_include_dir",
    "stale",
]
