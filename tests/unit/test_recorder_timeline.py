"""A conversation's records as a timeline (what `chimera-bus trace` prints), with no broker."""

from __future__ import annotations

from messaging.recorder import Record
from messaging.recorder.timeline import build

REPLY_KEY = "amq.rabbitmq.reply-to.g1h2AA=="


def conversation() -> list[Record]:
    return [
        Record("handle", 10.020, "query", message_id="q1", outcome="ok", duration_ms=5.0),
        Record("publish", 10.000, "client", message_id="q1", reply_to="amq.rabbitmq.reply-to"),
        Record("publish", 10.021, "query", message_id="d1", cause_id="q1"),
        Record(
            "handle",
            10.030,
            "data",
            message_id="d1",
            outcome="error",
            duration_ms=1.5,
            error_type="builtins.KeyError",
            error="'ZEC'",
        ),
        Record("publish", 10.040, "query", message_id="r1", exchange="", routing_key=REPLY_KEY),
    ]


def test_steps_are_in_time_order_with_senders_handlers_and_hop_times() -> None:
    timeline = build(conversation())
    kinds = [(s.record.kind, s.record.agent) for s in timeline.steps]
    assert kinds == [
        ("publish", "client"),
        ("handle", "query"),
        ("publish", "query"),
        ("handle", "data"),
        ("publish", "query"),
    ]
    asked, handled, onward, failed, _reply = timeline.steps
    assert asked.handlers == ("query",)
    assert handled.sender == "client"
    assert handled.hop_ms == 20.0
    assert handled.at_ms == 20.0
    assert onward.handlers == ("data",)
    assert failed.hop_ms == 9.0
    assert timeline.failures == (failed,)
    assert timeline.agents == ("client", "query", "data")


def test_a_reply_goes_back_to_the_agent_whose_request_the_replier_handled() -> None:
    reply = build(conversation()).steps[-1]
    assert reply.is_reply
    assert reply.handlers == ("client",)


def test_a_handled_message_whose_publish_was_not_recorded_has_no_sender() -> None:
    only = build([Record("handle", 1.0, "lonely", message_id="x", outcome="ok")]).steps[0]
    assert only.sender is None
    assert only.hop_ms is None


def test_no_records_no_steps() -> None:
    assert build([]).steps == ()
    assert build([]).duration_ms == 0.0
