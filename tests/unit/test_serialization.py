from __future__ import annotations

import json
import pickle

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from messaging.errors import DecodeError, InvalidMessageError
from messaging.generated import messages_pb2 as pb
from messaging.metadata import create_metadata
from messaging.serialization import (
    CONTENT_TYPE,
    deserialize,
    from_json,
    message_class_for,
    serialize,
    to_dict,
    type_name,
)

ALL_TYPES: list[type[Message]] = [
    pb.Metadata,
    pb.ErrorInfo,
    pb.QueryRequest,
    pb.QueryResponse,
    pb.DataRequest,
    pb.PricePoint,
    pb.DataResponse,
    pb.AnalysisRequest,
    pb.AnalysisResponse,
    pb.MyRequest,
    pb.MyResponse,
]


def _points() -> list[pb.PricePoint]:
    return [
        pb.PricePoint(time=Timestamp(seconds=1_700_000_000 + 86_400 * i), price=30.0 + i)
        for i in range(3)
    ]


def _samples() -> list[Message]:
    metadata = create_metadata("tester", "corr-1")
    error = pb.ErrorInfo(code="E", message="boom", agent="data", details={"symbol": "ZEC"})
    return [
        metadata,
        error,
        pb.QueryRequest(metadata=metadata, query="What is the ZEC price?"),
        pb.QueryResponse(metadata=metadata, query="q", answer="42", error=error),
        pb.DataRequest(metadata=metadata, symbol="ZEC", days=30),
        _points()[0],
        pb.DataResponse(metadata=metadata, symbol="ZEC", points=_points(), currency="USD"),
        pb.AnalysisRequest(metadata=metadata, symbol="ZEC", points=_points(), question="trend?"),
        pb.AnalysisResponse(
            metadata=metadata,
            summary="up",
            last_price=32.0,
            change_pct=6.67,
            mean=31.0,
            min=30.0,
            max=32.0,
            error=error,
        ),
        pb.MyRequest(metadata=metadata, text="hi"),
        pb.MyResponse(metadata=metadata, text="hello"),
    ]


def test_samples_cover_every_generated_type() -> None:
    declared = set(pb.DESCRIPTOR.message_types_by_name)
    assert {type(m).__name__ for m in _samples()} == declared
    assert {cls.__name__ for cls in ALL_TYPES} == declared


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/x-protobuf"


@pytest.mark.parametrize("message", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    body = serialize(message)
    assert isinstance(body, bytes)
    decoded = deserialize(body, type(message))
    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize("message", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip_through_type_name(message: Message) -> None:
    cls = message_class_for(type_name(message))
    assert cls is type(message)
    assert deserialize(serialize(message), cls) == message


def test_empty_body_is_the_default_message() -> None:
    assert deserialize(b"", pb.QueryRequest) == pb.QueryRequest()


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",  # no valid tag
        b"\x12\x05ab",  # length 5, 2 bytes follow
        b"\x12\x02\xff\xfe",  # query: invalid UTF-8
        b"\x08",  # truncated varint
    ],
)
def test_garbage_raises_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError, match=r"not a valid chimera\.v1\.QueryRequest") as info:
        deserialize(body, pb.QueryRequest)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ({"query": "hi"}, "got dict; build one from messaging.generated.messages_pb2"),
        ("hi", "got str"),
        (None, "got NoneType"),
        (pb.QueryRequest, "got the class QueryRequest itself; instantiate it"),
    ],
)
def test_serialize_rejects_non_protobuf(value: object, complaint: str) -> None:
    with pytest.raises(InvalidMessageError, match=complaint):
        serialize(value)  # type: ignore[arg-type]


def test_type_name() -> None:
    assert type_name(pb.QueryRequest()) == "chimera.v1.QueryRequest"
    assert type_name(pb.QueryRequest) == "chimera.v1.QueryRequest"
    with pytest.raises(InvalidMessageError, match="got dict"):
        type_name({})  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_message_class_for_every_type(cls: type[Message]) -> None:
    assert message_class_for(f"chimera.v1.{cls.__name__}") is cls


def test_message_class_for_other_registered_types() -> None:
    assert message_class_for("google.protobuf.Timestamp") is Timestamp


@pytest.mark.parametrize("name", ["chimera.v1.Nope", "QueryRequest", ""])
def test_message_class_for_unknown_type(name: str) -> None:
    with pytest.raises(DecodeError, match=r"unknown message type.*chimera\.v1\.QueryRequest"):
        message_class_for(name)


@pytest.mark.parametrize("message", _samples(), ids=lambda m: type(m).__name__)
def test_json_round_trip(message: Message) -> None:
    text = json.dumps(to_dict(message))
    assert from_json(type(message), text) == message
    assert from_json(type_name(message), text) == message


def test_to_dict_uses_proto_field_names() -> None:
    data = to_dict(pb.AnalysisResponse(last_price=1.5, change_pct=2.0))
    assert data == {"last_price": 1.5, "change_pct": 2.0}


def test_from_json_accepts_camel_case() -> None:
    built = from_json(pb.AnalysisResponse, '{"lastPrice": 1.5}')
    assert built.last_price == 1.5


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"query": "hi", "nope": 1}', "nope"),
        ('{"query": 3}', "query"),
        ("{not json", "JSON"),
    ],
)
def test_from_json_rejects_bad_input(text: str, complaint: str) -> None:
    with pytest.raises(InvalidMessageError, match=complaint) as info:
        from_json("chimera.v1.QueryRequest", text)
    assert "metadata, query" in str(info.value)


def test_from_json_unknown_type_is_invalid_input() -> None:
    with pytest.raises(InvalidMessageError, match=r"unknown message type 'chimera\.v1\.Nope'"):
        from_json("chimera.v1.Nope", "{}")


def test_to_dict_rejects_non_protobuf() -> None:
    with pytest.raises(InvalidMessageError, match="got dict"):
        to_dict({})  # type: ignore[arg-type]


def test_generated_messages_pickle() -> None:
    message = pb.QueryRequest(query="hi")
    assert pickle.loads(pickle.dumps(message)) == message
