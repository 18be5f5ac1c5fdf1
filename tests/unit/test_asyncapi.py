"""AsyncAPI 3.0 documents from agents, checked against the official JSON Schema."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from jsonschema import Draft7Validator
from pydantic import SecretStr

from messaging import BaseAgent, ConfigurationError, ConnectionPool, RequestContext
from messaging.aio.control import Conversation
from messaging.asyncapi import AgentShape, asyncapi_document, build_agent, import_target
from messaging.config import RabbitMQConfig, load_config
from messaging.demo.agents import AnalysisAgent, DataAgent, QueryAgent
from messaging.generated import messages_pb2 as pb
from messaging.headers import CREDIT, DEADLINE, STREAM

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


def make_kitchen_sink() -> Any:
    """A message class with every kind of field, built at run time (no protoc needed; its
    fields are unknown to mypy, hence ``Any``)."""
    package = f"sink{uuid.uuid4().hex[:8]}"
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package}/sink.proto",
        package=package,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto"],
    )
    color = file.enum_type.add(name="Color")
    color.value.add(name="COLOR_UNSET", number=0)
    color.value.add(name="RED", number=1)
    node = file.message_type.add(name="Node")
    node.oneof_decl.add(name="side")
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
        ("huge_count", FDP.TYPE_UINT64, optional, None),
        ("small_ratio", FDP.TYPE_FLOAT, optional, None),
        ("maybe_big", FDP.TYPE_MESSAGE, optional, ".google.protobuf.Int64Value"),
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
        number=20,
        type=FDP.TYPE_MESSAGE,
        label=repeated,
        type_name=f".{package}.Node.LabelsEntry",
    )
    for number, name in ((21, "left_name"), (22, "right_name")):
        node.field.add(
            name=name, number=number, type=FDP.TYPE_STRING, label=optional, oneof_index=0
        )
    pool = descriptor_pool.Default()
    from google.protobuf import timestamp_pb2, wrappers_pb2  # noqa: F401  (registered)

    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Node"))


def shape_of(*classes: type[Message]) -> AgentShape:
    """An agent that receives each of ``classes`` on a routing key of its own."""
    return AgentShape(
        name="sink",
        description="",
        exchange="chimera.events",
        queue="sink",
        bindings=("#",),
        receives={f"t.{cls.DESCRIPTOR.name}": cls for cls in classes},
    )


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
    assert schema["color"]["anyOf"][0]["enum"] == ["COLOR_UNSET", "RED"]
    assert schema["labels"]["additionalProperties"]["format"] == "int32"
    assert schema["children"]["items"] == {"$ref": f"#/components/schemas/{full_name}"}
    assert schema["hugeCount"] == schema["huge_count"]
    assert list(validator.iter_errors({"color": "BLUE"}))
    assert list(validator.iter_errors({"labels": {"x": "one"}}))


# -- proto3 JSON as protobuf's own writer produces it -------------------------------------

SAMPLES: dict[int, Any] = {
    FieldDescriptor.TYPE_DOUBLE: 31.5,
    FieldDescriptor.TYPE_FLOAT: 0.25,
    FieldDescriptor.TYPE_INT64: -(2**62),
    FieldDescriptor.TYPE_SINT64: -(2**40),
    FieldDescriptor.TYPE_SFIXED64: -3,
    FieldDescriptor.TYPE_UINT64: 2**64 - 1,
    FieldDescriptor.TYPE_FIXED64: 2**63,
    FieldDescriptor.TYPE_INT32: -(2**31),
    FieldDescriptor.TYPE_SINT32: -7,
    FieldDescriptor.TYPE_SFIXED32: 2**31 - 1,
    FieldDescriptor.TYPE_UINT32: 2**32 - 1,
    FieldDescriptor.TYPE_FIXED32: 9,
    FieldDescriptor.TYPE_BOOL: True,
    FieldDescriptor.TYPE_STRING: "ZEC \u00e9",
    FieldDescriptor.TYPE_BYTES: b"\x00\xfb\xff",  # "APv/": base64 with + and / in it
}


def populate(message: Message, depth: int = 0) -> Message:
    """Every field of ``message`` set to a value other than its default (nested messages
    two levels down; the first member of each oneof)."""
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[0] is not field:
            continue
        target = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key = _sample(entry.fields_by_name["key"])
            value_field = entry.fields_by_name["value"]
            if value_field.message_type is not None:
                _fill(target[key], depth)
            else:
                target[key] = _sample(value_field)
        elif field.message_type is not None:
            if depth < 2:
                for sub in [target.add(), target.add()] if field.is_repeated else [target]:
                    _fill(sub, depth)
        elif field.is_repeated:
            target.extend([_sample(field), _sample(field)])
        else:
            setattr(message, field.name, _sample(field))
    return message


def _fill(message: Message, depth: int) -> None:
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.FromJsonString("2026-12-04T15:30:00.123456Z")  # type: ignore[attr-defined]
    else:
        populate(message, depth + 1)


def _sample(field: Any) -> Any:  # a FieldDescriptor, upb's or the pure-Python one
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    return SAMPLES[field.type]


PROJECT_MESSAGES = [
    message_factory.GetMessageClass(descriptor)
    for descriptor in pb.DESCRIPTOR.message_types_by_name.values()
]
SINK = make_kitchen_sink()


@pytest.fixture(scope="module")
def every_message_document() -> dict[str, Any]:
    return asyncapi_document([shape_of(*PROJECT_MESSAGES, SINK)])


def test_the_writers_proto3_json_passes_under_either_field_naming(
    every_message_document: dict[str, Any],
) -> None:
    assert_valid_asyncapi(every_message_document)
    shape = every_message_document["components"]["schemas"]
    for cls in [*PROJECT_MESSAGES, SINK]:
        message = populate(cls())
        validator = payload_validator(every_message_document, cls.DESCRIPTOR.full_name)
        camel = json_format.MessageToDict(message)
        proto_named = json_format.MessageToDict(message, preserving_proto_field_name=True)
        assert camel, cls
        assert proto_named, cls
        for instance in (camel, proto_named):
            errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(instance)]
            assert not errors, (cls.DESCRIPTOR.full_name, errors)
            # And it is proto3 JSON indeed: protobuf's own parser reads it back.
            assert json_format.ParseDict(instance, cls()) == message
    # Not a vacuous pass: the two namings differ where the .proto names have underscores.
    metadata = json_format.MessageToDict(populate(pb.Metadata()))
    assert {"messageId", "correlationId", "sourceAgent"} <= set(metadata)
    assert "correlation_id" in shape["chimera.v1.Metadata"]["properties"]


def test_the_writers_special_forms_pass(every_message_document: dict[str, Any]) -> None:
    validator = payload_validator(every_message_document, SINK.DESCRIPTOR.full_name)
    node = SINK(ratio=math.nan, small_ratio=-math.inf, color=7, big=2**63 - 1)
    node.maybe_big.value = -(2**63)
    instance = json_format.MessageToDict(node)
    assert instance["ratio"] == "NaN"
    assert instance["smallRatio"] == "-Infinity"
    assert instance["color"] == 7  # a number this schema does not know: written as the number
    assert instance["maybeBig"] == str(-(2**63))
    assert not list(validator.iter_errors(instance))


def test_wrong_types_and_unknown_or_doubled_names_are_refused(
    every_message_document: dict[str, Any],
) -> None:
    def refuses(cls: type[Message], instance: dict[str, Any]) -> bool:
        validator = payload_validator(every_message_document, cls.DESCRIPTOR.full_name)
        return bool(list(validator.iter_errors(instance)))

    def parser_refuses(cls: type[Message], instance: dict[str, Any]) -> bool:
        try:
            json_format.ParseDict(instance, cls())
        except json_format.ParseError:
            return True
        return False

    analysis = pb.AnalysisResponse
    # Wrong types, under either name: protobuf's parser refuses them as well.
    wrong_types: list[dict[str, Any]] = [
        {"metadata": {"correlationId": 5}},
        {"metadata": {"correlation_id": ["c-1"]}},
        {"metadata": {"timestamp": "yesterday"}},
        {"metadata": {"timestamp": 1764862200}},
        {"lastPrice": "high"},
        {"last_price": [1.0]},
        {"error": {"details": {"why": 3}}},
        {"summary": {"text": "up"}},
        {"changePcnt": 1.5},  # a misspelt name
    ]
    for instance in wrong_types:
        assert refuses(analysis, instance), instance
        assert parser_refuses(analysis, instance), instance
    data = pb.DataRequest
    out_of_range: list[dict[str, Any]] = [{"days": 1.5}, {"days": 2**31}, {"days": "7 days"}]
    for instance in out_of_range:
        assert refuses(data, instance), instance
        assert parser_refuses(data, instance), instance
    # One field under both names: ambiguous (Python's parser keeps the last one).
    assert refuses(analysis, {"lastPrice": 1.0, "last_price": 2.0})
    assert not refuses(analysis, {"lastPrice": 1.0, "change_pct": 2.0})  # mixed is fine

    validator = payload_validator(every_message_document, SINK.DESCRIPTOR.full_name)
    sink_cases: list[dict[str, Any]] = [
        {"big": "12x"},
        {"big": 1.5},
        {"hugeCount": "-1"},
        {"blob": "not base64!"},
        {"color": "BLUE"},
        {"maybeBig": "ten"},
        {"leftName": "l", "right_name": "r"},  # two members of one oneof
    ]
    for instance in sink_cases:
        assert list(validator.iter_errors(instance)), instance
        assert parser_refuses(SINK, instance), instance
    assert not list(validator.iter_errors({"big": "-12", "hugeCount": 18446744073709551615}))


# -- servers --------------------------------------------------------------------------------


def servers_of(config: RabbitMQConfig) -> dict[str, Any] | None:
    document = asyncapi_document([shape_of(pb.QueryRequest)], server=config)
    assert_valid_asyncapi(document)
    assert "password" not in json.dumps(document)
    servers: dict[str, Any] | None = document.get("servers")
    return servers


def test_the_server_has_the_default_port_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RABBITMQ__PORT", "RABBITMQ__URL", "RABBITMQ__TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RABBITMQ__HOST", "broker.example")
    assert servers_of(load_config().rabbitmq) == {
        "rabbitmq": {
            "host": "broker.example:5672",
            "protocol": "amqp",
            "protocolVersion": "0-9-1",
            "pathname": "/",
            "description": "RabbitMQ (AMQP 0-9-1)",
        }
    }
    monkeypatch.setenv("RABBITMQ__TLS", "true")
    servers = servers_of(load_config().rabbitmq)
    assert servers is not None
    assert servers["rabbitmq"]["host"] == "broker.example:5671"
    assert servers["rabbitmq"]["protocol"] == "amqps"


def test_the_servers_are_the_nodes_of_the_url() -> None:
    one = servers_of(RabbitMQConfig(url=SecretStr("amqp://app:secret@rabbit.internal/prod")))
    assert one is not None
    assert one["rabbitmq"]["host"] == "rabbit.internal:5672"
    assert one["rabbitmq"]["pathname"] == "/prod"
    several = servers_of(
        RabbitMQConfig(
            url=SecretStr(
                "amqps://app:secret@r1.example:5700/prod,amqps://app:secret@r2.example/prod,"
                "amqps://app:secret@[::1]:5701/prod"
            ),
            port=1234,  # the URL wins over RABBITMQ__HOST/PORT
        )
    )
    assert several is not None
    assert [(name, server["host"], server["protocol"]) for name, server in several.items()] == [
        ("rabbitmq-1", "r1.example:5700", "amqps"),
        ("rabbitmq-2", "r2.example:5671", "amqps"),
        ("rabbitmq-3", "[::1]:5701", "amqps"),
    ]
    assert servers_of(RabbitMQConfig(url=SecretStr("memory://"))) is None  # no AMQP server to name


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


# -- typed handlers: replies, streams, errors, the conversation headers ----------------


def weather_agent(pool: ConnectionPool) -> BaseAgent:
    """An agent with a typed handler of each kind: a reply, a stream, no reply."""
    agent = BaseAgent(pool, "weather", exchange_name="weather.events", queue_name="weather")

    @agent.handler("weather.now")
    def now(request: pb.QueryRequest, ctx: RequestContext) -> pb.QueryResponse:
        return pb.QueryResponse(answer="sunny")

    @agent.handler("weather.hourly")
    def hourly(request: pb.QueryRequest) -> Iterator[pb.DataResponse]:
        yield pb.DataResponse(symbol="sun")

    @agent.handler("weather.note")
    def note(request: pb.DataRequest) -> None:
        pass

    return agent


@pytest.fixture(scope="module")
def weather() -> Iterator[BaseAgent]:
    agent = build_agent(weather_agent)
    yield agent
    agent.close()


@pytest.fixture(scope="module")
def weather_document(weather: BaseAgent) -> dict[str, Any]:
    return asyncapi_document([weather])


def reply_messages(document: dict[str, Any], operation: str) -> list[str]:
    reply = document["operations"][operation]["reply"]
    channel = reply["channel"]["$ref"].removeprefix("#/channels/")
    refs = [ref["$ref"] for ref in reply["messages"]]
    assert all(ref.startswith(f"#/channels/{channel}/messages/") for ref in refs)
    assert set(document["channels"][channel]["messages"]) == {r.rsplit("/", 1)[1] for r in refs}
    return [ref.rsplit("/", 1)[1] for ref in refs]


def component(document: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    """What a ``#/components/...`` reference points at."""
    found: Any = document
    for part in ref["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return cast(dict[str, Any], found)


def test_a_typed_agents_document_is_valid_asyncapi_3(weather_document: dict[str, Any]) -> None:
    assert_valid_asyncapi(weather_document)


def test_each_typed_handler_documents_what_it_answers(weather_document: dict[str, Any]) -> None:
    assert reply_messages(weather_document, "weather.receive.weather.now") == [
        "chimera.v1.QueryResponse",
        "chimera.error",
    ]
    assert reply_messages(weather_document, "weather.receive.weather.hourly") == [
        "chimera.v1.DataResponse.stream-item",
        "chimera.end",
        "chimera.error",
    ]
    assert reply_messages(weather_document, "weather.receive.weather.note") == ["chimera.error"]
    reply = weather_document["operations"]["weather.receive.weather.now"]["reply"]
    assert reply["address"]["location"] == "$message.header#/reply_to"
    channel = component(weather_document, reply["channel"])
    assert channel["address"] is None  # the broker names each caller's address
    assert channel["bindings"]["amqp"]["queue"]["name"] == "amq.rabbitmq.reply-to"
    messages = weather_document["components"]["messages"]
    item = messages["chimera.v1.DataResponse.stream-item"]
    assert item["payload"] == {"$ref": "#/components/schemas/chimera.v1.DataResponse"}
    assert item["bindings"]["amqp"]["messageType"] == "chimera.v1.DataResponse"
    assert messages["chimera.end"]["bindings"]["amqp"]["messageType"] == "chimera.end"
    assert "payload" not in messages["chimera.end"]
    assert messages["chimera.error"]["contentType"] == "application/json"


def test_requests_to_typed_handlers_carry_the_conversation_headers(
    weather_document: dict[str, Any],
) -> None:
    operation = weather_document["operations"]["weather.receive.weather.hourly"]
    (ref,) = operation["messages"]
    assert ref["$ref"].endswith("/chimera.v1.QueryRequest.request")
    request = weather_document["components"]["messages"]["chimera.v1.QueryRequest.request"]
    assert request["payload"] == {"$ref": "#/components/schemas/chimera.v1.QueryRequest"}
    headers = Draft7Validator(component(weather_document, request["headers"]))
    deadline_ms = int(time.time() * 1000) + 30_000
    assert not list(headers.iter_errors({DEADLINE: deadline_ms, STREAM: 16}))
    assert not list(headers.iter_errors({}))  # a plain request, no deadline
    for window in (0, 10_001, "16"):
        assert list(headers.iter_errors({STREAM: window})), window


def test_the_agents_own_replies_pass_the_documented_schemas(
    weather: BaseAgent, weather_document: dict[str, Any]
) -> None:
    """What the bus sends (built by its own code) against what the document says."""
    messages = weather_document["components"]["messages"]

    def validator(message: str, part: str) -> Draft7Validator:
        return Draft7Validator(component(weather_document, messages[message][part]))

    desk = weather.agent.control
    context = RequestContext("caller", "weather.hourly", {}, None)
    conversation = Conversation("c-1", "amq.rabbitmq.reply-to.g1h2", context, window=4)
    error = desk.error_of(conversation, ValueError("no weather for Atlantis"))
    end = desk.end_of(conversation)
    item = weather.agent.stream_item(conversation, pb.DataResponse(symbol="sun"))
    wire = {
        "chimera.error": error.properties.headers,
        "chimera.end": end.properties.headers,
        "chimera.v1.DataResponse.stream-item": item.properties.headers,
    }
    assert (error.properties.message_type, end.properties.message_type) == (
        "chimera.error",
        "chimera.end",
    )
    assert not list(validator("chimera.error", "payload").iter_errors(json.loads(error.body)))
    for message, headers in wire.items():
        assert not list(validator(message, "headers").iter_errors(headers)), message
        # Each reply passes its own schema and no other of the operation's: the
        # stream marker header tells an item from the end.
        for other in set(wire) - {message}:
            assert list(validator(other, "headers").iter_errors(headers)), (message, other)


def test_the_control_address_takes_credit_and_cancels(weather_document: dict[str, Any]) -> None:
    operation = weather_document["operations"]["weather.receive.control"]
    control = component(weather_document, operation["channel"])
    assert control["address"] is None
    assert set(control["messages"]) == {"chimera.credit", "chimera.cancel"}
    credit = weather_document["components"]["messages"]["chimera.credit"]
    headers = Draft7Validator(component(weather_document, credit["headers"]))
    assert not list(headers.iter_errors({CREDIT: 8}))
    assert list(headers.iter_errors({}))
    assert list(headers.iter_errors({CREDIT: 0}))


def test_an_agent_without_typed_handlers_has_no_conversation_parts(
    demo_document: dict[str, Any],
) -> None:
    assert not any("reply" in op for op in demo_document["operations"].values())
    assert not any(channel["address"] is None for channel in demo_document["channels"].values())
    assert "chimera.error" not in demo_document["components"]["messages"]
