"""The replay rule: a dead letter goes back only where it was recorded going."""

from __future__ import annotations

from messaging.dead_letters import Route, recorded_route, replay_headers
from messaging.headers import ERROR_TYPE, ORIGINAL_EXCHANGE, ORIGINAL_ROUTING_KEY

WORK = "orders"
FORGED = {ORIGINAL_EXCHANGE: "amq.direct", ORIGINAL_ROUTING_KEY: "admin.purge"}


def death(queue: str, exchange: str, key: str, reason: str = "rejected") -> dict[str, object]:
    return {"queue": queue, "exchange": exchange, "routing-keys": [key], "reason": reason}


def test_a_copy_the_bus_made_goes_where_its_headers_say() -> None:
    headers = {ORIGINAL_EXCHANGE: "chimera.events", ORIGINAL_ROUTING_KEY: "order.placed"}
    assert recorded_route(headers, WORK) == Route("chimera.events", "order.placed", "bus")
    assert replay_headers(headers, WORK) == headers


def test_a_broker_dead_letter_goes_where_x_death_says_whatever_the_sender_wrote() -> None:
    headers = {**FORGED, ERROR_TYPE: "forged", "x-death": [death(WORK, "ev", "order.placed")]}
    assert recorded_route(headers, WORK) == Route("ev", "order.placed", "broker")
    replayed = replay_headers(headers, WORK)
    assert replayed == {ORIGINAL_EXCHANGE: "ev", ORIGINAL_ROUTING_KEY: "order.placed"}


def test_a_broker_dead_letter_that_came_through_the_retry_path_keeps_the_bus_route() -> None:
    headers = {
        ORIGINAL_EXCHANGE: "ev",
        ORIGINAL_ROUTING_KEY: "order.placed",
        "x-death": [death(WORK, "", WORK), death(f"{WORK}.retry.1", "", f"{WORK}.retry.1")],
        "x-first-death-queue": f"{WORK}.retry.1",
    }
    assert recorded_route(headers, WORK) == Route("ev", "order.placed", "bus")
    assert replay_headers(headers, WORK) == {
        ORIGINAL_EXCHANGE: "ev",
        ORIGINAL_ROUTING_KEY: "order.placed",
    }


def test_the_entry_of_the_work_queue_wins_else_the_oldest() -> None:
    headers = {"x-death": [death("elsewhere", "b", "k2"), death("first", "a", "k1")]}
    assert recorded_route(headers, WORK) == Route("a", "k1", "broker")


def test_a_message_with_neither_is_refused() -> None:
    assert recorded_route({}, WORK) is None
    assert recorded_route({ORIGINAL_EXCHANGE: "ev"}, WORK) is None
    assert recorded_route({"x-death": "forged"}, WORK) is None
    assert recorded_route({"x-death": [{"queue": WORK}]}, WORK) is None
