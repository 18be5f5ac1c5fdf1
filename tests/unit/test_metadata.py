from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from messaging.errors import InvalidMessageError
from messaging.generated import messages_pb2 as pb
from messaging.metadata import MessageBuilder, correlation_id_of, create_metadata


def _is_uuid4(text: str) -> bool:
    return str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4


def test_create_metadata_fills_every_field() -> None:
    before = time.time()
    metadata = create_metadata("query_agent")
    after = time.time()
    assert isinstance(metadata, pb.Metadata)
    assert metadata.source_agent == "query_agent"
    assert _is_uuid4(metadata.message_id)
    assert _is_uuid4(metadata.correlation_id)
    assert metadata.message_id != metadata.correlation_id
    assert metadata.HasField("timestamp")
    assert before - 1 <= metadata.timestamp.ToNanoseconds() / 1e9 <= after + 1


def test_create_metadata_keeps_given_correlation_id() -> None:
    assert create_metadata("a", "corr-123").correlation_id == "corr-123"


def test_create_metadata_ids_are_unique() -> None:
    ids = {create_metadata("a").message_id for _ in range(100)}
    assert len(ids) == 100


def test_spec_snippet_runs_as_written() -> None:
    request = pb.QueryRequest()
    request.metadata.CopyFrom(create_metadata("my_agent"))
    request.query = "What is the ZEC price?"
    assert request.metadata.source_agent == "my_agent"


def test_builder_stamps_metadata() -> None:
    builder = MessageBuilder("data_agent")
    request = builder.build(pb.DataRequest, symbol="ZEC", days=30)
    assert request.symbol == "ZEC"
    assert request.days == 30
    assert request.metadata.source_agent == "data_agent"
    assert _is_uuid4(request.metadata.message_id)
    assert _is_uuid4(request.metadata.correlation_id)


def test_builder_uses_given_correlation_id() -> None:
    request = MessageBuilder("a").build(pb.QueryRequest, "corr-1", query="q")
    assert request.metadata.correlation_id == "corr-1"
    assert correlation_id_of(request) == "corr-1"


def test_builder_keeps_explicit_metadata() -> None:
    given = create_metadata("someone_else", "corr-9")
    message = MessageBuilder("a").build(pb.MyRequest, metadata=given, text="x")
    assert message.metadata == given


def test_builder_metadata() -> None:
    metadata = MessageBuilder("a").metadata("corr-2")
    assert (metadata.source_agent, metadata.correlation_id) == ("a", "corr-2")


def test_builder_for_a_class_without_metadata() -> None:
    point = MessageBuilder("a").build(pb.PricePoint, price=1.0, time=Timestamp(seconds=5))
    assert point.price == 1.0
    with pytest.raises(InvalidMessageError, match="no metadata field"):
        MessageBuilder("a").build(pb.PricePoint, "corr-1", price=1.0)


@pytest.mark.parametrize(
    "fields",
    [{"nope": 1}, {"days": "thirty"}],
)
def test_builder_rejects_bad_fields(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidMessageError, match=r"chimera\.v1\.DataRequest.*metadata, symbol"):
        MessageBuilder("a").build(pb.DataRequest, **fields)


def test_reply_to_carries_the_correlation_id() -> None:
    request = MessageBuilder("query_agent").build(pb.DataRequest, symbol="ZEC")
    reply = MessageBuilder("data_agent").reply_to(request, pb.DataResponse, symbol="ZEC")
    assert isinstance(reply, pb.DataResponse)
    assert reply.metadata.correlation_id == request.metadata.correlation_id
    assert reply.metadata.message_id != request.metadata.message_id
    assert reply.metadata.source_agent == "data_agent"
    assert reply.symbol == "ZEC"


def test_reply_to_a_request_without_correlation_starts_one() -> None:
    reply = MessageBuilder("b").reply_to(pb.MyRequest(text="hi"), pb.MyResponse)
    assert _is_uuid4(reply.metadata.correlation_id)


def test_correlation_id_of() -> None:
    assert correlation_id_of(pb.MyRequest()) is None
    assert correlation_id_of(pb.PricePoint()) is None
    assert correlation_id_of(pb.MyRequest(metadata=pb.Metadata(correlation_id="c"))) == "c"


def test_create_metadata_alias_on_builder() -> None:
    assert MessageBuilder.create_metadata is create_metadata
    assert MessageBuilder("x").create_metadata("y").source_agent == "y"
