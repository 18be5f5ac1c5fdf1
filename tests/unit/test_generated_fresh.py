"""The checked-in bindings are exactly what proto/messages.proto generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "src" / "messaging" / "generated"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"scripts/generate_protos.py failed:\n{result.stderr}"
    return out


@pytest.mark.parametrize("name", ["messages_pb2.py", "messages_pb2.pyi"])
def test_checked_in_bindings_are_fresh(fresh: Path, name: str) -> None:
    assert (fresh / name).read_bytes() == (GENERATED / name).read_bytes(), (
        f"src/messaging/generated/{name} is stale: proto/messages.proto (or the pinned "
        f"grpcio-tools / mypy-protobuf) changed. Run `python scripts/generate_protos.py` "
        f"and commit the result."
    )


def test_generated_module_imports() -> None:
    from messaging.generated import messages_pb2

    assert messages_pb2.QueryRequest.__module__ == "messaging.generated.messages_pb2"
    assert messages_pb2.DESCRIPTOR.package == "chimera.v1"
