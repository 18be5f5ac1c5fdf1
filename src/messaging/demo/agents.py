"""The three demo agents: data, analysis, and the query agent that drives both.

A question travels like this, every message carrying the question's
correlation id::

    client --query.request--> QueryAgent --data.request--> DataAgent
                              QueryAgent <--data.response--
                              QueryAgent --analysis.request--> AnalysisAgent
                              QueryAgent <--analysis.response--
    client <--query.response (or the client's reply_to)-- QueryAgent

The query agent keeps what it needs between steps (the question, the symbol,
where to answer) as workflow context: ``publish_request(..., context=...)``
stores it, and it comes back as ``properties["context"]`` with the answer.
Expected failures (an unknown symbol, a question without one) are answered
with an :class:`ErrorInfo`; only a bug raises, which dead-letters the message.
"""

from __future__ import annotations

import logging
import re
import statistics
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from messaging import BaseAgent, ConnectionPool, create_metadata
from messaging.aio.publisher import DEFAULT_EXCHANGE
from messaging.demo import prices
from messaging.generated import messages_pb2 as pb

__all__ = [
    "DEFAULT_DAYS",
    "AnalysisAgent",
    "DataAgent",
    "DemoAgent",
    "QueryAgent",
    "demo_queue_name",
    "parse_symbol",
]

log = logging.getLogger("messaging.demo")

DEFAULT_DAYS = 30

_NAMES = {"bitcoin": "BTC", "ether": "ETH", "ethereum": "ETH", "zcash": "ZEC"}
_NOT_TICKERS = {"I", "A", "USD", "EUR", "OK"}


def demo_queue_name(exchange_name: str, agent_name: str) -> str:
    """The agent's queue: its own name on the default exchange, else prefixed by the exchange.

    A demo on its own exchange must not share queues with agents of the same
    name elsewhere on the broker, or each would take the other's messages.
    """
    if exchange_name == DEFAULT_EXCHANGE:
        return agent_name
    return f"{exchange_name}.{agent_name}"


def parse_symbol(query: str) -> str | None:
    """The ticker a question asks about: a known ticker or coin name, else any ALL-CAPS word.

    >>> parse_symbol("What is the ZEC price?"), parse_symbol("how is bitcoin doing")
    ('ZEC', 'BTC')
    >>> parse_symbol("What is the DOGE price?"), parse_symbol("what is the price?")
    ('DOGE', None)
    """
    words: list[str] = re.findall(r"[A-Za-z]+", query)
    known = set(prices.known_symbols())
    for word in words:
        if word.upper() in known:
            return word.upper()
        if word.lower() in _NAMES:
            return _NAMES[word.lower()]
    for word in words:
        if word.isupper() and 2 <= len(word) <= 6 and word not in _NOT_TICKERS:
            return word
    return None


def _error(code: str, message: str, agent: str, **details: str) -> pb.ErrorInfo:
    return pb.ErrorInfo(code=code, message=message, agent=agent, details=details)


class DemoAgent(BaseAgent):
    """What the three agents share: queue naming per exchange."""

    AGENT_NAME: str
    ROUTING_KEYS: tuple[str, ...]

    def __init__(
        self,
        connection_pool: ConnectionPool,
        exchange_name: str = DEFAULT_EXCHANGE,
        queue_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            connection_pool,
            self.AGENT_NAME,
            list(self.ROUTING_KEYS),
            exchange_name,
            queue_name or demo_queue_name(exchange_name, self.AGENT_NAME),
            **kwargs,
        )


class DataAgent(DemoAgent):
    """Answers a DataRequest with the symbol's daily prices from :mod:`messaging.demo.prices`."""

    AGENT_NAME = "data_agent"
    ROUTING_KEYS = ("data.request",)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"data.request": pb.DataRequest}

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        return {"data.response": pb.DataResponse}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.DataRequest)
        correlation_id: str = properties["correlation_id"]
        days = message.days or DEFAULT_DAYS
        response = pb.DataResponse(
            metadata=create_metadata(self.agent_name, correlation_id),
            symbol=message.symbol,
            currency=prices.CURRENCY,
        )
        points = prices.series(message.symbol, days)
        if points:
            for when, price in points:
                point = response.points.add(price=price)
                point.time.FromDatetime(when)
            log.info(
                "data: %d days of %s, last %.2f %s [correlation_id=%s]",
                len(points),
                message.symbol,
                points[-1][1],
                prices.CURRENCY,
                correlation_id,
            )
        else:
            known = ", ".join(prices.known_symbols())
            response.error.CopyFrom(
                _error(
                    "SYMBOL_NOT_FOUND",
                    f"no price data for {message.symbol!r} (known: {known})",
                    self.agent_name,
                    symbol=message.symbol,
                )
            )
            log.info(
                "data: no prices for %r, answering SYMBOL_NOT_FOUND [correlation_id=%s]",
                message.symbol,
                correlation_id,
            )
        self.publish_response(response, "data.response", correlation_id)


class AnalysisAgent(DemoAgent):
    """Describes a price series: last price, change, mean, range and a one-line summary."""

    AGENT_NAME = "analysis_agent"
    ROUTING_KEYS = ("analysis.request",)

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {"analysis.request": pb.AnalysisRequest}

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        return {"analysis.response": pb.AnalysisResponse}

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        assert isinstance(message, pb.AnalysisRequest)
        correlation_id: str = properties["correlation_id"]
        response = pb.AnalysisResponse(metadata=create_metadata(self.agent_name, correlation_id))
        values = [point.price for point in message.points]
        if not values:
            response.error.CopyFrom(
                _error(
                    "NO_DATA",
                    f"no prices to analyse for {message.symbol!r}",
                    self.agent_name,
                    symbol=message.symbol,
                )
            )
            log.info(
                "analysis: empty series, answering NO_DATA [correlation_id=%s]", correlation_id
            )
        else:
            first, last = values[0], values[-1]
            response.last_price = last
            response.change_pct = (last - first) / first * 100 if first else 0.0
            response.mean = statistics.fmean(values)
            response.min, response.max = min(values), max(values)
            trend = "up" if last > first else "down" if last < first else "flat"
            response.summary = (
                f"{trend} {abs(response.change_pct):.1f}% over {len(values)} days "
                f"(from {first:,.2f} to {last:,.2f}; mean {response.mean:,.2f}, "
                f"range {response.min:,.2f} to {response.max:,.2f})"
            )
            log.info(
                "analysis: %s %s [correlation_id=%s]",
                message.symbol,
                response.summary,
                correlation_id,
            )
        self.publish_response(response, "analysis.response", correlation_id)


class QueryAgent(DemoAgent):
    """Answers a question by asking the data agent, then the analysis agent.

    The workflow state rides in the context of each ``publish_request``; the
    question's correlation id is kept on every message of the workflow.
    """

    AGENT_NAME = "query_agent"
    ROUTING_KEYS = ("query.request", "data.response", "analysis.response")

    def get_routing_key_map(self) -> dict[str, type[ProtoMessage]]:
        return {
            "query.request": pb.QueryRequest,
            "data.response": pb.DataResponse,
            "analysis.response": pb.AnalysisResponse,
        }

    def get_publish_map(self) -> dict[str, type[ProtoMessage]]:
        return {
            "data.request": pb.DataRequest,
            "analysis.request": pb.AnalysisRequest,
            "query.response": pb.QueryResponse,
        }

    def route_message(
        self, message: ProtoMessage, routing_key: str, properties: dict[str, Any]
    ) -> None:
        correlation_id: str = properties["correlation_id"]
        if isinstance(message, pb.QueryRequest):
            self._on_query(message, correlation_id, properties)
            return
        context: dict[str, Any] | None = properties["context"]
        if context is None:
            # Not ours, or it came after its workflow expired: nobody is waiting.
            log.warning(
                "query: %s with no workflow waiting for it, dropped [correlation_id=%s]",
                routing_key,
                correlation_id,
            )
        elif isinstance(message, pb.DataResponse):
            self._on_data(message, correlation_id, context)
        elif isinstance(message, pb.AnalysisResponse):
            self._on_analysis(message, correlation_id, context)

    def _on_query(
        self, message: pb.QueryRequest, correlation_id: str, properties: dict[str, Any]
    ) -> None:
        symbol = parse_symbol(message.query)
        if symbol is None:
            log.info("query: no symbol in %r [correlation_id=%s]", message.query, correlation_id)
            error = _error(
                "NO_SYMBOL",
                "which symbol? Ask e.g. 'What is the ZEC price?'",
                self.agent_name,
            )
            # Answered while the question is in hand, so publish_response
            # itself honours the asker's reply_to.
            response = pb.QueryResponse(
                metadata=create_metadata(self.agent_name, correlation_id),
                query=message.query,
                answer=f"Sorry, {error.message}",
                error=error,
            )
            self.publish_response(response, "query.response", correlation_id)
            log.info("query: answered NO_SYMBOL [correlation_id=%s]", correlation_id)
            return
        context = {
            "query": message.query,
            "symbol": symbol,
            "reply_to": properties.get("reply_to") or None,
        }
        request = pb.DataRequest(
            metadata=create_metadata(self.agent_name, correlation_id),
            symbol=symbol,
            days=DEFAULT_DAYS,
        )
        log.info(
            "query: %r -> asking data_agent for %s [correlation_id=%s]",
            message.query,
            symbol,
            correlation_id,
        )
        self.publish_request(request, "data.request", context=context)

    def _on_data(
        self, message: pb.DataResponse, correlation_id: str, context: dict[str, Any]
    ) -> None:
        if message.HasField("error"):
            log.info(
                "query: data_agent answered %s [correlation_id=%s]",
                message.error.code,
                correlation_id,
            )
            self._answer(
                context, correlation_id, f"Sorry, {message.error.message}", error=message.error
            )
            return
        context["currency"] = message.currency
        request = pb.AnalysisRequest(
            metadata=create_metadata(self.agent_name, correlation_id),
            symbol=message.symbol,
            points=message.points,
            question=context["query"],
        )
        log.info(
            "query: got %d prices of %s -> asking analysis_agent [correlation_id=%s]",
            len(message.points),
            message.symbol,
            correlation_id,
        )
        self.publish_request(request, "analysis.request", context=context)

    def _on_analysis(
        self, message: pb.AnalysisResponse, correlation_id: str, context: dict[str, Any]
    ) -> None:
        if message.HasField("error"):
            self._answer(
                context, correlation_id, f"Sorry, {message.error.message}", error=message.error
            )
            return
        answer = (
            f"{context['symbol']} is at {message.last_price:,.2f} "
            f"{context.get('currency') or prices.CURRENCY}, {message.summary}."
        )
        self._answer(context, correlation_id, answer)

    def _answer(
        self,
        context: dict[str, Any],
        correlation_id: str,
        answer: str,
        error: pb.ErrorInfo | None = None,
    ) -> None:
        response = pb.QueryResponse(
            metadata=create_metadata(self.agent_name, correlation_id),
            query=context["query"],
            answer=answer,
            error=error,
        )
        # The message in hand is the analysis (or data) response, not the
        # question, so the asker's reply_to comes from the workflow context.
        self.publish_response(
            response, "query.response", correlation_id, reply_to=context.get("reply_to")
        )
        log.info("query: answered %r [correlation_id=%s]", answer, correlation_id)
