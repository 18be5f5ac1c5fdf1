"""Users' own schemas: `python -m messaging.proto gen`, and loading the types for the tools."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from messaging import ConfigurationError
from messaging.schemas import load_message_types, message_types
from messaging.serialization import message_class_for

ORDERS = """\
syntax = "proto3";
package {package}.v1;
import "messaging/generated/messages.proto";

// An order was placed; routing key orders.placed.
message OrderPlaced {{
  chimera.v1.Metadata metadata = 1;
  string order_id = 2;
  int32 quantity = 3;
  map<string, string> notes = 4;
  message Line {{ string sku = 1; }}
  repeated Line lines = 5;
}}
"""


def run(cwd: Path, *args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A user's project with one package holding one .proto file (a unique package name:
    protobuf's descriptor pool is per process)."""
    package = f"shop_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "orders.proto").write_text(ORDERS.format(package=package))
    return tmp_path, package


def test_gen_writes_an_importable_module_and_stubs_that_use_the_bus_metadata(
    project: tuple[Path, str],
) -> None:
    root, package = project
    result = run(root, "-m", "messaging.proto", "gen", f"{package}/orders.proto")
    assert result.returncode == 0, result.stderr
    assert f"wrote {package}/orders_pb2.py" in result.stdout
    assert (root / package / "orders_pb2.pyi").is_file()
    check = run(
        root,
        "-c",
        textwrap.dedent(f"""
            from {package} import orders_pb2
            from messaging import create_metadata
            m = orders_pb2.OrderPlaced(order_id="42", metadata=create_metadata("shop"))
            print(type(m).__module__, m.DESCRIPTOR.full_name, m.metadata.source_agent)
        """),
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == [f"{package}.orders_pb2", f"{package}.v1.OrderPlaced", "shop"]


def test_check_says_fresh_then_stale(project: tuple[Path, str]) -> None:
    root, package = project
    assert run(root, "-m", "messaging.proto", "gen", package).returncode == 0  # a directory
    fresh = run(root, "-m", "messaging.proto", "gen", "--check", package)
    assert (fresh.returncode, fresh.stdout.strip()) == (0, "generated code is fresh")
    proto = root / package / "orders.proto"
    proto.write_text(proto.read_text().replace("int32 quantity = 3;", "int64 quantity = 3;"))
    stale = run(root, "-m", "messaging.proto", "gen", "--check", package)
    assert stale.returncode == 1
    assert f"stale: {package}/orders_pb2.py" in stale.stdout


def test_bad_input_exits_2_saying_what_was_wrong(project: tuple[Path, str]) -> None:
    root, package = project
    missing = run(root, "-m", "messaging.proto", "gen", "nowhere.proto")
    assert missing.returncode == 2
    assert "nowhere.proto: not a .proto file" in missing.stderr
    (root / package / "broken.proto").write_text('syntax = "proto3";\nmessage {')
    broken = run(root, "-m", "messaging.proto", "gen", f"{package}/broken.proto")
    assert broken.returncode == 2
    assert "protoc failed" in broken.stderr
    assert "broken.proto" in broken.stderr
    assert not (root / package / "broken_pb2.py").exists()


def test_load_message_types_by_module_and_by_entry_point(project: tuple[Path, str]) -> None:
    root, package = project
    assert run(root, "-m", "messaging.proto", "gen", "--no-stubs", package).returncode == 0
    # An installed distribution that declares its schemas in the entry-point group.
    dist = root / "site" / "shopdist-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shopdist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[chimera_messaging.schemas]\nshop = {package}.orders_pb2\n"
    )
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(root)!r}, {str(root / "site")!r}]
        from messaging.schemas import load_message_types, message_types
        from messaging.serialization import message_class_for
        # A tool that only looks a type up finds it through the entry point by itself.
        print(message_class_for("{package}.v1.OrderPlaced").DESCRIPTOR.full_name)
        by_entry_point = load_message_types()
        print(sorted(c.DESCRIPTOR.full_name for c in by_entry_point))
        print(message_class_for("{package}.v1.OrderPlaced").__name__)
        print("{package}.v1.OrderPlaced.Line" in message_types())
        print(len(load_message_types(["{package}.orders_pb2"], entry_points=False)))
    """)
    result = run(root, "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{package}.v1.OrderPlaced"
    assert lines[1] == str(sorted([f"{package}.v1.OrderPlaced", f"{package}.v1.OrderPlaced.Line"]))
    assert lines[2:] == ["OrderPlaced", "True", "2"]


def test_load_message_types_refuses_what_it_cannot_use() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot import 'no_such_shop\.orders_pb2'"):
        load_message_types(["no_such_shop.orders_pb2"], entry_points=False)
    with pytest.raises(ConfigurationError, match="'json' defines no protobuf messages"):
        load_message_types(["json"], entry_points=False)
    with pytest.raises(ConfigurationError, match="not a module name"):
        load_message_types([""], entry_points=False)


def test_the_bus_own_types_are_known_and_a_package_that_imports_them_counts() -> None:
    assert "chimera.v1.QueryRequest" in message_types()
    classes = load_message_types(["messaging.generated"], entry_points=False)
    assert message_class_for("chimera.v1.QueryRequest") in classes


def test_the_library_proto_ships_beside_its_bindings() -> None:
    from messaging.proto import library_include_dir

    proto = library_include_dir() / "messaging" / "generated" / "messages.proto"
    assert "package chimera.v1;" in proto.read_text()


def test_chimera_bus_proto_gen_is_the_same_tool(project: tuple[Path, str]) -> None:
    root, package = project
    chimera_bus = str(Path(sys.executable).parent / "chimera-bus")
    result = subprocess.run(
        [chimera_bus, "proto", "gen", "--no-stubs", f"{package}/orders.proto"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {package}/orders_pb2.py"
    assert not (root / package / "orders_pb2.pyi").exists()
