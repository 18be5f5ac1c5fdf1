"""An agent written with typed handlers: every conversation pattern in one place.

    python examples/weather_agent.py [--exchange NAME]

- ``weather.now``: a typed handler; its return value is the reply.
- an unknown city raises ``RejectedMessageError``: the caller's ``request()``
  raises ``RemoteError`` at once (an error meant for the caller, not retried).
- ``weather.slow``: watches its deadline and its caller; it stops when the caller
  gives up (``ctx.cancelled``) and says how long it had (``ctx.time_left()``).
- ``weather.hourly``: a generator, so its replies stream; the caller reads them
  with ``stream()`` and the agent never runs more than the caller's window ahead.

Ask it with ``python examples/ask_weather.py``; stop it with Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from messaging import BaseAgent, ConnectionPool, RejectedMessageError, RequestContext
from messaging.config import load_config
from messaging.generated.messages_pb2 import QueryRequest, QueryResponse

FORECASTS = {"lisbon": 21, "oslo": -3, "porto": 18}


def build(pool: ConnectionPool, exchange: str) -> BaseAgent:
    agent = BaseAgent(pool, "weather", exchange_name=exchange, queue_name=f"{exchange}.weather")

    @agent.handler("weather.now")
    def now(request: QueryRequest) -> QueryResponse:
        city = request.query.lower()
        if city not in FORECASTS:
            raise RejectedMessageError(f"no forecast for {request.query!r}")
        return QueryResponse(answer=f"{FORECASTS[city]} °C in {request.query}")

    @agent.handler("weather.slow")
    def slow(request: QueryRequest, ctx: RequestContext) -> QueryResponse:
        had = ctx.time_left()
        started = time.monotonic()
        while time.monotonic() - started < 30:
            if ctx.cancelled:  # the caller gave up: its reply would go to nobody
                print(f"cancelled after {time.monotonic() - started:.1f}s", flush=True)
                return QueryResponse()
            time.sleep(0.05)
        return QueryResponse(answer=f"done, with {had:.1f}s to spare" if had else "done")

    @agent.handler("weather.hourly")
    def hourly(request: QueryRequest, ctx: RequestContext) -> Iterator[QueryResponse]:
        base = FORECASTS.get(request.query.lower(), 10)
        for hour in range(24):
            if ctx.cancelled:
                return
            yield QueryResponse(answer=f"{hour:02d}:00 {base + hour % 5} °C")

    return agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--exchange", default="chimera.events")
    args = parser.parse_args(argv)
    with ConnectionPool(load_config().rabbitmq) as pool:
        agent = build(pool, args.exchange)
        print("weather agent consuming", flush=True)
        agent.start_consuming()  # until Ctrl-C or SIGTERM
        agent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
