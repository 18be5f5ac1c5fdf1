"""A stream's credit on the responder (messaging.aio.control.Conversation)."""

from __future__ import annotations

import threading
import time

from messaging.aio.control import IDLE_CREDIT_LIMIT, Conversation
from messaging.aio.handlers import RequestContext


def conversation(deadline: float | None, window: int = 2) -> Conversation:
    context = RequestContext("a", "k", {"correlation_id": "c"}, None, deadline)
    return Conversation("c", "amq.rabbitmq.reply-to.x", context, window)


def test_a_stream_without_a_deadline_waits_for_credit_a_bounded_time() -> None:
    assert conversation(None).credit_wait() == IDLE_CREDIT_LIMIT
    left = conversation(time.time() + 5).credit_wait()
    assert 4 < left <= 5


def test_the_window_is_the_first_credit_then_it_waits_and_gives_up() -> None:
    talk = conversation(None, window=2)
    assert talk.take_credit(0.01)
    assert talk.take_credit(0.01)
    started = time.monotonic()
    assert not talk.take_credit(0.1)  # no credit came: False after the wait, not never
    assert time.monotonic() - started >= 0.09
    talk.grant(1)
    assert talk.take_credit(0.01)


def test_a_cancel_wakes_a_reply_waiting_for_credit() -> None:
    talk = conversation(None, window=1)
    assert talk.take_credit(0.01)
    threading.Timer(0.05, talk.cancel).start()
    started = time.monotonic()
    assert not talk.take_credit(5)
    assert time.monotonic() - started < 2
    assert talk.cancelled
