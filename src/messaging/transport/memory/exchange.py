"""Exchanges and bindings of the in-process broker: which queues a message goes to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from messaging.routing import topic_matches

EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


@dataclass(frozen=True)
class Binding:
    queue: str
    routing_key: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)

    def route(self, routing_key: str, headers: Mapping[str, Any] | None) -> list[str]:
        """The names of the queues bound for ``routing_key`` (each once, in binding order)."""
        matched: dict[str, None] = {}
        for binding in self.bindings:
            if self._matches(binding, routing_key, headers or {}):
                matched[binding.queue] = None
        return list(matched)

    def _matches(self, binding: Binding, key: str, headers: Mapping[str, Any]) -> bool:
        if self.type == "direct":
            return binding.routing_key == key
        if self.type == "topic":
            return topic_matches(binding.routing_key, key)
        if self.type == "fanout":
            return True
        wanted = {k: v for k, v in binding.arguments.items() if not k.startswith("x-")}
        mode = binding.arguments.get("x-match", "all")
        hits = [k in headers and (v is None or headers[k] == v) for k, v in wanted.items()]
        return any(hits) if mode in ("any", "any-with-x") else all(hits)


def predeclared() -> dict[str, Exchange]:
    return {
        "": Exchange("", "direct"),
        "amq.direct": Exchange("amq.direct", "direct"),
        "amq.topic": Exchange("amq.topic", "topic"),
        "amq.fanout": Exchange("amq.fanout", "fanout"),
        "amq.headers": Exchange("amq.headers", "headers"),
        "amq.match": Exchange("amq.match", "headers"),
    }
