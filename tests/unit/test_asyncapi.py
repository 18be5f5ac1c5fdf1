"""AsyncAPI 3.0 documents from agents, checked against the official JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from jsonschema import Draft7Validator

from messaging import BaseAgent, ConfigurationError, ConnectionPool
from messaging.asyncapi import AgentShape, asyncapi_document, build_agent, import_target
from messaging.config import RabbitMQConfig
from messaging.demo.agents import AnalysisAgent, DataAgent, QueryAgent
from messaging.generated import messages_pb2 as pb

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "asyncapi" / "asyncapi-3.0.0.schema.json").read_text()
)


def assert_valid_asyncapi(document: dict[str, Any]) -> None:
    errors = sorted(Draft7Validator(SCHEMA).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def payload_validator(document: dict[str, Any], full_name: str) -> Draft7Validator:
    """A validator for one message's payload, resolving $refs inside the document."""
    schema = {"$ref": f"#/components/schemas/{full_name}", "components": document["components"]}
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def demo_document() -> dict[str, Any]:
    config = RabbitMQConfig(host="broker.example", port=5671, vhost="prod")
    agents = [build_agent(cls, config) for cls in (DataAgent, AnalysisAgent, QueryAgent)]
    return asyncapi_document(agents, title="Demo", version="2.1.0", server=config)


def test_the_demo_agents_document_is_valid_asyncapi_3(demo_document: dict[str, Any]) -> None:
    assert demo_document["asyncapi"] == "3.0.0"
    assert_valid_asyncapi(demo_document)


def test_channels_and_operations_come_from_the_routing_and_publish_maps(
    demo_document: dict[str, Any],
) -> None:
    channels = demo_document["channels"]
    assert set(channels) == {
        "data.request",
        "data.response",
        "analysis.request",
        "analysis.response",
        "query.request",
        "query.response",
    }
    assert channels["data.request"]["bindings"]["amqp"]["exchange"]["name"] == "chimera.events"
    operations = demo_document["operations"]
    assert operations["data_agent.receive.data.request"]["action"] == "receive"
    assert operations["data_agent.send.data.response"]["action"] == "send"
    assert operations["query_agent.send.analysis.request"]["channel"] == {
        "$ref": "#/channels/analysis.request"
    }
    receive = operations["query_agent.receive.query.request"]
    assert receive["x-chimera-queue"] == "query_agent"
    assert receive["messages"] == [
        {"$ref": "#/channels/query.request/messages/chimera.v1.QueryRequest"}
    ]
    assert demo_document["servers"]["rabbitmq"]["host"] == "broker.example:5671"
    assert "password" not in json.dumps(demo_document)


def test_payload_schemas_accept_protobufs_json_form_and_refuse_other_fields(
    demo_document: dict[str, Any],
) -> None:
    response = pb.DataResponse(symbol="ZEC", currency="USD")
    response.metadata.correlation_id = "c-1"
    response.metadata.timestamp.GetCurrentTime()
    response.points.add(price=31.5).time.GetCurrentTime()
    response.error.details["why"] = "none"
    instance = json_format.MessageToDict(response, preserving_proto_field_name=True)
    validator = payload_validator(demo_document, "chimera.v1.DataResponse")
    assert not list(validator.iter_errors(instance))
    assert list(validator.iter_errors({**instance, "symbl": "typo"}))
    assert list(validator.iter_errors({**instance, "points": [{"price": "high"}]}))


def make_kitchen_sink() -> type[Message]:
    """A message with every kind of field, built at run time (no protoc needed)."""
    package = f"sink{uuid.uuid4().hex[:8]}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package}/sink.proto",
        package=package,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    color = file.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSET", number=0)
    color.value.add(name="RED", number=1)
    node = file.message_type.add(name="Node")
    FDP = descriptor_pb2.FieldDescriptorProto  # noqa: N806  (the proto name, shortened)
    optional, repeated = FDP.LABEL_OPTIONAL, FDP.LABEL_REPEATED
    fields = [
        ("count", FDP.TYPE_INT32, optional, None),
        ("big", FDP.TYPE_INT64, optional, None),
        ("ratio", FDP.TYPE_DOUBLE, optional, None),
        ("ok", FDP.TYPE_BOOL, optional, None),
        ("blob", FDP.TYPE_BYTES, optional, None),
        ("color", FDP.TYPE_ENUM, optional, f".{package}.Color"),
        ("at", FDP.TYPE_MESSAGE, optional, ".google.protobuf.Timestamp"),
        ("children", FDP.TYPE_MESSAGE, repeated, f".{package}.Node"),
        ("tags", FDP.TYPE_STRING, repeated, None),
    ]
    for number, (name, kind, label, type_name) in enumerate(fields, start=1):
        added = node.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            added.type_name = type_name
    entry = node.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=FDP.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=FDP.TYPE_INT32, label=optional)
    node.field.add(
        name="labels",
        number=10,
        type=FDP.TYPE_MESSAGE,
        label=repeated,
        type_name=f".{package}.Node.LabelsEntry",
    )
    pool = descriptor_pool.Default()
    from google.protobuf import timestamp_pb2  # noqa: F401  (the dependency, registered)

    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Node"))


def test_every_kind_of_field_maps_to_a_schema_its_json_form_passes() -> None:
    node_class = make_kitchen_sink()
    full_name = node_class.DESCRIPTOR.full_name
    shape = AgentShape(
        name="sink",
        description="",
        exchange="chimera.events",
        queue="sink",
        bindings=("nodes.#",),
        receives={"nodes.#": node_class},
    )
    document = asyncapi_document([shape])
    assert_valid_asyncapi(document)
    assert "nodes.hash" in document["channels"]
    assert document["channels"]["nodes.hash"]["address"] == "nodes.#"
    # A class made at run time: its fields are unknown to the type checker.
    node: Any = cast(Any, node_class)(
        count=3, big=2**40, ratio=0.5, ok=True, blob=b"\x00\xff", color=1
    )
    node.at.GetCurrentTime()
    node.tags.extend(["a", "b"])
    node.labels["x"] = 1
    node.children.add(count=1).children.add(ok=True)
    instance = json_format.MessageToDict(node, preserving_proto_field_name=True)
    validator = payload_validator(document, full_name)
    assert not list(validator.iter_errors(instance))
    schema = document["components"]["schemas"][full_name]["properties"]
    assert schema["color"]["enum"] == ["COLOR_UNSET", "RED"]
    assert schema["labels"] == {
        "type": "object",
        "additionalProperties": {"type": "integer", "format": "int32"},
    }
    assert schema["children"]["items"] == {"$ref": f"#/components/schemas/{full_name}"}
    assert list(validator.iter_errors({"color": "BLUE"}))
    assert list(validator.iter_errors({"labels": {"x": "one"}}))


class NeedsMore(BaseAgent):
    def __init__(self, pool: ConnectionPool, region: str) -> None:
        super().__init__(pool, f"needs_{region}", [])


def test_bad_targets_say_what_to_name() -> None:
    with pytest.raises(ConfigurationError, match=r"package\.module:AgentClass"):
        import_target("messaging.demo.agents")
    with pytest.raises(ConfigurationError, match="has no 'Nope'"):
        import_target("messaging.demo.agents:Nope")
    with pytest.raises(ConfigurationError, match="cannot import 'no_such_pkg'"):
        import_target("no_such_pkg:Agent")
    with pytest.raises(ConfigurationError, match="from a connection pool alone"):
        build_agent(NeedsMore)
    with pytest.raises(ConfigurationError, match="no agents"):
        asyncapi_document([])


def test_the_command_writes_a_valid_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "chimera-bus"),
            "asyncapi",
            "messaging.demo.agents:DataAgent",
            "messaging.demo.agents:QueryAgent",
            "--title",
            "Prices",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    document = json.loads(out.read_text())
    assert document["info"]["title"] == "Prices"
    assert_valid_asyncapi(document)
    bad = subprocess.run(
        [str(Path(sys.executable).parent / "chimera-bus"), "asyncapi", "nowhere:Agent"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "cannot import 'nowhere'" in bad.stderr
